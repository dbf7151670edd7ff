"""Differentiable architecture search with latency in the loss (DARTS, ProxylessNAS, FBNet).

A supernet holds every choice of a space at once; each *decision* (an NB201 edge, an MBConv
layer) mixes its candidate ops with weights from architecture parameters (alphas). Training
alternates weight steps on the training split with alpha steps on the validation split; the
derived architecture takes the strongest choice of each decision.
"""
