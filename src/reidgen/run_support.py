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
    num_unlabelled_images: int = 0,
) -> ReIDMethod:
    """The one place a method is built: from its config (``conf/method/*``, with ``_target_``),
    with the test-time options, the test transform config it is evaluated with and the number of
    images of the unlabelled training sources (``ReIDDataModule.num_unlabelled_images``).

    Hydra instantiates the method's own parameters (backbones, optimizer factories, ...); the
    three plain configs are passed as they are and stored in the checkpoint's hyper-parameters.
    """
    config = _container(config)
    factory = instantiate(config, num_classes=num_classes, _partial_=True)
    method = factory(
        evaluation=_container(evaluation),
        test_transform=_container(test_transform),
        config=config,
        num_unlabelled_images=num_unlabelled_images,
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

    :param path: a checkpoint written by ``reidgen.run`` (Lightning's, with the method's
        ``hyper_parameters``: ``config``, ``num_classes``, ``evaluation``, ``test_transform``).
    :param map_location: where the weights are loaded.
    :param overrides: test-time changes to the stored method config, e.g.
        ``{"test_distance": "global_local"}``; only keys the config already has (typos fail).
    :param evaluation: test-time options replacing the stored ones (None keeps them).

    :returns: the method, with the checkpoint's weights.

    :raises FileNotFoundError: if ``path`` is not a file.
    :raises ValueError: naming ``path``, if it is not a reidgen checkpoint (torch cannot read it,
        or it lacks the method's hyper-parameters or weights), if its stored method cannot be
        rebuilt, or if its weights do not fit the rebuilt method (missing or unexpected entries,
        other shapes, e.g. another class count than the stored ``num_classes``).
    :raises KeyError: for ``overrides`` that are not keys of the stored method config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        # torch.load fails on foreign files with whatever the unpickler or the zip reader hits
        # first (UnpicklingError, EOFError, ValueError "invalid literal for int()", BadZipFile,
        # RuntimeError, ...): none of them says what is wrong with the file.
        raise ValueError(
            f"{path} is not a reidgen checkpoint: torch.load cannot read it "
            f"({type(error).__name__}: {error})"
        ) from error
    hyper = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hyper, Mapping) or any(
        hyper.get(key) is None for key in _REQUIRED_HYPERPARAMETERS
    ):
        raise ValueError(
            f"{path} is not a reidgen checkpoint (its hyper-parameters lack "
            f"{' and '.join(_REQUIRED_HYPERPARAMETERS)})"
        )
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} is not a reidgen checkpoint (it has no state_dict of weights)")
    if not isinstance(hyper["config"], Mapping) or not isinstance(hyper["num_classes"], int):
        raise ValueError(
            f"{path} is not a reidgen checkpoint (its hyper-parameters hold config="
            f"{type(hyper['config']).__name__}, num_classes={hyper['num_classes']!r}; expected a "
            f"method config with _target_ and an integer)"
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
    target = config.get("_target_")
    try:
        method = build_method(
            config,
            hyper["num_classes"],
            evaluation=hyper.get("evaluation") if evaluation is None else evaluation,
            test_transform=hyper.get("test_transform"),
            num_unlabelled_images=int(hyper.get("num_unlabelled_images") or 0),
        )
    except Exception as error:
        raise ValueError(
            f"checkpoint {path}: cannot rebuild its method {target!r}"
            f"{' with the overrides ' + str(dict(overrides)) if overrides else ''} "
            f"({type(error).__name__}: {error})"
        ) from error
    differences = _state_differences(state, method.state_dict())
    if differences:
        raise ValueError(
            f"checkpoint {path}: its weights do not fit the method {target!r} rebuilt from its "
            f"config with num_classes={hyper['num_classes']} (written by another method config "
            f"or version?): {differences}"
        )
    try:
        method.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {path}: its weights do not load into the method {target!r}: {error}"
        ) from error
    return method


def _state_differences(stored: Mapping[str, Any], expected: Mapping[str, Any]) -> str:
    """The first missing and unexpected entries and shape mismatches of a state dict, in words;
    empty when ``stored`` fits ``expected``."""
    missing = [key for key in expected if key not in stored]
    unexpected = [key for key in stored if key not in expected]
    shapes = [
        f"{key} {tuple(stored[key].shape)} in the checkpoint, {tuple(value.shape)} in the method"
        for key, value in expected.items()
        if key in stored
        and isinstance(value, torch.Tensor)
        and isinstance(stored[key], torch.Tensor)
        and stored[key].shape != value.shape
    ]
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("other shapes", shapes),
    ):
        if items:
            more = f"; ... ({len(items)} in all)" if len(items) > 3 else ""
            parts.append(f"{label}: {'; '.join(items[:3])}{more}")
    return " | ".join(parts)


def inference_device(name: str) -> torch.device:
    """The device a checkpoint CLI runs on: ``"auto"`` is CUDA when there is a GPU, else the CPU;
    anything else is a ``torch.device`` name (``"cpu"``, ``"cuda:1"``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def checkpoint_datamodule(data: DictConfig, method: ReIDMethod) -> ReIDDataModule:
    """The targets of ``data`` (no training sources), read with the test transform stored in
    ``method``'s checkpoint (size, normalisation), unless ``data.test_transform`` is overridden
    on the command line."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    overridden = any(o.startswith("data.test_transform") for o in overrides)
    stored = method.hparams.get("test_transform")
    # Only the targets are read: no training source, labelled or not (a data config with
    # unlabelled sources, e.g. synth_unsupervised, names them among its sources).
    if stored is None or overridden:
        return instantiate(data, sources=[], unlabelled=[])
    return instantiate(data, sources=[], unlabelled=[], test_transform=instantiate(stored))


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
