"""QAConv's picture of the matches: which query locations matched which gallery locations.

QAConv's claim to interpretability (Liao & Shao, ECCV 2020) is that a score is a sum of local
matches. In eval mode the whole head (scalar BN, FC, logit BN) is affine in the directional maxima
of the local correlation (:meth:`~reidgen.methods.qaconv.matcher.QAConvMatcher.eval_affine`)::

    score = sum_s w_a[s] * S[s, r*(s)] + sum_r w_b[r] * S[s*(r), r] + offset

with ``S[s, r]`` the cosine of query location ``s`` and gallery location ``r``, ``r*(s)`` the best
gallery location of ``s`` and ``s*(r)`` the best query location of ``r``. Every location adds one
term, and its correspondence is the argmax. The official visualisation read the per-location
weights of the 1.x FC and broke with the shared-FC 2.1 head (issue #32, ``docs/methods/qaconv.md``
§11); the folded weights ``w_a, w_b`` serve both heads and include both BNs.

* :func:`location_matches`: correspondences and contributions of one (query, gallery) pair.
* :func:`draw_matches`: both images side by side, the strongest correspondences as lines.
* :func:`draw_ranked_matches`: one query's top results, a match picture each, true matches marked.
* :func:`write_match_pictures`: ranks a target's gallery for chosen queries, one PNG per query.
* ``python -m reidgen.viz.qaconv_matches ckpt=PATH data=synth_cross target=synth_street
  queries=[0,5] top=3`` does that for a checkpoint (config ``conf/viz_matches.yaml``).

Locations are numbered row-major on the ``h x w`` feature grid: ``s = row * w + col``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from reidgen.data.dataset import EvalDataset, read_image
from reidgen.data.sample import Sample
from reidgen.evaluate import checkpoint_datamodule
from reidgen.methods.base import load_method
from reidgen.methods.qaconv.matcher import QAConvMatcher
from reidgen.viz.common import (
    ImageLike,
    colour,
    panel_size,
    target_dataset,
    to_pil,
    top_results,
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


@dataclass(frozen=True)
class MatchInfo:
    """The local matches of one query map against one gallery map, ``N = h * w`` locations.

    :ivar grid: ``(h, w)`` of the feature maps.
    :ivar similarity: ``S [N(s), N(r)]``, the cosine of query location ``s`` and gallery
        location ``r``.
    :ivar query_to_gallery: ``r*(s) = argmax_r S[s, r]``, ``[N]`` long.
    :ivar gallery_to_query: ``s*(r) = argmax_s S[s, r]``, ``[N]`` long.
    :ivar query_contribution: ``w_a[s] * S[s, r*(s)]``, ``[N]`` float64.
    :ivar gallery_contribution: ``w_b[r] * S[s*(r), r]``, ``[N]`` float64.
    :ivar offset: ``[]`` float64, the score's constant term.
    :ivar score: ``[]`` float64, the eval-mode score: both contributions summed, plus ``offset``.
    """

    grid: tuple[int, int]
    similarity: Tensor
    query_to_gallery: Tensor
    gallery_to_query: Tensor
    query_contribution: Tensor
    gallery_contribution: Tensor
    offset: Tensor
    score: Tensor

    def cell(self, location: int) -> tuple[int, int]:
        """``(row, col)`` of ``location`` on the grid."""
        row, col = divmod(int(location), self.grid[1])
        return row, col

    def strongest_query_matches(self, k: int) -> list[tuple[int, int, float]]:
        """The ``k`` query locations of largest contribution, strongest first, as
        ``(s, r*(s), contribution)``; equal contributions keep location order."""
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        order = torch.sort(self.query_contribution, descending=True, stable=True).indices[:k]
        return [
            (int(s), int(self.query_to_gallery[s]), float(self.query_contribution[s]))
            for s in order
        ]


@torch.no_grad()
def location_matches(query_map: Tensor, gallery_map: Tensor, matcher: QAConvMatcher) -> MatchInfo:
    """Correspondences and score contributions of one query and one gallery feature map.

    :param query_map, gallery_map: ``[C, h, w]``, L2-normalised over ``C`` at every location.
    :param matcher: its eval-mode head (running statistics) is used whatever its mode, as in
        evaluation; so ``info.score`` is ``matcher.scores_in_chunks(query[None], gallery[None])``.
    :returns: tensors on the maps' device (see :class:`MatchInfo` for the shapes).
    """
    if query_map.dim() != 3 or query_map.shape != gallery_map.shape:
        raise ValueError(
            f"expected two [C, h, w] maps of one shape, got {tuple(query_map.shape)} and "
            f"{tuple(gallery_map.shape)}"
        )
    c, h, w = query_map.shape
    if h * w != matcher.num_locations:
        raise ValueError(
            f"maps have {h} x {w} = {h * w} locations, the matcher was built for "
            f"{matcher.num_locations}"
        )
    # float32 at least: CPU half matmuls are slow, and fp16 would blur near-tied maxima.
    dtype = torch.float64 if query_map.dtype == torch.float64 else torch.float32
    query = query_map.to(dtype).reshape(c, h * w)
    gallery = gallery_map.to(dtype).reshape(c, h * w)
    similarity = query.t() @ gallery  # [N(s), N(r)]
    best_gallery, query_to_gallery = similarity.max(dim=1)
    best_query, gallery_to_query = similarity.max(dim=0)
    w_a, w_b, offset = (t.to(similarity.device) for t in matcher.eval_affine())
    query_contribution = w_a * best_gallery.double()
    gallery_contribution = w_b * best_query.double()
    return MatchInfo(
        grid=(h, w),
        similarity=similarity,
        query_to_gallery=query_to_gallery,
        gallery_to_query=gallery_to_query,
        query_contribution=query_contribution,
        gallery_contribution=gallery_contribution,
        offset=offset,
        score=query_contribution.sum() + gallery_contribution.sum() + offset,
    )


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
@dataclass(frozen=True)
class MatchPicture:
    """One written picture.

    :ivar path: the PNG file.
    :ivar query: the query's dataset index (= its position in the query set).
    :ivar gallery: dataset indices of the pictured results, best first.
    :ivar scores: their scores, as the matcher ranked them (``scores_in_chunks``).
    """

    path: Path
    query: int
    gallery: list[int]
    scores: list[float]


def check_matching_method(method: object, subject: str = "this method") -> None:
    """Raises ``TypeError`` unless ``method`` has ``feature_maps`` and a QAConvMatcher
    ``matcher``, what match pictures need."""
    missing = [name for name in ("feature_maps", "matcher") if not hasattr(method, name)]
    if not missing and not isinstance(method.matcher, QAConvMatcher):
        missing = ["a QAConvMatcher as matcher"]
    if missing:
        raise TypeError(
            f"{subject} is not QAConv: {type(method).__name__} has no {' and no '.join(missing)} "
            "(match pictures need feature_maps(images) -> [B, C, h, w] and a QAConvMatcher)"
        )


def _feature_maps(
    method: nn.Module,
    dataset: EvalDataset,
    indices: Sequence[int],
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> Iterator[Tensor]:
    """Feature maps ``[b, C, h, w]`` of ``dataset[indices]``, a batch at a time, in order."""
    loader = DataLoader(
        Subset(dataset, list(indices)), batch_size=batch_size, num_workers=num_workers
    )
    for batch in loader:
        yield method.feature_maps(batch["image"].to(device))


def write_match_pictures(
    method: nn.Module,
    dataset: EvalDataset,
    queries: Sequence[int],
    out_dir: str | Path,
    top: int = 3,
    top_k: int = 10,
    height: int = 256,
    batch_size: int = 64,
    num_workers: int = 0,
    exclude_same_camera: bool = True,
    overwrite: bool = False,
) -> list[MatchPicture]:
    """For each query, ranks the target's gallery by the matcher's eval scores and writes
    ``<out_dir>/query_<index>.png``: :func:`draw_ranked_matches` of its ``top`` results.

    The gallery is scored a batch at a time (its maps are never all held); the pictured results
    are extracted again for their :func:`location_matches`. Images are shown as read from disk.

    :param method: has ``feature_maps(images [B, 3, H, W]) -> [B, C, h, w]`` (unit norm per
        location) and ``matcher`` (:class:`QAConvMatcher`); run in eval mode, its mode restored.
    :param dataset: a test target: ``dataset.num_query`` queries first, then the gallery.
    :param queries: positions in the query set (= dataset indices), ``0 <= q < num_query``.
    :param top: results pictured per query; :param top_k: lines per result (:func:`draw_matches`).
    :param exclude_same_camera: leave out gallery images of the query's identity taken by the
        query's camera, as the evaluation protocols do (neither right nor wrong answers). Junk
        (pid -1) is always left out.
    :param overwrite: replace existing pictures. Otherwise an existing file is an error, raised
        before anything is computed or written.
    :returns: one :class:`MatchPicture` per distinct query, in the order given.
    """
    check_matching_method(method)
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if dataset.protocol.pooled:
        raise ValueError(
            f"this target's protocol ({type(dataset.protocol).__name__}) draws query and gallery "
            "from one pool itself: there is no fixed query set to picture"
        )
    num_query = dataset.num_query
    chosen = list(dict.fromkeys(int(q) for q in queries))
    if not chosen:
        raise ValueError("no queries given")
    outside = [q for q in chosen if not 0 <= q < num_query]
    if outside:
        raise IndexError(
            f"query index {', '.join(map(str, outside))} out of range: the target has "
            f"{num_query} queries (indices 0 to {num_query - 1})"
        )
    samples = dataset.samples
    gallery_samples = samples[num_query:]
    if not gallery_samples:
        raise ValueError("the target has no gallery")
    out_dir = Path(out_dir)
    paths = [out_dir / f"query_{q}.png" for q in chosen]
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"not overwriting {', '.join(existing)}: choose another folder, or allow it with "
            "overwrite=True (overwrite=true on the command line)"
        )

    device = next(method.parameters()).device
    matcher: QAConvMatcher = method.matcher
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            query_maps = torch.cat(
                list(_feature_maps(method, dataset, chosen, batch_size, num_workers, device))
            )
            n = query_maps.shape[2] * query_maps.shape[3]
            if n != matcher.num_locations:
                raise ValueError(
                    f"the target's images give {query_maps.shape[2]} x {query_maps.shape[3]} "
                    f"feature maps, the matcher was built for {matcher.num_locations} locations: "
                    "use the input size the method was trained with"
                )
            gallery = range(num_query, len(samples))
            scores = torch.cat(
                [
                    matcher.scores_in_chunks(query_maps, maps).cpu()
                    for maps in _feature_maps(
                        method, dataset, gallery, batch_size, num_workers, device
                    )
                ],
                dim=1,
            )  # [Q, G]
            rankings = _rank(
                scores, [samples[q] for q in chosen], gallery_samples, top, exclude_same_camera
            )
            out_dir.mkdir(parents=True, exist_ok=True)
            pictures = []
            for row, (q, path, (order, kept)) in enumerate(
                zip(chosen, paths, rankings, strict=True)
            ):
                indices = [num_query + int(j) for j in order]
                maps = torch.cat(
                    list(_feature_maps(method, dataset, indices, batch_size, num_workers, device))
                )
                query = samples[q]
                picture = draw_ranked_matches(
                    read_image(query.path),
                    [read_image(samples[i].path) for i in indices],
                    [location_matches(query_maps[row], item, matcher) for item in maps],
                    query.pid,
                    [samples[i].pid for i in indices],
                    top_k,
                    height,
                    f"query {q}: pid {query.pid}, camera {query.camid}; "
                    f"top {len(indices)} of {kept}",
                )
                # "xb" fails if the file appeared since the check: nothing is replaced silently.
                with open(path, "wb" if overwrite else "xb") as file:
                    picture.save(file, format="PNG")
                pictures.append(MatchPicture(path, q, indices, scores[row, order].tolist()))
    finally:
        method.train(was_training)
    return pictures


def _rank(
    scores: Tensor,
    queries: Sequence[Sample],
    gallery: Sequence[Sample],
    top: int,
    exclude_same_camera: bool,
) -> list[tuple[Tensor, int]]:
    """Per query row of ``scores [Q, G]``: the gallery positions of its ``top`` best kept
    results, best first (ties in gallery order), and how many gallery items were kept."""
    return [
        top_results(-scores[row], query, gallery, top, exclude_same_camera)
        for row, query in enumerate(queries)
    ]


# ---------------------------------------------------------------------------------- the CLI
def pictures_from_config(cfg: DictConfig) -> list[MatchPicture]:
    """The CLI without Hydra's wrapper: rebuilds the checkpoint's method and writes the
    pictures (see ``conf/viz_matches.yaml`` for the keys)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    method = load_method(cfg.ckpt)
    check_matching_method(method, "this checkpoint's method")
    method.to(device)
    datamodule = checkpoint_datamodule(cfg.data, method)
    dataset = target_dataset(datamodule, cfg.target)
    queries = list(cfg.queries) if OmegaConf.is_list(cfg.queries) else [cfg.queries]
    pictures = write_match_pictures(
        method,
        dataset,
        queries,
        cfg.out_dir,
        top=cfg.top,
        top_k=cfg.lines,
        height=cfg.height,
        batch_size=datamodule.eval_batch_size,
        num_workers=datamodule.num_workers,
        exclude_same_camera=cfg.exclude_same_camera,
        overwrite=cfg.overwrite,
    )
    for picture in pictures:
        results = ", ".join(
            f"{index} ({score:.3f})"
            for index, score in zip(picture.gallery, picture.scores, strict=True)
        )
        print(f"query {picture.query}: {picture.path}  results: {results}")
    return pictures


@hydra.main(version_base="1.3", config_path="pkg://reidgen.conf", config_name="viz_matches")
def main(cfg: DictConfig) -> None:
    pictures_from_config(cfg)


if __name__ == "__main__":
    main()
