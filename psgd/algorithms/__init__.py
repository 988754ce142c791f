"""Plain maths the built-in codecs call: no sockets, no threads, no psgd state.

Owns: robust aggregation, model-averaging and DC-ASGD updates, federated helpers,
gradient compression and bit packing, and the attacks used in robustness experiments.

May import: the contract (``psgd.errors``) and numpy only.
"""
