"""reidgen.export: every method's feature network as ONNX (run by onnxruntime) and TorchScript,
with a dynamic batch size, equal to PyTorch's features; nothing overwritten or kept when wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from reidgen.export import export_from_config, run_exported
from reidgen.methods.base import ReIDMethod
from reidgen.run_support import build_method
from tests.conf.test_config import composed
from tests.test_extract import BASELINE, saved
from tests.test_search import TEST_TRANSFORM
from tests.viz.test_alignment import CONFIG as ALIGNED
from tests.viz.test_qaconv_matches import QACONV

SMALL_BACKBONE = ["method.backbone.depth=18", "method.backbone.pretrained=null"]


def from_conf(method: str, tmp_path: Path, *overrides: str) -> ReIDMethod:
    cfg = composed([f"method={method}", *SMALL_BACKBONE, *overrides], tmp_path)
    return build_method(
        cfg.method, num_classes=4, test_transform=TEST_TRANSFORM, num_unlabelled_images=8
    )


METHODS = {
    "baseline": lambda _: build_method(BASELINE, 4, test_transform=TEST_TRANSFORM),
    "alignedreid": lambda _: build_method(
        {**ALIGNED, "test_distance": "global_local"}, 4, test_transform=TEST_TRANSFORM
    ),
    "qaconv": lambda _: build_method(QACONV, 4, test_transform=TEST_TRANSFORM),
    "esnet": lambda tmp_path: from_conf("esnet", tmp_path),
    "domainmix": lambda tmp_path: from_conf("domainmix", tmp_path),
    "gcl": lambda tmp_path: from_conf(
        "gcl", tmp_path, "method.generator.dim=2", "method.generator.mlp_dim=8"
    ),
}


def export_config(*overrides: str):
    with initialize_config_module("reidgen.conf", version_base="1.3"):
        return compose("export", overrides=list(overrides))


@pytest.mark.parametrize("name", list(METHODS))
def test_exported_features_equal_pytorchs(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    method = METHODS[name](tmp_path)
    ckpt = saved(method, tmp_path / "model.ckpt")
    method.eval()
    images = torch.randn(5, 3, 64, 32)  # another batch size than the export's and its check's
    with torch.no_grad():
        expected = method.extract(images)
    for file_format, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        path = export_from_config(
            export_config(f"ckpt={ckpt}", f"format={file_format}", f"out={tmp_path / 'net'}")
        )
        assert path == tmp_path / f"net{suffix}"
        assert f"images [B, 3, 64, 32] -> {', '.join(expected.names)}" in capsys.readouterr().out
        outputs = run_exported(path, images)
        assert len(outputs) == len(expected.names)
        for part, output in zip(expected.names, outputs, strict=True):
            np.testing.assert_allclose(output, expected[part].numpy(), atol=1e-4, rtol=0)


def test_never_overwrites_and_keeps_nothing_wrong(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = saved(METHODS["baseline"](tmp_path), tmp_path / "model.ckpt")
    out = tmp_path / "net"
    path = export_from_config(export_config(f"ckpt={ckpt}", f"out={out}"))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"not overwriting .*net\.onnx"):
        export_from_config(export_config(f"ckpt={ckpt}", f"out={out}"))
    assert path.read_bytes() == before
    # A tolerance no export can meet: the file is checked, refused and not kept.
    with pytest.raises(ValueError, match="differs from PyTorch's .* nothing was kept"):
        export_from_config(
            export_config(f"ckpt={ckpt}", f"out={tmp_path / 'strict'}", "tolerance=-1")
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt", "net.onnx"]
    with pytest.raises(ValueError, match="format must be one of onnx, torchscript"):
        export_from_config(export_config(f"ckpt={ckpt}", f"out={out}", "format=tflite"))
