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


def _save(path: Path, method, **hyper) -> Path:
    """What Lightning's checkpoint connector stores for ``method``, hyper-parameters replaced."""
    torch.save(
        {"state_dict": method.state_dict(), "hyper_parameters": {**method.hparams, **hyper}}, path
    )
    return path


@pytest.mark.parametrize(
    "content",
    [
        b"hello\n",  # UnpicklingError
        b"garbage 123\n",  # ValueError: invalid literal for int() with base 10
        b"",  # EOFError
        b"PK\x03\x04 a truncated zip",  # a zip header torch cannot open
    ],
)
def test_load_method_names_a_file_that_is_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_bytes(content)
    with pytest.raises(
        ValueError, match="is not a reidgen checkpoint: torch.load cannot read"
    ) as error:
        load_method(path)
    assert str(path) in str(error.value)


def test_load_method_rejects_a_torch_file_without_reidgen_entries(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_method(METHOD_CONFIG, 5).state_dict(), path)  # bare weights, no hyper-params
    with pytest.raises(
        ValueError, match="weights.pt is not a reidgen checkpoint.*hyper-parameters"
    ):
        load_method(path)
    torch.save({"hyper_parameters": {"config": METHOD_CONFIG, "num_classes": 5}}, path)
    with pytest.raises(ValueError, match="weights.pt is not a reidgen checkpoint.*state_dict"):
        load_method(path)


def test_load_method_names_a_method_that_cannot_be_rebuilt(tmp_path: Path) -> None:
    method = build_method(METHOD_CONFIG, 5)
    config = {**METHOD_CONFIG, "_target_": "reidgen.methods.no_such_method.Method"}
    path = _save(tmp_path / "other.ckpt", method, config=config)
    with pytest.raises(ValueError, match="cannot rebuild its method") as error:
        load_method(path)
    assert str(path) in str(error.value) and "no_such_method" in str(error.value)


def test_load_method_names_weights_of_another_method_config(tmp_path: Path) -> None:
    # Weights of a GeM-pooled baseline under the stored config of an average-pooled one: the
    # GeM exponent is an entry the rebuilt method does not have.
    gem = {**METHOD_CONFIG, "pooling": {"_target_": "reidgen.models.GeMPool"}}
    path = _save(tmp_path / "gem.ckpt", build_method(gem, 5), config=METHOD_CONFIG)
    with pytest.raises(ValueError, match=r"do not fit.*unexpected: pooling\.p") as error:
        load_method(path)
    assert str(path) in str(error.value)
    # And the other way round: an entry the method needs is missing.
    path = _save(tmp_path / "avg.ckpt", build_method(METHOD_CONFIG, 5), config=gem)
    with pytest.raises(ValueError, match=r"do not fit.*missing: pooling\.p"):
        load_method(path)


def test_load_method_names_a_class_count_mismatch(tmp_path: Path) -> None:
    path = _save(tmp_path / "seven.ckpt", build_method(METHOD_CONFIG, 7), num_classes=5)
    with pytest.raises(ValueError, match="num_classes=5") as error:
        load_method(path)
    message = str(error.value)
    assert str(path) in message
    assert "head.classifier.weight (7, 512) in the checkpoint, (5, 512) in the method" in message
