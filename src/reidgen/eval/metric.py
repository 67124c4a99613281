"""Retrieval evaluation of one target as a torchmetrics ``Metric``.

The state is what each process saw: the feature parts of its images and their sample indices.
torchmetrics syncs the state across processes (shards of different sizes, no padding samples);
``compute`` puts the rows back in sample order (:func:`~reidgen.eval.gather.place_by_index`) and
runs :class:`~reidgen.eval.evaluator.Evaluator` with the target's own metadata
(:class:`~reidgen.eval.target.EvalTarget`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from reidgen.eval.evaluator import Comparison, Evaluator
from reidgen.eval.features import Features
from reidgen.eval.gather import place_by_index
from reidgen.eval.target import EvalTarget


class RetrievalEvaluation(Metric):
    """Features of one target in, the target's metrics out.

    :param target: the target's identities, cameras, timestamps, query count and protocol.
    :param part_names: the names of the method's feature parts (fixed, so that every process
        syncs the same states).
    :param evaluator: the test-time options.
    :param comparison: the method's distance and re-ranking input.
    """

    full_state_update = False

    def __init__(
        self,
        target: EvalTarget,
        part_names: Sequence[str],
        evaluator: Evaluator,
        comparison: Comparison,
    ) -> None:
        super().__init__(sync_on_compute=True)
        if not part_names:
            raise ValueError("a method's features need at least one named part")
        self.target = target
        self.part_names = tuple(part_names)
        self.evaluator = evaluator
        self.comparison = comparison
        self.add_state("index", default=[], dist_reduce_fx="cat")
        for name in self.part_names:
            self.add_state(self._state(name), default=[], dist_reduce_fx="cat")

    @staticmethod
    def _state(name: str) -> str:
        return f"part_{name}"

    def update(self, features: Features, index: Tensor) -> None:
        """Adds a batch: ``features`` of ``B`` images and their sample indices ``[B]``."""
        if features.names != self.part_names:
            raise ValueError(
                f"features have parts {features.names}, expected {self.part_names} (a method's "
                "parts must be the same for every batch)"
            )
        if len(features) != len(index):
            raise ValueError(f"{len(features)} feature rows but {len(index)} sample indices")
        self.index.append(index.long())
        for name in self.part_names:
            getattr(self, self._state(name)).append(features[name].detach())

    def compute(self) -> dict[str, float]:
        total = len(self.target)
        # After syncing a state is one tensor; a process that never updated has an empty list.
        if isinstance(self.index, list) and not self.index:
            raise RuntimeError(f"no evaluation features of {self.target.name} were collected")
        index = dim_zero_cat(self.index)
        features = Features(
            {
                name: place_by_index(dim_zero_cat(getattr(self, self._state(name))), index, total)
                for name in self.part_names
            }
        )
        metrics = self.evaluator.evaluate(features, self.target, self.comparison)
        return {
            **metrics,
            "num_query": self.target.num_query,
            "num_gallery": self.target.num_gallery,
        }
