"""GCL's method object: its config builds, E_id's code and embedding, D-Mixup's images and soft
labels, memory rows of a joint epoch's batch, GCL+'s prototype loss, and the checks on what it
is given (sources, encoder checkpoint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reidgen.data.sample import Sample
from reidgen.data.training_set import TrainingSet, TrainingSource
from reidgen.methods.gcl.method import GCL, _soft_cross_entropy
from reidgen.run_support import build_method
from tests.conf.test_config import composed

TINY = [
    "method.generator.dim=2",
    "method.generator.mlp_dim=8",
    "method.generator.aspp_dilations=[1,1,1]",
    "method.discriminator.dim=2",
    "method.discriminator.num_scales=1",
]


def built(tmp_path: Path, *overrides: str, images: int = 12) -> GCL:
    cfg = composed(["method=gcl", *TINY, *overrides], tmp_path)
    method = build_method(cfg.method, 0, num_unlabelled_images=images)
    assert isinstance(method, GCL)
    return method


def test_encoder_code_and_embedding(tmp_path: Path) -> None:
    method = built(tmp_path)
    code, embedding = method.encode(torch.randn(2, 3, 32, 16))
    assert code.shape == (2, 512 * 4) and embedding.shape == (2, 512)
    assert method.extract(torch.randn(2, 3, 32, 16)).names == ("embedding",)
    assert not method.neck.bias.requires_grad  # BoT's neck: bias fixed at 0


def test_dmixup_mixes_codes_and_labels(tmp_path: Path) -> None:
    method = built(tmp_path, "method=gcl_plus")
    method._prototypes = torch.randn(5, 512)
    code = torch.randn(4, 2048)
    structure = method.generator.encode(torch.randn(4, 1, 32, 16))
    labels = torch.tensor([0, 3, 3, 1])
    mixed, targets = method._mix(code, structure, labels, torch.Generator().manual_seed(0))
    assert mixed.shape == (4, 3, 32, 16)
    assert targets.shape == (4, 5)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    # Re-derive the permutation and weight from the same draws and compare the images.
    random = torch.Generator().manual_seed(0)
    seed = int(torch.randint(2**62, (1,), generator=random))
    draw = float(np.random.default_rng(seed).beta(0.6, 0.6))
    lam = max(draw, 1 - draw)
    assert 0.5 <= lam <= 1.0
    order = torch.randperm(4, generator=random)
    expected = lam * F.one_hot(labels, 5).float() + (1 - lam) * F.one_hot(labels[order], 5).float()
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(
        mixed, method.generator.decode(structure, lam * code + (1 - lam) * code[order])
    )


def test_soft_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    targets = torch.tensor([[0.7, 0.3, 0.0]])
    log_p = torch.log_softmax(logits, 1)
    torch.testing.assert_close(
        _soft_cross_entropy(logits, targets), -(0.7 * log_p[0, 0] + 0.3 * log_p[0, 1])
    )


def test_joint_batch_positions_map_to_memory_rows(tmp_path: Path) -> None:
    method = built(tmp_path, "method.warmup_epochs=0", images=6)
    method.memory.set_labels(torch.tensor([0, -1, 1, 0, -1, 1]))
    # The epoch's training set is the source minus its outliers, in order: rows 0, 2, 3, 5.
    assert method.memory_rows(torch.tensor([0, 1, 2, 3])).tolist() == [0, 2, 3, 5]
    warm = built(tmp_path, "method.warmup_epochs=1", images=6)
    assert warm.memory_rows(torch.tensor([4, 1])).tolist() == [4, 1]


def _training_set(*sources: tuple[str, bool, int]) -> TrainingSet:
    pool = []
    for name, labelled, count in sources:
        samples = tuple(Sample(f"/x/{name}/{i}.jpg", i, 0, name, i) for i in range(count))
        own = np.arange(count) if labelled else np.full(count, -1)
        pool.append(TrainingSource(name, labelled, samples, own))
    return TrainingSet(0, 0, pool, [s.own_labels for s in pool], lambda image: image, 4, 0)


def test_sources_and_checkpoints_are_checked(tmp_path: Path) -> None:
    method = built(tmp_path, images=6)
    with pytest.raises(ValueError, match="exactly one unlabelled training source"):
        method.assign_training_labels(0, _training_set(("a", False, 6), ("b", False, 6)))
    with pytest.raises(ValueError, match="exactly one unlabelled"):
        method.assign_training_labels(0, _training_set(("a", True, 6)))
    with pytest.raises(ValueError, match="built for 6"):
        method.assign_training_labels(0, _training_set(("a", False, 7)))
    warmup = method.assign_training_labels(0, _training_set(("a", False, 6)))
    assert warmup["a"].tolist() == [0] * 6  # every image, shuffled by the loader
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        method.load_encoder(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="without unlabelled images"):
        built(tmp_path, images=0)
    with pytest.raises(ValueError, match="generate=false"):
        built(tmp_path, "method.generate=false")


def test_variant_names(tmp_path: Path) -> None:
    assert built(tmp_path).variant == "GCL"
    assert built(tmp_path, "method=gcl_plus").variant == "GCL+"
    fallback = built(tmp_path, "structure@method.structure=grayscale")
    assert fallback.variant == "GCL (2-D structure fallback)"
    plus_fallback = built(tmp_path, "method=gcl_plus", "structure@method.structure=grayscale")
    assert plus_fallback.variant == "GCL+ (2-D structure fallback)"


def test_redraw_and_mixed_pictures_shapes(tmp_path: Path) -> None:
    method = built(tmp_path, "method=gcl_plus").eval()
    images, maps = torch.randn(3, 3, 32, 16), torch.rand(3, 8, 1, 32, 16) * 2 - 1
    drawn = method.redraw(images, maps)
    assert drawn.shape == (3, 8, 3, 32, 16)
    code, _ = method.encode(images)
    own = method.generator.decode(method.generator.encode(maps[:, 3]), code)
    torch.testing.assert_close(drawn[:, 3], own)
    assert method.mixed_pictures(images, maps[:, 0]).shape == (3, 2, 3, 32, 16)
