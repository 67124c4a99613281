"""Visualisations of what trained methods do, one PNG per chosen query of a test target.

* :mod:`reidgen.viz.ranked`: the core every picture shares: the target, the queries, their
  gallery ranked by the method's own test distance, and the picture files (written atomically,
  never replaced unless asked).
* :mod:`reidgen.viz.drawing`: image conversion, panel sizes and the colour ramp.
* :mod:`reidgen.viz.qaconv_matches`: which locations of a query and a gallery image QAConv
  matched (``python -m reidgen.viz.qaconv_matches``).
* :mod:`reidgen.viz.alignment`: which stripes of a query and a gallery image AlignedReID aligned
  (``python -m reidgen.viz.alignment``).
* :mod:`reidgen.viz.run_pictures`: what ``reidgen.run`` draws at the end of a run, for its
  folder and its loggers.
"""
