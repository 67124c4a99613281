"""SynthPerson: the embedded procedural person re-identification dataset.

Generated on first use, never downloaded. See :mod:`reidgen.data.synthperson.generate` for the
on-disk layout and :mod:`reidgen.data.synthperson.style` for domains.
"""

from reidgen.data.synthperson.dataset import index_synthperson, load_structure, structure_path
from reidgen.data.synthperson.generate import SynthPersonSpec, ensure_synthperson
from reidgen.data.synthperson.presets import PRESETS, Preset
from reidgen.data.synthperson.style import BUILTIN_DOMAINS, DomainStyle, load_domain_style

__all__ = [
    "BUILTIN_DOMAINS",
    "PRESETS",
    "DomainStyle",
    "Preset",
    "SynthPersonSpec",
    "ensure_synthperson",
    "index_synthperson",
    "load_domain_style",
    "load_structure",
    "structure_path",
]
