"""QAConv's picture of the matches: which query locations matched which gallery locations.

A QAConv score is a sum of local matches, one term per location
(:mod:`reidgen.methods.qaconv.matches`, which computes them); these pictures draw the strongest.

* :func:`draw_matches`: both images side by side, the strongest correspondences as lines.
* :func:`draw_ranked_matches`: one query's top results, a match picture each, true matches marked.
* :func:`write_match_pictures`: ranks a target's gallery for chosen queries by the method's test
  distance (:mod:`reidgen.viz.ranked`), one PNG per query.
* ``python -m reidgen.viz.qaconv_matches ckpt=PATH data=synth_cross target=synth_street
  queries=[0,5] top=3`` does that for a checkpoint (config ``conf/viz_matches.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont

from reidgen.data.dataset import EvalDataset, read_image
from reidgen.methods.base import ReIDMethod
from reidgen.methods.qaconv.matches import MatchInfo, location_matches
from reidgen.methods.qaconv.method import MAPS, QAConvMethod
from reidgen.viz.drawing import ImageLike, colour, panel_size, to_pil
from reidgen.viz.ranked import (
    Picture,
    picture_paths,
    pictures_from_checkpoint,
    rank_queries,
    select_queries,
    write_png,
)

# Layout of the pictures, in pixels.
GAP = 8  # between the query and the gallery panel
CAPTION_HEIGHT = 46  # three text lines under the panels
BORDER = 4  # the frame around each result of a ranked picture (its true/false-match marker)
HEADER_HEIGHT = 20  # the title line of a ranked picture
MAX_LINE_WIDTH = 5  # the strongest correspondence; the weakest is 1 pixel wide

TRUE_MATCH = (0, 170, 0)
FALSE_MATCH = (220, 0, 0)
UNKNOWN_MATCH = (160, 160, 160)
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


# ---------------------------------------------------------------------------------- drawing
def _cell_box(
    cell: tuple[int, int], grid: tuple[int, int], size: tuple[int, int], x_offset: int
) -> tuple[int, int, int, int]:
    """Inclusive pixel box of a grid cell on a panel of ``size`` placed at ``x_offset``."""
    (row, col), (h, w), (width, height) = cell, grid, size
    x0, x1 = round(col * width / w), round((col + 1) * width / w) - 1
    y0, y1 = round(row * height / h), round((row + 1) * height / h) - 1
    return x_offset + x0, y0, x_offset + max(x0, x1), max(y0, y1)


def draw_matches(
    query_image: ImageLike,
    gallery_image: ImageLike,
    info: MatchInfo,
    top_k: int = 10,
    height: int = 256,
    title: str | None = None,
    scale: tuple[float, float] | None = None,
) -> Image.Image:
    """The query (left) and gallery image (right) with their ``top_k`` strongest query -> gallery
    correspondences (:meth:`MatchInfo.strongest_query_matches`): each joins the centres of the two
    grid cells, which are outlined and dotted; colour (blue -> yellow -> red) and width (1 to
    :data:`MAX_LINE_WIDTH` pixels) grow with the contribution over ``scale``. A caption gives the
    score and the scale.

    The grid is laid over each image whole, as the test transform resizes whole images. Both are
    shown at :func:`panel_size` of the query (the network saw both at one input size).

    :param query_image, gallery_image: PIL images or float ``[3, H, W]`` tensors in [0, 1].
    :param info: :func:`location_matches` of their feature maps.
    :param top_k: lines drawn (0: the plain images and the caption).
    :param height: minimum panel height in pixels (small re-id crops are upsampled).
    :param title: first caption line, before the score.
    :param scale: ``(weakest, strongest)``: the contributions drawn blue and thinnest, and red
        and widest (values beyond are clipped). Default: those of the drawn lines, which spreads
        them over the whole ramp; give one scale to compare pictures.
    :returns: RGB image ``(2 * pw + GAP, ph + CAPTION_HEIGHT)``, ``(pw, ph)`` the panel size.
    """
    if top_k < 0:
        raise ValueError(f"top_k must be non-negative, got {top_k}")
    if scale is not None and scale[0] > scale[1]:
        raise ValueError(f"scale must be (weakest, strongest), got {scale}")
    query, gallery = to_pil(query_image), to_pil(gallery_image)
    size = panel_size(query, height)
    width, panel_height = size
    canvas = Image.new("RGB", (2 * width + GAP, panel_height + CAPTION_HEIGHT), _BACKGROUND)
    canvas.paste(query.resize(size, Image.Resampling.BICUBIC), (0, 0))
    canvas.paste(gallery.resize(size, Image.Resampling.BICUBIC), (width + GAP, 0))

    matches = info.strongest_query_matches(top_k)
    contributions = [contribution for _, _, contribution in matches]
    if scale is None:
        scale = (min(contributions, default=0.0), max(contributions, default=0.0))
    low, high = scale
    draw = ImageDraw.Draw(canvas)
    # Weakest first, so the strongest lines end up on top where lines cross.
    for s, r, contribution in reversed(matches):
        strength = min(max((contribution - low) / (high - low), 0.0), 1.0) if high > low else 1.0
        line_colour = colour(strength)
        query_box = _cell_box(info.cell(s), info.grid, size, 0)
        gallery_box = _cell_box(info.cell(r), info.grid, size, width + GAP)
        line_width = 1 + round(strength * (MAX_LINE_WIDTH - 1))
        ends = [_centre(query_box), _centre(gallery_box)]
        draw.rectangle(query_box, outline=line_colour)
        draw.rectangle(gallery_box, outline=line_colour)
        draw.line(ends, fill=line_colour, width=line_width)
        for x, y in ends:  # a dot on each matched location, which thin lines barely show
            radius = line_width / 2 + 1.5
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=line_colour)

    score = f"score {float(info.score):.3f}"
    lines = [
        f"{title}   {score}" if title else score,
        f"{len(matches)}/{info.query_contribution.numel()} strongest query->gallery matches",
    ]
    if matches:
        lines.append(f"contribution: blue {low:.4f} -> red {high:.4f}")
    font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((4, panel_height + 3 + 14 * i), line, fill=_TEXT, font=font)
    return canvas


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def draw_ranked_matches(
    query_image: ImageLike,
    gallery_images: Sequence[ImageLike],
    infos: Sequence[MatchInfo],
    query_pid: int | None = None,
    gallery_pids: Sequence[int] | None = None,
    top_k: int = 10,
    height: int = 256,
    title: str | None = None,
) -> Image.Image:
    """One query's results in rank order, top to bottom, a :func:`draw_matches` picture each.

    With pids, each result is framed green (same identity: a true match) or red and labelled so;
    without, grey. Lines share one colour scale (the weakest and strongest drawn contributions of
    all the results), so rows compare.

    :param gallery_images, infos: the results, best first, and their :func:`location_matches`.
    :param query_pid, gallery_pids: identities, both or neither.
    :param title: the header line (e.g. which query).
    :returns: RGB image ``(tw + 2 * BORDER, HEADER_HEIGHT + R * (th + 2 * BORDER))`` for ``R``
        results of :func:`draw_matches` size ``(tw, th)``.
    """
    if not infos or len(gallery_images) != len(infos):
        raise ValueError(
            f"need one MatchInfo per gallery image, at least one: got {len(gallery_images)} "
            f"images and {len(infos)} infos"
        )
    if (query_pid is None) != (gallery_pids is None):
        raise ValueError("give both query_pid and gallery_pids, or neither")
    if gallery_pids is not None and len(gallery_pids) != len(infos):
        raise ValueError(f"{len(gallery_pids)} gallery pids for {len(infos)} results")
    drawn = [c for info in infos for _, _, c in info.strongest_query_matches(top_k)]
    scale = (min(drawn), max(drawn)) if drawn else None

    tiles = []
    for rank, (image, info) in enumerate(zip(gallery_images, infos, strict=True), start=1):
        label, frame = f"#{rank}", UNKNOWN_MATCH
        if gallery_pids is not None:
            same = gallery_pids[rank - 1] == query_pid
            label += f" pid {gallery_pids[rank - 1]} " + ("TRUE match" if same else "false match")
            frame = TRUE_MATCH if same else FALSE_MATCH
        tile = draw_matches(query_image, image, info, top_k, height, label, scale)
        tiles.append((tile, frame))

    tile_width, tile_height = tiles[0][0].size
    framed_width, framed_height = tile_width + 2 * BORDER, tile_height + 2 * BORDER
    canvas = Image.new(
        "RGB", (framed_width, HEADER_HEIGHT + len(tiles) * framed_height), _BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((BORDER, 4), title, fill=_TEXT, font=ImageFont.load_default())
    for i, (tile, frame) in enumerate(tiles):
        top = HEADER_HEIGHT + i * framed_height
        draw.rectangle((0, top, framed_width - 1, top + framed_height - 1), fill=frame)
        canvas.paste(tile, (BORDER, top + BORDER))
    return canvas


# ---------------------------------------------------------------------------------- a target
def check_matching_method(method: object, subject: str = "this method") -> None:
    """Raises ``TypeError`` unless ``method`` is QAConv, whose feature maps and matcher the
    pictures decompose."""
    if not isinstance(method, QAConvMethod):
        raise TypeError(
            f"{subject} is not QAConv ({type(method).__name__}): match pictures need QAConv's "
            "feature maps and matcher"
        )


def write_match_pictures(
    method: ReIDMethod,
    dataset: EvalDataset,
    queries: Iterable[int],
    out_dir: str | Path,
    top: int = 3,
    top_k: int = 10,
    height: int = 256,
    batch_size: int = 64,
    num_workers: int = 0,
    exclude_same_camera: bool = True,
    overwrite: bool = False,
) -> list[Picture]:
    """For each query, ranks the target's gallery by the method's test distance
    (:func:`~reidgen.viz.ranked.rank_queries`) and writes ``<out_dir>/query_<index>.png``:
    :func:`draw_ranked_matches` of its ``top`` results, from the feature maps they were ranked
    by. Images are shown as read from disk.

    :param method: a :class:`~reidgen.methods.qaconv.method.QAConvMethod`; its modes are restored.
    :param dataset: a test target: ``dataset.num_query`` queries first, then the gallery.
    :param queries: positions in the query set (= dataset indices), ``0 <= q < num_query``.
    :param top: results pictured per query; :param top_k: lines per result (:func:`draw_matches`).
    :param exclude_same_camera: leave out gallery images of the query's identity taken by the
        query's camera, as the evaluation protocols do (neither right nor wrong answers). Junk
        (pid -1) is always left out.
    :param overwrite: replace existing pictures. Otherwise an existing file is an error, raised
        before anything is computed or written.
    :returns: one :class:`~reidgen.viz.ranked.Picture` per distinct query, in the order given.
    """
    check_matching_method(method)
    chosen = select_queries(dataset, queries)
    paths = picture_paths(out_dir, chosen, overwrite)
    ranked = rank_queries(
        method, dataset, chosen, top, batch_size, num_workers, exclude_same_camera
    )
    samples = dataset.samples
    pictures = []
    for row, (ranking, path) in enumerate(zip(ranked.rankings, paths, strict=True)):
        query_map = ranked.query_features[MAPS][row]
        infos = [
            location_matches(query_map, gallery_map, method.matcher)
            for gallery_map in ranked.result_features(row)[MAPS]
        ]
        query = samples[ranking.query]
        picture = draw_ranked_matches(
            read_image(query.path),
            [read_image(samples[i].path) for i in ranking.results],
            infos,
            query.pid,
            [samples[i].pid for i in ranking.results],
            top_k,
            height,
            f"query {ranking.query}: pid {query.pid}, camera {query.camid}; "
            f"top {len(ranking.results)} of {ranking.kept}",
        )
        pictures.append(Picture(write_png(picture, path, overwrite), ranking))
    return pictures


# ---------------------------------------------------------------------------------- the CLI
def pictures_from_config(cfg: DictConfig) -> list[Picture]:
    """The CLI without Hydra's wrapper: rebuilds the checkpoint's method and writes the
    pictures (see ``conf/viz_matches.yaml`` for the keys)."""
    return pictures_from_checkpoint(
        cfg, check_matching_method, write_match_pictures, top_k=cfg.lines
    )


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="viz_matches")
def main(cfg: DictConfig) -> None:
    pictures_from_config(cfg)


if __name__ == "__main__":
    main()
