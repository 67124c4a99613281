"""The ranked-list picture every method shares (as torchreid draws it): a query, then its top
results left to right, each framed by what it is.

* :func:`result_marks`: ``"correct"`` (the query's identity), ``"wrong"`` or ``"junk"`` (a junk
  image, or the query's identity in the query's camera: neither right nor wrong to the protocol);
* :func:`draw_ranked_list`: the row, each result framed in its mark's colour (no frame where the
  identities are unknown, e.g. a search in unlabelled crops) with its rank and distance below.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from reidgen.eval.ranking import JUNK_PID
from reidgen.eval.target import EvalTarget
from reidgen.viz.drawing import ImageLike, panel_size, to_pil

MARK_COLOURS = {"correct": (0, 170, 0), "wrong": (220, 0, 0), "junk": (150, 150, 150)}
QUERY_COLOUR = (20, 20, 20)
BORDER = 4
GAP = 12
CAPTION_HEIGHT = 18
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def result_marks(target: EvalTarget, query: int, results: Sequence[int]) -> list[str]:
    """The mark of each of ``results`` (dataset indices) for ``query`` (a dataset index)."""
    marks = []
    for index in results:
        pid, camid = int(target.pids[index]), int(target.camids[index])
        same = pid == int(target.pids[query])
        if pid == JUNK_PID or (same and camid == int(target.camids[query])):
            marks.append("junk")
        else:
            marks.append("correct" if same else "wrong")
    return marks


def draw_ranked_list(
    query: ImageLike,
    results: Sequence[ImageLike],
    marks: Sequence[str | None],
    captions: Sequence[str],
    height: int = 256,
    query_caption: str = "query",
) -> Image.Image:
    """One row: ``query``, a gap, then ``results`` best first, every image at the query's panel
    size inside a ``BORDER``-pixel frame (black for the query, a result's by its mark in
    ``MARK_COLOURS``, white for ``None``), its caption underneath.

    :param marks: one per result: ``"correct"``, ``"wrong"``, ``"junk"`` or ``None`` (unknown).
    :param captions: one per result, e.g. ``"#1 0.213"``.
    :param height: the images' minimum height in pixels (never shrunk).
    """
    if not len(results) == len(marks) == len(captions):
        raise ValueError(
            f"one mark and one caption per result: {len(results)} results, {len(marks)} marks, "
            f"{len(captions)} captions"
        )
    unknown = sorted({str(m) for m in marks if m is not None and m not in MARK_COLOURS})
    if unknown:
        raise ValueError(f"unknown mark(s) {unknown}; marks are {', '.join(MARK_COLOURS)} or None")
    width, image_height = panel_size(query, height)
    cell_width, cell_height = width + 2 * BORDER, image_height + 2 * BORDER
    picture = Image.new(
        "RGB",
        (cell_width * (1 + len(results)) + GAP, cell_height + CAPTION_HEIGHT),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(picture)
    frames = [QUERY_COLOUR, *(MARK_COLOURS[m] if m else _BACKGROUND for m in marks)]
    texts = [query_caption, *captions]
    for position, (image, frame, text) in enumerate(
        zip([query, *results], frames, texts, strict=True)
    ):
        left = position * cell_width + (GAP if position else 0)
        draw.rectangle((left, 0, left + cell_width - 1, cell_height - 1), fill=frame)
        panel = to_pil(image).resize((width, image_height), Image.Resampling.NEAREST)
        picture.paste(panel, (left + BORDER, BORDER))
        draw.text((left + 2, cell_height + 3), text, fill=_TEXT)
    return picture
