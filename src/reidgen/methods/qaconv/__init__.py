"""QAConv (Liao & Shao, ECCV 2020; QAConv-GS, CVPR 2022): query-adaptive convolution matching.

:mod:`.matcher` holds the matcher/head (:class:`~.matcher.QAConvMatcher`), shared by training
and memory-bounded evaluation. See ``docs/methods/qaconv.md`` §3.
"""
