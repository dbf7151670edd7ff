"""Once-for-All weight sharing for the mbconv space (Cai et al., ICLR 2020).

:mod:`hwnas.ofa.elastic` is the elastic supernet (width, depth, kernel and expansion; every
arch of :class:`~hwnas.spaces.mbconv.MBConvSpace` is one of its subnets, extracted as the
space's own network); :mod:`hwnas.ofa.train` trains it with the sandwich rule, checkpointed
and resumable, and re-estimates a subnet's BatchNorm statistics. The ``supernet`` evaluator
(:mod:`hwnas.evaluate.supernet`) scores search candidates with it.
"""
