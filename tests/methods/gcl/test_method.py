"""GCL's method object: its config builds, E_id's code and embedding, D-Mixup's images and soft
labels, memory rows of a joint epoch's batch, GCL+'s prototype loss, and the checks on what it
is given (sources, encoder checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
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


def _official_encoder_file(path: Path, embedding: int | None, wrap: bool) -> dict:
    """A stage-1 file as the official code loads it: JVTC's ResNet (trunk, ``feat``,
    ``feat_bn``) saved by DataParallel, or MLC's (trunk, ``bn``) inside ``{"state_dict": ...}``."""
    torch.manual_seed(3)
    trunk = built(path, "method.backbone.depth=18").backbone
    for parameter in trunk.parameters():
        parameter.data.normal_(0, 0.05)
    channels = embedding or 512
    neck = torch.nn.BatchNorm1d(channels)
    neck.running_mean.normal_()
    neck.running_var.uniform_(0.5, 2.0)
    neck.weight.data.uniform_(0.5, 1.5)
    parts = {"": trunk, "feat_bn." if embedding else "bn.": neck}
    if embedding:
        parts["feat."] = torch.nn.Linear(512, embedding)
    state = {
        f"module.{prefix}{key}": value.clone()
        for prefix, module in parts.items()
        for key, value in module.state_dict().items()
    }
    torch.save({"state_dict": state} if wrap else state, path / "stage1.pth")
    return {"trunk": trunk.eval(), "linear": parts.get("feat."), "neck": neck.eval()}


@pytest.mark.parametrize("embedding, wrap", [(16, False), (None, True)], ids=["jvtc", "mlc"])
def test_official_stage1_weights_load(tmp_path: Path, embedding: int | None, wrap: bool) -> None:
    reference = _official_encoder_file(tmp_path, embedding, wrap)
    dim = "null" if embedding is None else embedding
    method = built(tmp_path, f"method.embedding_dim={dim}").eval()
    method.load_encoder(str(tmp_path / "stage1.pth"))
    images = torch.randn(3, 3, 32, 16)
    with torch.no_grad():
        pooled = reference["trunk"](images).mean(dim=(2, 3))
        if reference["linear"] is not None:
            pooled = reference["linear"](pooled)
        expected = reference["neck"](pooled)
        code, embedded = method.encode(images)
    torch.testing.assert_close(embedded, expected)
    assert code.shape == (3, 512 * 4)
    assert method.memory.features.shape[1] == (embedding or 512)
    wrong = built(tmp_path, f"method.embedding_dim={'null' if embedding else 8}")
    needed = "16" if embedding else "null"
    with pytest.raises(ValueError, match=f"set method.embedding_dim={needed}"):
        wrong.load_encoder(str(tmp_path / "stage1.pth"))


def test_foreign_stage1_files_are_named(tmp_path: Path) -> None:
    method = built(tmp_path)
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other.pth is not a stage-1 ResNet.*encoder.weight"):
        method.load_encoder(str(tmp_path / "other.pth"))
    _official_encoder_file(tmp_path, None, wrap=False)
    resnet50 = built(tmp_path, "method.backbone.depth=50")
    with pytest.raises(ValueError, match="stage1.pth does not fit GCL's encoder"):
        resnet50.load_encoder(str(tmp_path / "stage1.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: torch.load cannot read it"):
        method.load_encoder(str(tmp_path / "junk.pth"))


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


def test_which_losses_train_the_encoder(tmp_path: Path) -> None:
    method = built(tmp_path, "method.generation_trains_encoder=false")
    assert not method.generation_trains_encoder
    method.manual_backward = lambda loss, **options: loss.backward(**options)
    images, maps = torch.randn(2, 3, 32, 16), torch.randn(2, 1, 32, 16)

    def losses() -> dict[str, torch.Tensor]:
        """A generation loss and a memory-like loss, both reaching E_id and the generator."""
        code, embedding = method.encode(images)
        drawn = method.generator.decode(method.generator.encode(maps), code)
        _, drawn_embedding = method.encode(drawn)
        return {
            "reconstruction": (drawn - images).abs().mean(),
            "memory": (embedding - drawn_embedding).square().mean(),
        }

    def gradients(backward: Callable[[dict[str, torch.Tensor]], None]) -> list[torch.Tensor]:
        method.zero_grad(set_to_none=False)
        backward(losses())
        parameters = (*method.encoder_parameters(), *method.generator.parameters())
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]

    every = gradients(lambda weighted: sum(weighted.values()).backward())
    memory = gradients(lambda weighted: weighted["memory"].backward())
    split = len(method.encoder_parameters())
    scale = max(float(g.abs().max()) for g in every)
    for generation_trains_encoder in (True, False):
        method.generation_trains_encoder = generation_trains_encoder
        expected = every if generation_trains_encoder else memory[:split] + every[split:]
        joint = gradients(lambda weighted: method._generator_step_backward(weighted, joint=True))
        # Two backward passes sum the generator's gradients in another order: float tolerance
        # relative to the largest gradient (small ones are sums of large opposite terms).
        for got, want in zip(joint, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
        # Warm-up steps never separate the losses (E_id is frozen then).
        warmup = gradients(lambda weighted: method._generator_step_backward(weighted, False))
        for got, want in zip(warmup, every, strict=True):
            torch.testing.assert_close(got, want)
