"""AlignedReID's picture of the alignment: which stripe of one person matched which of another.

The local distance of two images is the shortest monotone path through their ``[h, h]`` matrix of
stripe distances (``reidgen.methods.alignedreid.local_distance``); the cells on that path are the
stripe correspondences. A person shifted down by a stripe in one crop is matched stripe ``i`` to
``i + 1`` rather than forced onto the diagonal.

* :func:`draw_alignment`: both images side by side, each stripe pair on the path joined by a line
  whose colour shows how close the two stripes are.
* :func:`write_alignment_pictures`: one PNG per chosen query of a target, its top results by the
  method's test distance (:mod:`reidgen.viz.ranked`) stacked below each other.
* ``python -m reidgen.viz.alignment ckpt=PATH data=synth_cross target=synth_street queries=[0,5]``
  (config ``conf/viz_alignment.yaml``).
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
from reidgen.methods.alignedreid.local_distance import alignment_path, paired_stripe_distances
from reidgen.methods.alignedreid.method import AlignedReID
from reidgen.methods.base import ReIDMethod
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

GAP = 40  # between the two panels: room for the lines
CAPTION_HEIGHT = 18
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def draw_alignment(
    image_a: ImageLike,
    image_b: ImageLike,
    stripe_distances: Tensor,
    height: int = 256,
    title: str | None = None,
) -> Image.Image:
    """Both images with their ``h`` stripes outlined and the shortest-path alignment drawn.

    :param stripe_distances: ``[h, h]``, row ``i`` = stripe ``i`` of ``image_a``.
    :returns: an RGB image ``(2 * panel width + GAP) x (panel height + CAPTION_HEIGHT)``; line
        colours run from red (distance 0, identical stripes) to blue (distance 1).
    """
    if stripe_distances.dim() != 2 or stripe_distances.shape[0] != stripe_distances.shape[1]:
        raise ValueError(f"stripe_distances must be [h, h], got {tuple(stripe_distances.shape)}")
    stripes = stripe_distances.shape[0]
    path = alignment_path(stripe_distances)
    a, b = to_pil(image_a), to_pil(image_b)
    width, panel_height = panel_size(a, height)
    picture = Image.new("RGB", (2 * width + GAP, panel_height + CAPTION_HEIGHT), _BACKGROUND)
    picture.paste(a.resize((width, panel_height), Image.Resampling.BICUBIC), (0, 0))
    picture.paste(b.resize((width, panel_height), Image.Resampling.BICUBIC), (width + GAP, 0))
    draw = ImageDraw.Draw(picture)
    bounds = [round(i * panel_height / stripes) for i in range(stripes + 1)]
    for x0 in (0, width + GAP):
        for top, bottom in zip(bounds, bounds[1:], strict=False):
            draw.rectangle((x0, top, x0 + width - 1, bottom - 1), outline=(255, 255, 255))
    centres = [(top + bottom) / 2 for top, bottom in zip(bounds, bounds[1:], strict=False)]
    for i, j in path:
        strength = 1.0 - float(stripe_distances[i, j].clamp(0, 1))
        draw.line(
            ((width - 1, centres[i]), (width + GAP, centres[j])), fill=colour(strength), width=3
        )
    total = float(sum(stripe_distances[i, j] for i, j in path))
    caption = f"local distance {total:.3f}" + (f"  {title}" if title else "")
    draw.text((2, panel_height + 2), caption, fill=_TEXT)
    return picture


def check_aligned_method(method: object, subject: str = "this method") -> None:
    """Raises ``TypeError`` unless ``method`` is AlignedReID, whose stripes the pictures draw."""
    if not isinstance(method, AlignedReID):
        raise TypeError(
            f"{subject} is not AlignedReID ({type(method).__name__}): alignment pictures need "
            "its local (stripe) branch"
        )


def write_alignment_pictures(
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
    """For each query (a position in the query set), its ``top`` gallery results by the
    method's test distance (:func:`~reidgen.viz.ranked.rank_queries`), each drawn with
    :func:`draw_alignment` by model 0's stripes, stacked best first, written as
    ``out_dir/query_<index>.png``. Images are shown as read from disk.

    :param exclude_same_camera: leave out the query's identity in the query's camera, as the
        evaluation protocols do; junk is always left out.
    :param overwrite: replace existing pictures; otherwise an existing one is an error, raised
        before anything is computed.
    :returns: one :class:`~reidgen.viz.ranked.Picture` per distinct query, in the order given.
    """
    check_aligned_method(method)
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
            stripes = method.stripe_features(images)
            results = len(ranking.results)
            distances = paired_stripe_distances(stripes[:1].expand(results, -1, -1), stripes[1:])
        query = samples[ranking.query]
        shown = [read_image(samples[i].path) for i in indices]
        rows = [
            draw_alignment(
                shown[0],
                shown[1 + k],
                distances[k].cpu(),
                height,
                title=f"#{k + 1} {'TRUE' if samples[index].pid == query.pid else 'false'} match, "
                f"test distance {ranking.distances[k]:.3f}",
            )
            for k, index in enumerate(ranking.results)
        ]
        picture = stack_rows(rows, _BACKGROUND)
        pictures.append(Picture(write_png(picture, path, overwrite), ranking))
    return pictures


def pictures_from_config(cfg: DictConfig) -> list[Picture]:
    """The CLI without Hydra's wrapper (keys: ``conf/viz_alignment.yaml``)."""
    return pictures_from_checkpoint(cfg, check_aligned_method, write_alignment_pictures)


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="viz_alignment")
def main(cfg: DictConfig) -> None:
    pictures_from_config(cfg)


if __name__ == "__main__":
    main()
