"""Evaluate a checkpoint on any targets, without training data:
``python -m reidgen.evaluate ckpt=outputs/runs/.../checkpoints/last.ckpt data=synth_cross``.

The method is rebuilt from the checkpoint alone (its config, ``num_classes`` and the test transform
it was trained with are stored in it); only the targets of ``data`` are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from reidgen import console, resolvers
from reidgen.run_support import (
    checkpoint_datamodule,
    describe_sources,
    finish_run,
    load_method,
    start_run,
)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    # The checkpoint is read before the run folder gets its config.yaml: a file that is not a
    # reidgen checkpoint fails here (ValueError naming it), leaving no record of a run.
    method = load_method(
        cfg.ckpt, overrides=OmegaConf.to_container(cfg.method_overrides), evaluation=cfg.eval
    )
    run_dir = start_run(cfg)
    datamodule = checkpoint_datamodule(cfg.data, method)
    datamodule.setup("test")
    # An evaluation saves no checkpoint; with checkpointing on, Lightning would add a default
    # checkpoint callback and print a tip for its hosted model registry.
    trainer: pl.Trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False
    )
    trainer.test(method, datamodule=datamodule, verbose=False)
    results = method.eval_results["test"]
    record: dict[str, Any] = {
        "method": method.hparams.config["_target_"],
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "data_name": HydraConfig.get().runtime.choices.get("data"),
        **describe_sources(datamodule),
        "seed": cfg.seed,
        "world_size": trainer.world_size,
        "evaluation": method.evaluator.settings(),
        "run_dir": str(run_dir),
    }
    return finish_run(trainer, run_dir, results, record, f"reidgen evaluation of {cfg.ckpt}")


resolvers.register()


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    console.quiet_third_party()
    evaluate(cfg)


if __name__ == "__main__":
    main()
