"""The records every dataset indexer returns and every other part of reidgen consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Sample:
    """One image of one identity.

    ``pid`` is the dataset's own identity number (0 marks a gallery distractor); training code
    relabels pids over all sources, keyed by ``dataset``. ``camid`` is 0-based. ``timestamp`` is in
    seconds on a per-camera clock, or ``None`` where the dataset has no time information.
    ``index`` is the position in its split's sorted list: stable across processes and runs.
    """

    path: str
    pid: int
    camid: int
    dataset: str
    index: int = -1
    timestamp: float | None = None
    domain: int = 0


@dataclass(frozen=True)
class Splits:
    """A dataset's three splits, each sorted by path with ``index`` set to the position.

    ``dropped`` counts what the protocol removed at index time (e.g. Market junk), per split, so
    that nothing disappears without a trace. ``variant`` names the layout or version the indexer
    found (e.g. ``"MSMT17_V2 trainval"``), and ``expected`` holds the published counts for it,
    ``{split: {"identities": int, "images": int, "cameras": int}}``, which validation compares with
    :meth:`summary` (``None`` where nothing is published, e.g. a user's own data).
    """

    name: str
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    dropped: dict[str, int] = field(default_factory=dict)
    variant: str = ""
    expected: dict[str, dict[str, int]] | None = None

    def __post_init__(self) -> None:
        for split in ("train", "query", "gallery"):
            samples = sorted(getattr(self, split), key=lambda s: s.path)
            object.__setattr__(self, split, [replace(s, index=i) for i, s in enumerate(samples)])

    def summary(self) -> dict[str, dict[str, int]]:
        """Identities, images and cameras per split (distractors are not counted as identities)."""
        return {
            split: {
                "identities": len({s.pid for s in samples if s.pid > 0}),
                "images": len(samples),
                "cameras": len({s.camid for s in samples}),
            }
            for split, samples in (
                ("train", self.train),
                ("query", self.query),
                ("gallery", self.gallery),
            )
        }
