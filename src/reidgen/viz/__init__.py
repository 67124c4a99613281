"""Visualisations of what trained methods do.

:mod:`reidgen.viz.qaconv_matches`: which locations of a query and a gallery image QAConv matched,
written as PNG (``python -m reidgen.viz.qaconv_matches``).
"""
