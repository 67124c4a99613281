"""Train a method, then evaluate it on every target: ``python -m reidgen.run [overrides]``.

Hydra composes ``method``, ``data``, ``hardware``, ``logger`` (and an ``experiment`` overlay) from
``conf/`` (the package ``reidgen.conf``); every key can be overridden on the command line, and a
key that does not exist fails (Hydra's struct mode). ``-m`` runs a sweep, each job in its own
folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from reidgen import console, resolvers
from reidgen.checkpointing import AtomicCheckpointIO, LastCheckpoint
from reidgen.data.datamodule import ReIDDataModule
from reidgen.logger_results import log_results
from reidgen.preemption import exit_when_stopped
from reidgen.resume import checkpoint_to_resume, set_aside_csv_logs
from reidgen.run_support import (
    build_loggers,
    build_method,
    close_loggers,
    describe_sources,
    finish_run,
    start_run,
)
from reidgen.viz.run_pictures import RunPictures


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fits ``cfg.method`` on ``cfg.data``, tests the final weights, draws the end-of-run
    pictures and hands them with the results to every logger; returns the metrics record.

    A run folder that holds an unfinished run continues it (:mod:`reidgen.resume`); SIGTERM and
    SIGUSR1 stop training with a resumable ``last.ckpt`` and exit 128 + the signal's number
    (:mod:`reidgen.preemption`)."""
    # Before anything is written to the folder: a finished run there is refused untouched.
    resume_from = checkpoint_to_resume(cfg.paths.output_dir, cfg.ckpt_path)
    run_dir = start_run(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    pictures: RunPictures = instantiate(cfg.pictures)

    datamodule: ReIDDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    method = build_method(
        cfg.method,
        datamodule.num_classes,
        evaluation=cfg.eval,
        test_transform=cfg.data.test_transform,
        num_unlabelled_images=datamodule.num_unlabelled_images,
    )

    checkpoints = run_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best-{epoch}",
        monitor=cfg.checkpoint.monitor,
        mode="max",
        save_top_k=cfg.checkpoint.save_top_k,
    )
    # After the best one, so last.ckpt holds its state after the epoch.
    last = LastCheckpoint(checkpoints, every_n_steps=cfg.checkpoint.every_n_steps)
    callbacks = [best, last]
    loggers = build_loggers(cfg)
    set_aside_csv_logs(loggers)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )
    failed = True
    try:
        with exit_when_stopped(last.describe_stop):
            trainer.fit(method, datamodule=datamodule, ckpt_path=resume_from)
        trainer.test(method, datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:
            drawn = pictures.write(
                method,
                datamodule.eval_sets,
                run_dir,
                datamodule.eval_batch_size,
                datamodule.num_workers,
            )
            # Before close_loggers: W&B takes nothing after its run is finished.
            log_results(loggers, method.eval_results["test"], drawn, trainer.global_step)
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
    if method.variant is not None:
        record["method_variant"] = method.variant
    if best.best_model_score is not None:
        # The metrics are the last epoch's; the best epoch was chosen on the test targets
        # themselves (as some official codes report, e.g. DomainMix's model_best), so it is
        # recorded apart and labelled.
        record["best_on_targets"] = {
            "checkpoint": Path(best.best_model_path).name,
            cfg.checkpoint.monitor: float(best.best_model_score),
            "note": "epoch chosen by the test targets' own score: not a held-out selection",
        }
    title = f"reidgen {method.variant or record['method_name']} on {record['data_name']}"
    return finish_run(trainer, run_dir, results, record, title)


resolvers.register()


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    console.quiet_third_party()
    train(cfg)


if __name__ == "__main__":
    main()
