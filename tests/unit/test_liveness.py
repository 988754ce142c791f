"""Reading what is waiting before a peer is called silent (real ZeroMQ sockets, loopback)."""

from __future__ import annotations

import time

import pytest
import zmq
from loopback import loopback_pair

from psgd.cluster.liveness import take_waiting


@pytest.fixture
def pair():
    with loopback_pair(zmq.PULL, zmq.PUSH) as (reader, writer):
        yield reader, writer


def test_messages_that_waited_unread_are_all_handled(pair):
    reader, writer = pair
    for n in range(5):  # heartbeats that came while this side was stalled
        writer.send(b"%d" % n)
    got: list[bytes] = []
    assert take_waiting(reader, lambda: got.append(reader.recv()), grace_s=2.0)
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_a_silent_peer_costs_only_the_grace(pair):
    reader, _ = pair
    start = time.monotonic()
    assert not take_waiting(reader, reader.recv, grace_s=0.2)
    assert 0.15 <= time.monotonic() - start < 2.0


def test_a_peer_that_keeps_talking_cannot_hold_the_checker_past_the_grace(pair):
    reader, writer = pair
    for _ in range(500):
        writer.send(b"x")
    handled = []

    def slow_handler() -> None:  # 500 messages at 2 ms each would take a second
        reader.recv()
        handled.append(time.monotonic())
        time.sleep(0.002)

    start = time.monotonic()
    assert take_waiting(reader, slow_handler, grace_s=0.05)
    assert 1 <= len(handled) < 500 and handled[-1] - start < 0.5
