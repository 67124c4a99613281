"""Every option of every config group composes, and what can be built without data builds."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from reidgen import resolvers
from reidgen.data.datamodule import ReIDDataModule
from reidgen.methods.base import ReIDMethod
from reidgen.run_support import build_method

resolvers.register()
CONF = resources.files("reidgen.conf")


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
    built = build_method(
        cfg.method,
        7,
        evaluation=cfg.eval,
        test_transform=cfg.data.test_transform,
        num_unlabelled_images=20,  # GCL sizes its memory from it
    )
    assert isinstance(built, ReIDMethod) and built.num_classes == 7
    assert built.hparams.config == OmegaConf.to_container(cfg.method, resolve=True)


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
    cfg = composed([f"hardware={hardware}", "trainer.precision=32-true"], tmp_path)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer["use_distributed_sampler"] is False
    assert trainer["precision"] == "32-true"
    if hardware in ("cpu", "ddp_cpu", "auto"):
        built = instantiate(cfg.trainer, logger=False)
        assert built.max_epochs == cfg.trainer.max_epochs
    if hardware == "slurm":
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")


def test_slurm_jobs_ask_for_what_the_trainer_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    knobs = [
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=lab",
        "hydra.launcher.qos=high",
    ]
    cfg = composed(
        ["hardware=slurm", "trainer.num_nodes=3", "trainer.devices=2", "trainer.precision=32-true"]
        + [*knobs, "hydra.launcher.timeout_min=60", "+hydra.launcher.additional_parameters.x=1"],
        tmp_path,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (3, 2, 2)
    assert (launcher["partition"], launcher["account"], launcher["qos"]) == ("gpu", "lab", "high")
    assert launcher["timeout_min"] == 60 and launcher["additional_parameters"] == {"x": 1}
    unresolved = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert unresolved["submitit_folder"].startswith("${hydra.sweep.dir}/")
    # What SLURM gives each task from those settings, checked by Lightning's SLURM environment.
    monkeypatch.setenv("SLURM_JOB_NAME", "reidgen")
    monkeypatch.setenv("SLURM_NNODES", str(launcher["nodes"]))
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", str(launcher["tasks_per_node"]))
    SLURMEnvironment().validate_settings(cfg.trainer.devices, cfg.trainer.num_nodes)


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


def paper_rows() -> list[tuple[str, dict]]:
    """Every row of every table file, with its table's profile under ``"profile"``."""
    import yaml

    root = Path(__file__).resolve().parents[2] / "experiments"
    rows = []
    for path in sorted(root.glob("*.yaml")):
        table = yaml.safe_load(path.read_text())
        for row in table["rows"]:
            rows.append((f"{path.stem}:{row['name']}", {**row, "profile": table.get("profile")}))
    return rows


@pytest.mark.parametrize("row", [row for _, row in paper_rows()], ids=[i for i, _ in paper_rows()])
def test_paper_rows_compose_and_build(row: dict, tmp_path: Path) -> None:
    cfg = composed([*row["overrides"], "method.backbone.pretrained=null"], tmp_path)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    # Every reported target is tested by the row's run.
    assert set(row.get("reported", {})) <= set(data["targets"])
    assert all(
        set(v) <= {"rank1", "mAP", "rank5", "rank10", "mINP"}
        for v in row.get("reported", {}).values()
    )
    method = instantiate(cfg.method, num_classes=11, num_unlabelled_images=20)
    if row["profile"] not in (None, "paper"):
        return  # SynthPerson rows: the method defaults, checked by their own tests
    if "qaconv" in cfg.method._target_:
        # 384x128 at stride 16: 24 x 8 locations, as the official recipe.
        assert method.matcher.num_locations == 192 and method.feature_shape == (128, 24, 8)
        assert data["train_transform"]["normalize"] is False
        assert data["train_transform"]["occlusion"] == 0.8
    if "QAConvGS" in cfg.method._target_:
        # The official 2.1 augmentation and frozen, ImageNet-initialised backbone BN.
        assert data["train_transform"]["color_jitter"] == [0.5, 2.0]
        assert data["train_transform"]["hue"] == 0.1
        assert data["sampler"]["_target_"].endswith("GraphSampler")
        assert cfg.method.freeze_backbone_bn and cfg.method.backbone.ibn == "b"
    if "DomainMix" in cfg.method._target_:
        # The official clustering and cluster rows, not the SynthPerson defaults.
        labeller = cfg.method.labeller
        assert (labeller.eps, labeller.eps_gap, labeller.k1, labeller.k2) == (0.6, 0.02, 30, 6)
        assert cfg.method.cluster_from_epoch == 0 and cfg.method.match_row_norm is False
        assert data["sampler"]["batches_per_epoch"] == 2000
    if "gcl" in cfg.method._target_:
        # The official sizes and schedule, mesh renders checked around the unlabelled source.
        assert (cfg.method.backbone.depth, cfg.method.generator.dim) == (50, 16)
        assert (cfg.method.generator.mlp_dim, cfg.method.discriminator.dim) == (512, 32)
        assert (cfg.method.warmup_epochs, cfg.trainer.max_epochs, data["batch_size"]) == (
            40,
            60,
            16,
        )
        assert cfg.method.structure._target_.endswith("MeshStructure")
        (source,) = data["sources"]
        assert data["unlabelled"] == [source]
        assert data["catalogue"][source]["_target_"].endswith("MeshRenderedSource")
        assert data["train_transform"]["pad"] == 0 and data["train_transform"]["flip_prob"] == 0
        assert cfg.method.labeller.rho == (0.0012 if "msmt17" in source else 0.002)


def test_method_recipe_adjusts_the_data_side_and_the_command_line_wins(tmp_path: Path) -> None:
    cfg = composed(["method=qaconv_gs"], tmp_path)
    assert cfg.data.sampler._target_ == "reidgen.data.samplers.graph.GraphSampler"
    assert cfg.data.num_instances == 2 and cfg.data.train_transform.normalize is False
    assert cfg.data.test_transform.normalize is False
    cfg = composed(["method=qaconv_gs", "data.num_instances=4"], tmp_path)
    assert cfg.data.num_instances == 4
    cfg = composed(["method=baseline"], tmp_path)
    assert cfg.data.sampler is None and cfg.data.train_transform.get("normalize", True)
