"""reidgen.extract: every image's features of a target with its metadata, written once and read
back, for methods with one part (BoT), several (AlignedReID) and feature maps (QAConv)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from safetensors import safe_open

from reidgen.data.dataset import EvalDataset
from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.transforms import build_transforms
from reidgen.eval.features import Features
from reidgen.eval.protocols import VehicleIDProtocol
from reidgen.extract import (
    ImageRecord,
    extract_from_config,
    image_records,
    read_feature_file,
    write_feature_file,
)
from reidgen.methods.base import ReIDMethod
from reidgen.run_support import build_method
from tests.viz.test_alignment import CONFIG as ALIGNED
from tests.viz.test_qaconv_matches import QACONV

INPUT_H, INPUT_W = 64, 32
BASELINE = {
    "_target_": "reidgen.methods.baseline.Baseline",
    "backbone": {"_target_": "reidgen.models.ResNetBackbone", "depth": 18, "pretrained": None},
    "pooling": {"_target_": "reidgen.models.GlobalAvgPool"},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
}


def saved(method: ReIDMethod, path: Path) -> Path:
    """``method`` as ``reidgen.run`` checkpoints it (weights and hyper-parameters)."""
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, path)
    return path


def cli_config(synth_data_dir: Path, *overrides: str) -> DictConfig:
    """The CLI's config as ``python -m reidgen.extract`` composes it, on the tiny street target."""
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        return compose(
            "extract",
            overrides=[
                "data=synth_tiny",
                "data.targets=[synth_street_tiny]",
                f"paths.data_dir={synth_data_dir}",
                f"data.test_transform.height={INPUT_H}",
                f"data.test_transform.width={INPUT_W}",
                "device=cpu",
                "progress=false",
                *overrides,
            ],
        )


def direct_features(method: ReIDMethod, dataset: EvalDataset) -> Features:
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    method.eval()
    with torch.no_grad():
        return method.extract(images)


@pytest.fixture(scope="module")
def street(tiny_street: Path) -> EvalDataset:
    splits = index_synthperson(tiny_street)
    return EvalDataset(
        splits.query, splits.gallery, build_transforms(INPUT_H, INPUT_W, train=False)
    )


@pytest.mark.parametrize(
    ("config", "overrides", "parts"),
    [
        (BASELINE, [], ["embedding"]),
        # The stripes are features of the global + local test distance.
        (ALIGNED, ["+method_overrides.test_distance=global_local"], ["embedding", "stripes"]),
        (QACONV, [], ["maps"]),
    ],
    ids=["baseline", "alignedreid", "qaconv"],
)
def test_round_trip_of_features_and_metadata(
    config: dict,
    overrides: list[str],
    parts: list[str],
    street: EvalDataset,
    synth_data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    torch.manual_seed(0)
    method = build_method(config, num_classes=4)
    ckpt = saved(method, tmp_path / "model.ckpt")
    out = tmp_path / "features" / "street"
    features_path, index_path = extract_from_config(
        cli_config(synth_data_dir, f"ckpt={ckpt}", f"out={out}", *overrides)
    )
    assert (features_path, index_path) == (out.with_suffix(".safetensors"), out.with_suffix(".csv"))
    assert f"{len(street)} images of synth_street_tiny" in capsys.readouterr().out
    features, records = read_feature_file(features_path)
    if overrides:
        method = build_method({**config, "test_distance": "global_local"}, num_classes=4)
        method.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    expected = direct_features(method, street)
    assert list(features.names) == parts
    for name in parts:
        torch.testing.assert_close(features[name], expected[name], rtol=1e-5, atol=1e-5)
    assert records == image_records(street)
    assert [r.path for r in records] == [s.path for s in street.samples]
    assert [r.split for r in records].count("query") == street.num_query
    assert {r.split for r in records[street.num_query :]} == {"gallery"}
    assert [(r.pid, r.camid) for r in records] == [(s.pid, s.camid) for s in street.samples]
    with safe_open(features_path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["target"] == "synth_street_tiny"
    assert metadata["method"] == config["_target_"]


def test_refuses_to_overwrite_and_npz_half_precision(
    street: EvalDataset, synth_data_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    method = build_method(BASELINE, num_classes=4)
    ckpt = saved(method, tmp_path / "model.ckpt")
    out = tmp_path / "street"
    args = [f"ckpt={ckpt}", f"out={out}", "format=npz", "dtype=float16"]
    features_path, index_path = extract_from_config(cli_config(synth_data_dir, *args))
    assert features_path.suffix == ".npz"
    features, _ = read_feature_file(features_path)
    assert features["embedding"].dtype == torch.float16
    expected = direct_features(method, street)["embedding"]
    torch.testing.assert_close(features["embedding"].float(), expected, rtol=1e-2, atol=1e-2)
    before = features_path.read_bytes(), index_path.read_text()
    with pytest.raises(FileExistsError, match=r"street\.npz, .*street\.csv"):
        extract_from_config(cli_config(synth_data_dir, *args))
    assert (features_path.read_bytes(), index_path.read_text()) == before
    with pytest.raises(ValueError, match="dtype must be float32 or float16"):
        extract_from_config(cli_config(synth_data_dir, f"ckpt={ckpt}", "out=x", "dtype=int8"))


def test_index_file_rows_and_errors(tmp_path: Path) -> None:
    records = [
        ImageRecord(0, "a/1.jpg", 3, 0, 12.5, "query"),
        ImageRecord(1, "b/2.jpg", 0, 1, None, "gallery"),
    ]
    features = Features({"embedding": torch.arange(6.0).view(2, 3)})
    _, index_path = write_feature_file(features, records, tmp_path / "f")
    with open(index_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["row", "path", "pid", "camid", "timestamp", "split"],
        ["0", "a/1.jpg", "3", "0", "12.5", "query"],
        ["1", "b/2.jpg", "0", "1", "", "gallery"],
    ]
    assert read_feature_file(tmp_path / "f.safetensors")[1] == records
    with pytest.raises(ValueError, match="1 index rows for 2 feature rows"):
        write_feature_file(features, records[:1], tmp_path / "g")
    assert not list(tmp_path.glob("g.*"))
    write_feature_file(features, records, tmp_path / "h")
    (tmp_path / "h.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"h\.csv does not exist"):
        read_feature_file(tmp_path / "h.safetensors")
    with pytest.raises(ValueError, match="format must be one of safetensors, npz"):
        write_feature_file(features, records, tmp_path / "i", file_format="pt")


def test_a_pooled_target_is_one_pool(street: EvalDataset) -> None:
    pooled = EvalDataset(
        street.samples[:4], [], street.transform, protocol=VehicleIDProtocol(), name="pool"
    )
    assert {record.split for record in image_records(pooled)} == {"pool"}
