"""AlignedReID (Zhang et al., 2017, arXiv 1711.08184) with mutual learning: a global feature plus
``H`` horizontal-stripe local features per image, whose shortest-path local distance
(:mod:`.local_distance`) aligns body parts during training; see ``docs/methods/alignedreid.md``.
"""
