"""SynthPerson: the embedded procedural person re-identification dataset.

Generated on first use, never downloaded; ``python -m reidgen.synthperson`` is its command line.
See :mod:`reidgen.synthperson.generate` for the on-disk layout (Market-1501's, so
:mod:`reidgen.data.datasets.synthperson` reads it like any other dataset) and
:mod:`reidgen.synthperson.style` for domains.
"""

from reidgen.synthperson.generate import SynthPersonSpec, ensure_synthperson
from reidgen.synthperson.presets import PRESETS, Preset
from reidgen.synthperson.style import BUILTIN_DOMAINS, DomainStyle, load_domain_style

__all__ = [
    "BUILTIN_DOMAINS",
    "PRESETS",
    "DomainStyle",
    "Preset",
    "SynthPersonSpec",
    "ensure_synthperson",
    "load_domain_style",
]
