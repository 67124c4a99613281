"""Structure providers: SynthPerson's part maps painted grey and aligned with the image's own view,
the rotation draw (all seven views, or the legacy six), mesh renders read and checked (a missing
render named), and the 2-D fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from reidgen.data.datasets.market import index_market_layout
from reidgen.data.datasets.synthperson import index_synthperson
from reidgen.data.mesh_renders import RENDER_ANGLES, MeshRenderedSource, render_paths
from reidgen.data.sample import Sample
from reidgen.data.sources import synthperson_structure
from reidgen.data.transforms import build_transforms
from reidgen.methods.gcl.structure import (
    PART_GREY,
    GrayscaleStructure,
    MeshStructure,
    SynthPersonStructure,
    draw_views,
)
from reidgen.synthperson.figure import PART_NAMES


def test_draw_covers_seven_views_and_legacy_never_315() -> None:
    generator = torch.Generator().manual_seed(0)
    views = draw_views(4000, False, generator)
    assert set(views.tolist()) == set(range(1, 8))
    assert set(draw_views(4000, True, generator).tolist()) == set(range(1, 7))


def test_synthperson_views_are_grey_bodies_of_the_image(tiny_street: Path) -> None:
    assert len(PART_GREY) == len(PART_NAMES)
    samples = index_synthperson(tiny_street).train[:6]
    structure = torch.stack([synthperson_structure(s) for s in samples])
    transform = build_transforms(128, 64, train=False)
    images = torch.stack([transform(Image.open(s.path).convert("RGB")) for s in samples])
    provider = SynthPersonStructure()
    original, view = provider({"image": images, "structure": structure})
    assert original.shape == view.shape == (6, 1, 128, 64)
    assert original.min() >= -1 and original.max() == 1  # white background
    body = original < 1
    assert 0.05 < body.float().mean() < 0.6
    # The own view is the image's body: where it is, the image differs from its border colour.
    for image, mask in zip(images, body[:, 0], strict=True):
        border = image[:, :, :3].mean(dim=(1, 2))
        inside = (image - border[:, None, None]).abs().sum(0)[mask].mean()
        outside = (image - border[:, None, None]).abs().sum(0)[~mask].mean()
        assert inside > outside
    # The new view is one of the rotations, painted the same way.
    palette = torch.tensor(PART_GREY)
    rotations = (palette[structure.long()[:, 1:]].float() / 255 * 2 - 1).unsqueeze(2)
    assert all(any(torch.equal(v, r) for r in rs) for v, rs in zip(view, rotations, strict=True))
    every = provider.views({"image": images, "structure": structure})
    assert every.shape == (6, 8, 1, 128, 64)
    torch.testing.assert_close(every[:, 0], original)
    assert all(any(torch.equal(v, r) for r in every[i, 1:]) for i, v in enumerate(view))
    with pytest.raises(KeyError, match="data.extra_fields"):
        provider({"image": images})
    with pytest.raises(ValueError, match="training size"):
        provider({"image": images[:, :, :64], "structure": structure})


def _market_tree(root: Path, names: list[str]) -> None:
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (root / folder).mkdir(parents=True)
    for name in names:
        Image.new("RGB", (64, 128), (100, 120, 140)).save(root / "bounding_box_train" / name)
    Image.new("RGB", (64, 128)).save(root / "query" / "0003_c1s1_000001_00.jpg")
    Image.new("RGB", (64, 128)).save(root / "bounding_box_test" / "0003_c2s1_000001_00.jpg")


class _Folder:
    protocol = None

    def __init__(self, root: Path) -> None:
        self.root, self.name = root, "folder"

    def load(self):
        return index_market_layout(self.root, "folder")


def test_mesh_renders_are_read_resized_and_checked(tmp_path: Path) -> None:
    names = ["0001_c1s1_000001_00.jpg", "0002_c2s1_000001_00.jpg"]
    _market_tree(tmp_path / "market", names)
    renders = tmp_path / "renders"
    source = MeshRenderedSource(_Folder(tmp_path / "market"), str(renders), 128, 64)
    with pytest.raises(FileNotFoundError, match="render folder .*renders/train does not exist"):
        source.load()
    splits = _Folder(tmp_path / "market").load()
    for number, sample in enumerate(splits.train):
        for view, path in enumerate(render_paths(renders, sample)):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (128, 256), 10 * view + number).save(path)  # official 256x128
    missing = render_paths(renders, splits.train[1])[7]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 mesh renders missing(.|\n)*{missing}"):
        source.load()
    Image.new("L", (128, 256), 71).save(missing)
    loaded = source.load()
    field = source.extra_fields["structure"](loaded.train[1])
    assert field.shape == (8, 128, 64) and field.dtype == torch.uint8
    assert field[:, 0, 0].tolist() == [10 * v + 1 for v in range(8)]
    assert render_paths(renders, loaded.train[0])[3].parent.name == f"render_{RENDER_ANGLES[2]}"
    original, view = MeshStructure()(
        {"image": torch.zeros(1, 3, 128, 64), "structure": field[None]},
        torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(original, torch.full_like(original, 1 / 255 * 2 - 1))
    assert round((float(view[0, 0, 0, 0]) + 1) / 2 * 255) in {10 * v + 1 for v in range(1, 8)}


def test_msmt_renders_keep_the_identity_folder(tmp_path: Path) -> None:
    sample = Sample(str(tmp_path / "mask_train_v2" / "0007" / "x.jpg"), 7, 0, "msmt17")
    assert render_paths(tmp_path, sample, path_parts=2)[0] == tmp_path / "train/render/0007/x.jpg"


def test_grayscale_fallback_swaps_within_the_batch() -> None:
    images = torch.stack([torch.full((3, 8, 4), float(v)) for v in range(5)])
    provider = GrayscaleStructure(mean=(0, 0, 0), std=(0.2, 0.2, 0.2))
    original, view = provider({"image": images}, torch.Generator().manual_seed(3))
    levels = original[:, 0, 0, 0]
    torch.testing.assert_close(levels, torch.arange(5.0) * 0.2 * 2 - 1)
    assert sorted(view[:, 0, 0, 0].tolist()) == sorted(levels.tolist())
    assert not (view[:, 0, 0, 0] == levels).any()  # nobody keeps their own map
    assert provider.variant == "GCL (2-D structure fallback)"
    both = provider.views({"image": images})
    torch.testing.assert_close(both[:, 0], original)
    torch.testing.assert_close(both[:, 1], original.roll(-1, dims=0))
    rgb = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    grey = GrayscaleStructure(mean=(0, 0, 0), std=(1, 1, 1)).grey(rgb)
    luminance = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    torch.testing.assert_close(grey, torch.full((1, 1, 2, 2), luminance * 2 - 1))
