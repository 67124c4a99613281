"""ES-Net's picture of what it erases: the saliency map and the erased block over each image.

The saliency map is the global head's confidence in the image's class at every position of the
backbone map (``reidgen.methods.esnet.erasing.saliency_map``); the erased block is the keep-mask
training would apply to the erasing branch (``FeatureErasing``), shown here even though nothing is
erased at test time. Test identities are not training classes, so the class looked at is each
image's own top training class.

* :func:`draw_saliency_row`: one image, its saliency as a heat map over it, and the erased block
  darkened over it.
* :func:`write_saliency_pictures`: one PNG per chosen query of a target: the query and its top
  results by the method's test distance (:mod:`reidgen.viz.ranked`), one row each.
* ``python -m reidgen.viz.saliency ckpt=PATH data=synth_cross target=synth_street queries=[0,5]``
  (config ``conf/viz_saliency.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw
from torch import Tensor

from reidgen.data.dataset import EvalDataset, read_image
from reidgen.methods.base import ReIDMethod
from reidgen.methods.esnet.method import ESNet
from reidgen.viz.drawing import ImageLike, colour, panel_size, stack_rows, to_pil
from reidgen.viz.ranked import (
    Picture,
    inference,
    picture_paths,
    pictures_from_checkpoint,
    rank_queries,
    select_queries,
    write_png,
)

GAP = 6
CAPTION_HEIGHT = 18
HEAT_OPACITY = 0.55
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_ERASED = (0, 0, 0)


def _heat(saliency: Tensor, size: tuple[int, int]) -> Image.Image:
    """``[h, w]`` saliency in [0, 1], min-max stretched, as an RGB heat map of ``size``."""
    low, high = float(saliency.min()), float(saliency.max())
    scaled = (saliency - low) / max(high - low, 1e-12)
    cells = Image.new("RGB", (saliency.shape[1], saliency.shape[0]))
    cells.putdata([colour(float(v)) for v in scaled.flatten()])
    return cells.resize(size, Image.Resampling.BILINEAR)


def draw_saliency_row(
    image: ImageLike, saliency: Tensor, keep: Tensor, height: int = 256, caption: str = ""
) -> Image.Image:
    """Three panels: the image, its saliency over it (blue low, red high) and the erased block
    over it (darkened, outlined).

    :param saliency: ``[h, w]``, the map of this image.
    :param keep: ``[h, w]`` or ``[1, h, w]``, 1 = kept, 0 = erased.
    :returns: an RGB image ``(3 * panel width + 2 * GAP) x (panel height + CAPTION_HEIGHT)``.
    """
    keep = keep.reshape(saliency.shape)
    if saliency.dim() != 2:
        raise ValueError(f"saliency must be [h, w], got {tuple(saliency.shape)}")
    shown = to_pil(image)
    width, panel_height = panel_size(shown, height)
    shown = shown.resize((width, panel_height), Image.Resampling.BICUBIC)
    heat = Image.blend(shown, _heat(saliency.float().cpu(), (width, panel_height)), HEAT_OPACITY)
    erased = shown.copy()
    draw = ImageDraw.Draw(erased)
    rows, columns = saliency.shape
    for row, column in (keep.cpu() == 0).nonzero().tolist():
        box = (
            round(column * width / columns),
            round(row * panel_height / rows),
            round((column + 1) * width / columns) - 1,
            round((row + 1) * panel_height / rows) - 1,
        )
        region = erased.crop(box)
        erased.paste(Image.blend(region, Image.new("RGB", region.size, _ERASED), 0.7), box)
        draw.rectangle(box, outline=(255, 255, 255))
    picture = Image.new("RGB", (3 * width + 2 * GAP, panel_height + CAPTION_HEIGHT), _BACKGROUND)
    for k, panel in enumerate((shown, heat, erased)):
        picture.paste(panel, (k * (width + GAP), 0))
    fraction = float((keep == 0).float().mean())
    text = f"erased {fraction:.0%}" + (f"  {caption}" if caption else "")
    ImageDraw.Draw(picture).text((2, panel_height + 2), text, fill=_TEXT)
    return picture


def check_esnet_method(method: object, subject: str = "this method") -> None:
    """Raises ``TypeError`` unless ``method`` is ES-Net with its erasing branch."""
    if not isinstance(method, ESNet) or not method.erase_branch:
        raise TypeError(
            f"{subject} is not ES-Net with an erasing branch ({type(method).__name__}): saliency "
            "pictures need its global head and erasing settings"
        )


def write_saliency_pictures(
    method: ReIDMethod,
    dataset: EvalDataset,
    queries: Iterable[int],
    out_dir: str | Path,
    top: int = 3,
    height: int = 256,
    batch_size: int = 64,
    num_workers: int = 0,
    exclude_same_camera: bool = True,
    overwrite: bool = False,
) -> list[Picture]:
    """For each query (a position in the query set): the query and its ``top`` gallery results
    by the method's test distance, one :func:`draw_saliency_row` each, stacked, written as
    ``out_dir/query_<index>.png``. Images are shown as read from disk.

    :param exclude_same_camera: leave out the query's identity in the query's camera, as the
        evaluation protocols do; junk is always left out.
    :param overwrite: replace existing pictures; otherwise an existing one is an error, raised
        before anything is computed.
    """
    check_esnet_method(method)
    chosen = select_queries(dataset, queries)
    paths = picture_paths(out_dir, chosen, overwrite)
    ranked = rank_queries(
        method, dataset, chosen, top, batch_size, num_workers, exclude_same_camera
    )
    samples = dataset.samples
    pictures = []
    for ranking, path in zip(ranked.rankings, paths, strict=True):
        indices = [ranking.query, *ranking.results]
        with inference(method):
            images = torch.stack([dataset[i]["image"] for i in indices]).to(method.device)
            saliency, keep = method.saliency_and_mask(images)
        query = samples[ranking.query]
        captions = ["query"] + [
            f"#{k + 1} {'TRUE' if samples[index].pid == query.pid else 'false'} match"
            for k, index in enumerate(ranking.results)
        ]
        rows = [
            draw_saliency_row(read_image(samples[index].path), saliency[k], keep[k], height, text)
            for k, (index, text) in enumerate(zip(indices, captions, strict=True))
        ]
        picture = stack_rows(rows, _BACKGROUND)
        pictures.append(Picture(write_png(picture, path, overwrite), ranking))
    return pictures


def pictures_from_config(cfg: DictConfig) -> list[Picture]:
    """The CLI without Hydra's wrapper (keys: ``conf/viz_saliency.yaml``)."""
    return pictures_from_checkpoint(cfg, check_esnet_method, write_saliency_pictures)


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="viz_saliency")
def main(cfg: DictConfig) -> None:
    pictures_from_config(cfg)


if __name__ == "__main__":
    main()
