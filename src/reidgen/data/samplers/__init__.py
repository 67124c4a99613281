"""Samplers: P x K identity batches (optionally domain-balanced), the GS class-graph batches,
plain shuffled batches, epoch tagging of training indices, and evaluation sharding; all seeded and
DDP-aware.

Training samplers share :class:`~reidgen.data.samplers.base.EpochPlanSampler`'s protocol (exact
length, ``set_epoch``, ``state_dict``), which the data module relies on for resume.
"""

from reidgen.data.samplers.base import EpochPlanSampler
from reidgen.data.samplers.epoch_tagged import EpochTaggedSampler
from reidgen.data.samplers.graph import GraphSampler, nearest_classes
from reidgen.data.samplers.identity import RandomIdentitySampler, max_full_batches
from reidgen.data.samplers.shard import ShardSampler
from reidgen.data.samplers.shuffle import ShuffleSampler

__all__ = [
    "EpochPlanSampler",
    "EpochTaggedSampler",
    "GraphSampler",
    "RandomIdentitySampler",
    "ShardSampler",
    "ShuffleSampler",
    "max_full_batches",
    "nearest_classes",
]
