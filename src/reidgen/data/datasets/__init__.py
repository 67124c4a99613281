"""Dataset indexers: each turns a folder into :class:`~reidgen.data.sample.Splits`; no torch."""
