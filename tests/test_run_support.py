"""Building a method in one place, and rebuilding it from a checkpoint alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidgen.eval.evaluator import Evaluator
from reidgen.methods.baseline import Baseline
from reidgen.run_support import build_method, load_method

METHOD_CONFIG = {
    "_target_": "reidgen.methods.baseline.Baseline",
    "backbone": {"_target_": "reidgen.models.ResNetBackbone", "depth": 18},
    "pooling": {"_target_": "reidgen.models.GlobalAvgPool"},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001},
}
TRANSFORM = {"_target_": "reidgen.data.transforms.build_transforms", "height": 32, "width": 16}
EVALUATION = {"_target_": "reidgen.eval.evaluator.Evaluator", "flip": True, "k1": 7}


def test_load_method_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_method(tmp_path / "nope.ckpt")


@pytest.mark.parametrize(
    "checkpoint",
    [
        {"state_dict": {}},
        {"state_dict": {}, "hyper_parameters": {"config": None, "num_classes": 3}},
        {"state_dict": {}, "hyper_parameters": {"lr": 0.1}},
        [1, 2, 3],
    ],
)
def test_load_method_rejects_checkpoints_without_reidgen_entry(tmp_path: Path, checkpoint) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="not a reidgen checkpoint"):
        load_method(path)


def test_a_method_is_built_with_its_config_evaluation_and_test_transform() -> None:
    method = build_method(METHOD_CONFIG, 5, evaluation=EVALUATION, test_transform=TRANSFORM)
    assert type(method) is Baseline
    assert method.num_classes == 5
    assert method.hparams.config == METHOD_CONFIG
    assert method.hparams.test_transform == TRANSFORM
    assert method.hparams.evaluation == EVALUATION
    assert method.evaluator.settings() == Evaluator(flip=True, k1=7).settings()


def test_build_method_refuses_a_class_that_is_not_a_method() -> None:
    with pytest.raises(TypeError, match="is not a ReIDMethod"):
        build_method({"_target_": "torch.nn.Identity"}, 3)


def test_load_method_round_trip_gives_the_same_features(tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = build_method(METHOD_CONFIG, 5, evaluation=EVALUATION, test_transform=TRANSFORM)
    # Move the BN running statistics and the BNNeck affine off their initial values, so a load
    # that silently skipped buffers or the head would show.
    method.train()
    with torch.no_grad():
        method(torch.randn(4, 3, 32, 16))
        for parameter in method.head.parameters():
            parameter.add_(torch.randn_like(parameter))
    path = tmp_path / "last.ckpt"
    # What Lightning's checkpoint connector stores for a module.
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, path)

    loaded = load_method(path)
    assert type(loaded) is Baseline
    assert loaded.num_classes == 5
    assert loaded.hparams.config == METHOD_CONFIG
    assert loaded.hparams.test_transform == TRANSFORM
    assert loaded.evaluator.flip is True
    assert loaded.head.classifier.out_features == 5
    replaced = load_method(path, evaluation={"rerank": True})
    assert (replaced.evaluator.flip, replaced.evaluator.rerank) == (False, True)

    images = torch.randn(3, 3, 32, 16)
    method.eval()
    loaded.eval()
    with torch.no_grad():
        expected = method.extract(images)["embedding"]
        got = loaded.extract(images)["embedding"]
        unloaded = build_method(METHOD_CONFIG, 5).eval().extract(images)["embedding"]
    assert got.shape == (3, 512)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(unloaded, expected, atol=1e-3)  # the comparison can fail


def test_overrides_must_be_keys_of_the_stored_config(tmp_path: Path) -> None:
    method = build_method({**METHOD_CONFIG, "neck_feat": "after"}, 5)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}, path)
    assert load_method(path, overrides={"neck_feat": "before"}).neck_feat == "before"
    with pytest.raises(KeyError, match=r"\['neck_fet'\] are not keys"):
        load_method(path, overrides={"neck_fet": "before"})
