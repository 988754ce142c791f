"""Training: what a node computes and how its codecs are driven.

Owns: the trainer loop, the SSGD/ASGD sync drivers, in-process simulation and its network,
job preparation (data, partitions, models, codec classes), and checkpoints.

May import: ``psgd.results``, ``psgd.net``, ``psgd.algorithms``, ``psgd.nn``, ``psgd.data``
and the contract; never ``psgd.cluster`` or ``psgd.cli``.
"""
