"""Train a method, then evaluate it on every target: ``python -m reidgen.run [overrides]``.

Hydra composes ``method``, ``data``, ``hardware``, ``logger`` (and an ``experiment`` overlay) from
``conf/`` (the package ``reidgen.conf``); every key can be overridden on the command line, and a
key that does not exist fails (Hydra's struct mode). ``-m`` runs a sweep, each job in its own
folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger

from reidgen import resolvers
from reidgen.data.datamodule import ReIDDataModule
from reidgen.methods.base import ReIDMethod
from reidgen.results import format_table, write_metrics

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig) -> list[Logger]:
    return [instantiate(node) for _, node in sorted((cfg.get("logger") or {}).items())]


def close_loggers(loggers: list[Logger], failed: bool) -> None:
    """Always closes W&B, also when training raised, so its run folder is complete."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def describe_sources(datamodule: ReIDDataModule) -> dict[str, Any]:
    return {
        "sources": [source.name for source in datamodule.sources],
        "targets": datamodule.target_names,
        "dataset_variants": {
            source.name: repr(source) for source in [*datamodule.sources, *datamodule.targets]
        },
    }


def start_run(cfg: DictConfig) -> Path:
    """Creates the run folder and saves every value the run uses, resolved, as config.yaml."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run_dir


def finish_run(
    trainer: pl.Trainer,
    run_dir: Path,
    results: dict[str, dict[str, float]],
    record: dict[str, Any],
    title: str,
) -> dict[str, Any]:
    """On the main process: writes metrics.json and prints the results table."""
    if not trainer.is_global_zero:
        return record
    record = write_metrics(run_dir / "metrics.json", results, **record)
    print(format_table(results, title))
    print(f"\nrun folder: {run_dir}")
    return record


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits ``cfg.method`` on ``cfg.data``, tests the final weights, returns the metrics record."""
    run_dir = start_run(cfg)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule: ReIDDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    method: ReIDMethod = instantiate(cfg.method, num_classes=datamodule.num_classes)
    method.method_config = OmegaConf.to_container(cfg.method, resolve=True)
    method.test_transform_config = OmegaConf.to_container(cfg.data.test_transform, resolve=True)
    method.evaluator = instantiate(cfg.eval)

    checkpoints = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0),
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best-{epoch}",
            monitor=cfg.checkpoint.monitor,
            mode="max",
            save_top_k=cfg.checkpoint.save_top_k,
        ),
    ]
    loggers = build_loggers(cfg)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    failed = True
    try:
        trainer.fit(method, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        trainer.test(method, datamodule=datamodule, verbose=False)
        failed = False
    finally:
        close_loggers(loggers, failed)
    results = method.eval_results["test"]
    record = {
        "method": cfg.method._target_,
        "method_name": HydraConfig.get().runtime.choices.get("method"),
        "data_name": HydraConfig.get().runtime.choices.get("data"),
        **describe_sources(datamodule),
        "seed": cfg.seed,
        "world_size": trainer.world_size,
        "epochs": trainer.current_epoch,
        "num_classes": datamodule.num_classes,
        "evaluation": method.evaluator.settings(),
        "run_dir": str(run_dir),
    }
    title = f"reidgen {record['method_name']} on {record['data_name']}"
    return finish_run(trainer, run_dir, results, record, title)


resolvers.register()


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
