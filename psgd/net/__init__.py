"""The wire and the sockets: how bytes move between psgd processes.

Owns: the wire encoding (msgpack header + raw array frames, decoded under an allow-list),
the closed set of protocol messages, ZeroMQ sockets and peer channels, heartbeat constants,
CURVE security and key folders, handshake monitoring, bounded logs of dropped and refused
traffic, codec source bundles, and the routed data plane of round jobs on daemons (virtual
clients hosted by a few members).

May import: the contract (``psgd.codec``, ``psgd.errors``, ``psgd.loader``, ...) only.
"""
