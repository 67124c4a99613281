"""AlignedReID's picture of the alignment: which stripe of one person matched which of another.

The local distance of two images is the shortest monotone path through their ``[h, h]`` matrix of
stripe distances (``reidgen.methods.alignedreid.local_distance``); the cells on that path are the
stripe correspondences. A person shifted down by a stripe in one crop is matched stripe ``i`` to
``i + 1`` rather than forced onto the diagonal.

* :func:`draw_alignment`: both images side by side, each stripe pair on the path joined by a line
  whose colour shows how close the two stripes are.
* :func:`write_alignment_pictures`: one PNG per chosen query of a target, its top results by the
  method's test distance stacked below each other.
* ``python -m reidgen.viz.alignment ckpt=PATH data=synth_cross target=synth_street queries=[0,5]``
  (config ``conf/viz_alignment.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import DataLoader

from reidgen.data.dataset import EvalDataset
from reidgen.evaluate import checkpoint_datamodule
from reidgen.methods.alignedreid.local_distance import alignment_path, paired_stripe_distances
from reidgen.methods.base import ReIDMethod, load_method
from reidgen.viz.common import ImageLike, colour, panel_size, target_dataset, to_pil, top_results

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
    picture.paste(a.resize((width, panel_height), Image.BICUBIC), (0, 0))
    picture.paste(b.resize((width, panel_height), Image.BICUBIC), (width + GAP, 0))
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


def _check_aligned_method(method: object) -> None:
    models = getattr(method, "models", None)
    if models is None or not hasattr(models[0], "local_reduction"):
        raise TypeError(
            f"this checkpoint's method is not AlignedReID ({type(method).__name__} has no "
            "AlignedReID models with a local branch)"
        )


@torch.no_grad()
def write_alignment_pictures(
    method: ReIDMethod,
    dataset: EvalDataset,
    queries: Sequence[int],
    out_dir: str | Path,
    top: int = 3,
    height: int = 256,
    batch_size: int = 64,
    overwrite: bool = False,
) -> list[Path]:
    """For each query position, its ``top`` gallery results by ``method``'s test distance
    (same identity in the same camera and junk left out, as the protocol), each drawn with
    :func:`draw_alignment` by model 0's stripes; written as ``out_dir/query_<index>.png``.
    Existing files are never replaced unless ``overwrite``."""
    _check_aligned_method(method)
    out = Path(out_dir)
    for query in queries:
        if not 0 <= query < dataset.num_query:
            raise IndexError(
                f"query {query} out of range: the target has {dataset.num_query} queries "
                f"(0..{dataset.num_query - 1})"
            )
    paths = [out / f"query_{query}.png" for query in queries]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"not replacing {', '.join(existing)} (overwrite=true replaces them)")
    out.mkdir(parents=True, exist_ok=True)
    method.eval()
    device = method.device
    features = torch.cat(
        [
            method.extract(batch["image"].to(device)).cpu()
            for batch in DataLoader(dataset, batch_size=batch_size)
        ]
    )
    query_features, gallery_features = features[: dataset.num_query], features[dataset.num_query :]
    gallery = dataset.samples[dataset.num_query :]
    for query, path in zip(queries, paths, strict=True):
        sample = dataset.samples[query]
        distance = method.distance(query_features, gallery_features)(query, query + 1)[0]
        ranked, _ = top_results(distance, sample, gallery, top)
        results = [int(i) for i in ranked]
        images = [dataset[query]["image"]] + [
            dataset[dataset.num_query + r]["image"] for r in results
        ]
        local = method.models[0](torch.stack(images).to(device)).local_features
        if getattr(method, "normalize_features", False):
            local = torch.nn.functional.normalize(local, dim=2)
        stripes = paired_stripe_distances(local[:1].expand(len(results), -1, -1), local[1:]).cpu()
        rows = [
            draw_alignment(
                images[0],
                images[1 + k],
                stripes[k],
                height,
                title=f"#{k + 1} {'TRUE' if gallery[r].pid == sample.pid else 'false'} match, "
                f"test distance {float(distance[r]):.3f}",
            )
            for k, r in enumerate(results)
        ]
        picture = Image.new("RGB", (rows[0].width, sum(row.height for row in rows)), _BACKGROUND)
        for k, row in enumerate(rows):
            picture.paste(row, (0, sum(r.height for r in rows[:k])))
        with open(path, "wb" if overwrite else "xb") as handle:
            picture.save(handle, format="PNG")
    return paths


def pictures_from_config(cfg: DictConfig) -> list[Path]:
    """The CLI without Hydra's wrapper (keys: ``conf/viz_alignment.yaml``)."""
    method = load_method(cfg.ckpt)
    _check_aligned_method(method)
    dataset = target_dataset(checkpoint_datamodule(cfg.data, method), cfg.target)
    queries = list(cfg.queries) if OmegaConf.is_list(cfg.queries) else [cfg.queries]
    paths = write_alignment_pictures(
        method, dataset, queries, cfg.out_dir, cfg.top, cfg.height, overwrite=cfg.overwrite
    )
    for path in paths:
        print(path)
    return paths


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="viz_alignment")
def main(cfg: DictConfig) -> None:
    pictures_from_config(cfg)


if __name__ == "__main__":
    main()
