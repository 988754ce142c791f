"""Training: what a node computes and how its codecs are driven.

Owns: the trainer loop, the SSGD/ASGD sync drivers, in-process simulation, its network and its
virtual clock (emulated links and devices), job preparation (data, partitions, models, codec
classes), checkpoints, and the round engine of federated jobs: virtual clients and their
executors, the in-process scheduler, the parameter server's round counting, a daemon's pool
of clients, and round evaluation.

May import: ``psgd.results``, ``psgd.net``, ``psgd.algorithms``, ``psgd.nn``, ``psgd.data``
and the contract; never ``psgd.cluster`` or ``psgd.cli``.
"""
