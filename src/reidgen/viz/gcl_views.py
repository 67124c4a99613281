"""GCL's generated views: for chosen training people, the image, its structure maps and what the
generator draws from them with the person's identity code.

Each person is a block of two rows: the image and its structure maps (own view, then the
rotations), and below each map the picture drawn from it (the own view's drawing is the
reconstruction); for GCL+ the last panels mix the person's code with the next person's
(``lambda`` 0.75 and 0.5, the anchor's structure). A generated view must keep the person's
clothing and follow the new structure.

* :func:`draw_views_block`: one person's block.
* :func:`write_views_picture`: the blocks of a batch, stacked, as one PNG (the method calls it
  at every epoch's end: ``<run>/views/epoch_<N>.png``).
* ``python -m reidgen.viz.gcl_views ckpt=PATH data=synth_unsupervised images=[0,5,9]``
  (config ``conf/viz_gcl_views.yaml``): chosen images of the checkpoint's training source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw
from torch import Tensor

from reidgen.data.dataset import read_image
from reidgen.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reidgen.run_support import load_method
from reidgen.viz.drawing import stack_rows, to_pil
from reidgen.viz.ranked import write_png

GAP = 4
CAPTION_HEIGHT = 16
MIX_WEIGHTS = (0.75, 0.5)
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def image_space(test_transform: Mapping[str, Any] | None) -> tuple[Tensor, Tensor] | None:
    """The (mean, std) ``[3]`` that normalised the method's images, from its stored test transform
    config (ImageNet's unless it says otherwise); None when it does not normalise."""
    config = dict(test_transform or {})
    if config.get("normalize", True) is False:
        return None
    mean = torch.tensor(config.get("mean", IMAGENET_MEAN), dtype=torch.float32)
    std = torch.tensor(config.get("std", IMAGENET_STD), dtype=torch.float32)
    return mean, std


def to_unit(images: Tensor, space: tuple[Tensor, Tensor] | None) -> Tensor:
    """Normalised images ``[..., 3, H, W]`` -> [0, 1]."""
    if space is None:
        return images.clamp(0, 1)
    mean, std = (v.to(images).view(3, 1, 1) for v in space)
    return (images * std + mean).clamp(0, 1)


def _panel(image: Image.Image, size: tuple[int, int], caption: str) -> Image.Image:
    panel = Image.new("RGB", (size[0], size[1] + CAPTION_HEIGHT), _BACKGROUND)
    panel.paste(image.resize(size, Image.Resampling.NEAREST), (0, CAPTION_HEIGHT))
    ImageDraw.Draw(panel).text((2, 2), caption, fill=_TEXT)
    return panel


def _row(panels: Sequence[Image.Image | None], size: tuple[int, int]) -> Image.Image:
    width = len(panels) * (size[0] + GAP) + GAP
    row = Image.new("RGB", (width, size[1] + CAPTION_HEIGHT + GAP), _BACKGROUND)
    for k, panel in enumerate(panels):
        if panel is not None:
            row.paste(panel, (GAP + k * (size[0] + GAP), GAP))
    return row


def draw_views_block(
    image: Tensor,
    maps: Tensor,
    drawn: Tensor,
    view_names: Sequence[str],
    mixed: Tensor | None = None,
    height: int = 128,
    caption: str = "",
) -> Image.Image:
    """One person: ``image`` ``[3, H, W]`` in [0, 1], ``maps`` ``[V, 1, H, W]`` in [-1, 1],
    ``drawn`` ``[V, 3, H, W]`` in [0, 1] (the generator's picture from each map), optional
    ``mixed`` ``[M, 3, H, W]`` (GCL+'s mixed identities, shown after the views)."""
    scale = max(1, round(height / image.shape[-2]))
    size = (image.shape[-1] * scale, image.shape[-2] * scale)
    grey = [to_pil(((m + 1) / 2).clamp(0, 1).expand(3, -1, -1)) for m in maps]
    top = [_panel(to_pil(image), size, caption or "image")]
    top += [_panel(g, size, name) for g, name in zip(grey, view_names, strict=True)]
    bottom: list[Image.Image | None] = [None]
    bottom += [_panel(to_pil(d), size, "recon" if k == 0 else "drawn") for k, d in enumerate(drawn)]
    if mixed is not None:
        top += [None] * len(mixed)
        bottom += [
            _panel(to_pil(m), size, f"mix {w:g}") for m, w in zip(mixed, MIX_WEIGHTS, strict=True)
        ]
    return stack_rows([_row(top, size), _row(bottom, size)], _BACKGROUND)


def view_names(count: int) -> list[str]:
    """Captions of ``count`` structure views: the own view, then 45-degree steps (8 views), or
    the 2-D fallback's own and other image (2 views)."""
    if count == 2:
        return ["own (grey)", "other image"]
    return ["own view", *(f"{45 * k} deg" for k in range(1, count))]


def write_views_picture(
    method: Any,
    images: Tensor,
    maps: Tensor,
    path: str | Path,
    captions: Sequence[str] | None = None,
    height: int = 128,
    overwrite: bool = False,
) -> Path:
    """The blocks of ``images`` ``[B, 3, H, W]`` (normalised as the method's test transform)
    with their ``maps`` ``[B, V, 1, H, W]``, drawn by GCL ``method``, stacked, written to
    ``path`` (refused if it exists, unless ``overwrite``)."""
    reconstruction_and_views = method.redraw(images, maps)
    mixed = method.mixed_pictures(images, maps[:, 0]) if method.mixup else None
    space = image_space(method.hparams.get("test_transform"))
    names = view_names(maps.shape[1])
    blocks = [
        draw_views_block(
            to_unit(images[i].float().cpu(), space),
            maps[i].float().cpu(),
            to_unit(reconstruction_and_views[i].float().cpu(), space),
            names,
            None if mixed is None else to_unit(mixed[i].float().cpu(), space),
            height,
            captions[i] if captions else "",
        )
        for i in range(len(images))
    ]
    return write_png(stack_rows(blocks, _BACKGROUND), path, overwrite)


def pictures_from_config(cfg: DictConfig) -> Path:
    """The CLI without Hydra's wrapper (keys: ``conf/viz_gcl_views.yaml``)."""
    from reidgen.methods.gcl.method import GCL

    method = load_method(cfg.ckpt)
    if not isinstance(method, GCL) or not method.generate:
        raise TypeError(
            f"this checkpoint's method is not GCL with a generator ({type(method).__name__}): "
            "generated-view pictures need its generator"
        )
    path = Path(cfg.out_dir) / "views.png"
    if path.exists() and not cfg.overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=true to replace it")
    method.eval()
    sources = list(cfg.data.sources)
    name = cfg.source or sources[0]
    if name not in cfg.data.catalogue:
        raise ValueError(f"source {name!r} is not in the data catalogue")
    # Sources generated or rendered at a size (SynthPerson) must be read at the checkpoint's.
    stored = method.hparams.get("test_transform") or {}
    for key in ("height", "width"):
        if key in stored:
            OmegaConf.update(cfg, f"data.train_transform.{key}", stored[key], force_add=True)
    source = instantiate(cfg.data.catalogue[name])
    samples = source.load().train
    chosen = list(cfg.images) if OmegaConf.is_list(cfg.images) else [cfg.images]
    bad = [i for i in chosen if not 0 <= int(i) < len(samples)]
    if bad:
        raise ValueError(
            f"images {bad} are not positions in {name!r}'s {len(samples)} training images"
        )
    transform = instantiate(method.hparams["test_transform"])
    batch: dict[str, Tensor] = {
        "image": torch.stack([transform(read_image(samples[i].path)) for i in chosen])
    }
    field = method.structure.field
    if field is not None:
        fields = getattr(source, "extra_fields", {})
        if field not in fields:
            raise ValueError(f"source {name!r} offers no {field!r} maps for {method.variant}")
        batch[field] = torch.stack([fields[field](samples[i]) for i in chosen])
    captions = [f"#{i} pid {samples[i].pid}" for i in chosen]
    with torch.no_grad():
        written = write_views_picture(
            method,
            batch["image"],
            method.structure.views(batch),
            path,
            captions,
            cfg.height,
            cfg.overwrite,
        )
    print(f"generated views of images {chosen}: {written}")
    return written


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="viz_gcl_views")
def main(cfg: DictConfig) -> None:
    pictures_from_config(cfg)


if __name__ == "__main__":
    main()
