"""Data: dataset indexers, the embedded SynthPerson generator, transforms, samplers."""
