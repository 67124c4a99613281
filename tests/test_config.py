"""Every option of every config group composes, and what can be built without data builds."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from reidgen import resolvers
from reidgen.data.datamodule import ReIDDataModule
from reidgen.methods.base import ReIDMethod

resolvers.register()
CONF = resources.files("reidgen") / "conf"


def options(group: str) -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in (CONF / group).iterdir() if p.name.endswith(".yaml")
    )


def composed(overrides: list[str], tmp_path: Path, config: str = "config") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.paths.data_dir = str(tmp_path / "data")
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_groups_have_options() -> None:
    for group in ("method", "data", "hardware", "logger", "experiment", "paths", "trainer"):
        assert options(group), group
    assert {"cpu", "gpu", "ddp", "ddp_cpu", "slurm", "auto"} <= set(options("hardware"))
    assert {"csv", "tensorboard", "wandb"} <= set(options("logger"))
    assert {"synth", "synth_cross"} <= set(options("data"))


@pytest.mark.parametrize("method", options("method"))
def test_method_configs_build(method: str, tmp_path: Path) -> None:
    cfg = composed([f"method={method}"], tmp_path)
    built = instantiate(cfg.method, num_classes=7)
    assert isinstance(built, ReIDMethod) and built.num_classes == 7


@pytest.mark.parametrize("data", options("data"))
def test_data_configs_compose(data: str, tmp_path: Path) -> None:
    cfg = composed([f"data={data}"], tmp_path)
    resolved = OmegaConf.to_container(cfg.data, resolve=True)
    assert resolved["sources"] and resolved["targets"]
    # Build the module (sources index lazily, so nothing is generated here).
    module = instantiate(cfg.data)
    assert isinstance(module, ReIDDataModule) and module.target_names


@pytest.mark.parametrize("hardware", options("hardware"))
def test_hardware_configs_compose(hardware: str, tmp_path: Path) -> None:
    cfg = composed([f"hardware={hardware}"], tmp_path)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer["use_distributed_sampler"] is False
    if hardware in ("cpu", "ddp_cpu", "auto"):
        built = instantiate(cfg.trainer, logger=False)
        assert built.max_epochs == cfg.trainer.max_epochs
    if hardware == "slurm":
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_configs_build(logger: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = composed([f"logger={logger}"], tmp_path)
    for node in (cfg.get("logger") or {}).values():
        assert instantiate(node) is not None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_overlays_compose(experiment: str, tmp_path: Path) -> None:
    cfg = composed([f"experiment={experiment}"], tmp_path)
    OmegaConf.to_container(cfg.method, resolve=True)
    OmegaConf.to_container(cfg.data, resolve=True)


def test_evaluate_config_needs_a_checkpoint(tmp_path: Path) -> None:
    cfg = composed(["data=synth"], tmp_path, config="evaluate")
    assert OmegaConf.is_missing(cfg, "ckpt")
