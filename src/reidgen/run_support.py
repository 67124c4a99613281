"""What the entry points share: building a method (fresh or from a checkpoint), the data of a
checkpoint's evaluation, run folders, loggers and the end-of-run record.

``reidgen.run`` (train), ``reidgen.evaluate`` (a checkpoint), the pictures (``reidgen.viz``) and the
report use this module; none of them imports another entry point.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, WandbLogger

from reidgen.data.datamodule import ReIDDataModule
from reidgen.methods.base import ReIDMethod
from reidgen.results import format_table, write_metrics

log = logging.getLogger(__name__)

_REQUIRED_HYPERPARAMETERS = ("config", "num_classes")


def _container(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def build_method(
    config: Mapping[str, Any] | DictConfig,
    num_classes: int,
    evaluation: Mapping[str, Any] | DictConfig | None = None,
    test_transform: Mapping[str, Any] | DictConfig | None = None,
) -> ReIDMethod:
    """The one place a method is built: from its config (``conf/method/*``, with ``_target_``),
    with the test-time options and the test transform config it is evaluated with.

    Hydra instantiates the method's own parameters (backbones, optimizer factories, ...); the
    three plain configs are passed as they are and stored in the checkpoint's hyper-parameters.
    """
    config = _container(config)
    factory = instantiate(config, num_classes=num_classes, _partial_=True)
    method = factory(
        evaluation=_container(evaluation),
        test_transform=_container(test_transform),
        config=config,
    )
    if not isinstance(method, ReIDMethod):
        raise TypeError(f"{config.get('_target_')} is not a ReIDMethod")
    return method


def load_method(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | DictConfig | None = None,
) -> ReIDMethod:
    """Rebuilds a method from a reidgen checkpoint alone: its config and weights, no data.

    :param overrides: test-time changes to the stored method config, e.g.
        ``{"test_distance": "global_local"}``; only keys the config already has (typos fail).
    :param evaluation: test-time options replacing the stored ones (None keeps them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    hyper = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hyper, Mapping) or any(
        hyper.get(key) is None for key in _REQUIRED_HYPERPARAMETERS
    ):
        raise ValueError(
            f"{path} is not a reidgen checkpoint (its hyper-parameters lack "
            f"{' and '.join(_REQUIRED_HYPERPARAMETERS)})"
        )
    config = dict(hyper["config"])
    if overrides:
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            raise KeyError(
                f"method override(s) {unknown} are not keys of the checkpoint's method config; "
                f"it has: {', '.join(sorted(k for k in config if not k.startswith('_')))}"
            )
        config = {**config, **overrides}
    method = build_method(
        config,
        hyper["num_classes"],
        evaluation=hyper.get("evaluation") if evaluation is None else evaluation,
        test_transform=hyper.get("test_transform"),
    )
    method.load_state_dict(checkpoint["state_dict"])
    return method


def checkpoint_datamodule(data: DictConfig, method: ReIDMethod) -> ReIDDataModule:
    """The targets of ``data`` (no training sources), read with the test transform stored in
    ``method``'s checkpoint (size, normalisation), unless ``data.test_transform`` is overridden
    on the command line."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    overridden = any(o.startswith("data.test_transform") for o in overrides)
    stored = method.hparams.get("test_transform")
    if stored is None or overridden:
        return instantiate(data, sources=[])
    return instantiate(data, sources=[], test_transform=instantiate(stored))


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
