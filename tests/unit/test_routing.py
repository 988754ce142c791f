"""Round jobs' data plane: who hosts which virtual client, and what a member accepts."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
import zmq

from psgd import Parameter_Server
from psgd.errors import CodecError
from psgd.net import protocol
from psgd.net.routing import Placement, RoutedChannel

JOB = "routing-test"


@pytest.mark.parametrize(("clients", "pools"), [(10, 3), (1000, 4), (7, 7), (5, 1)])
def test_pools_split_the_clients_into_contiguous_ranges_differing_by_at_most_one(clients, pools):
    placement = Placement(clients, pools)
    ranges = [placement.range_of(p) for p in range(pools)]
    assert [n for r in ranges for n in r] == list(range(clients))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    for pool, hosted in enumerate(ranges):
        assert all(placement.owner(n) == pool and placement.hosts(pool, n) for n in hosted)
    assert placement.owner(Parameter_Server) == Parameter_Server
    with pytest.raises(KeyError):
        placement.owner(clients)


def test_more_pools_than_clients_is_refused():
    with pytest.raises(ValueError, match="3 pools for 2 clients"):
        Placement(2, 3)


@pytest.fixture
def members():
    """The PS and two pools of a 6-client job, connected over loopback."""
    context = zmq.Context()
    secret = secrets.token_bytes(32)
    placement = Placement(6, 2)  # pool 0: clients 0..2, pool 1: clients 3..5
    channels = {
        member: RoutedChannel(context, member, JOB, "127.0.0.1", lambda: False, secret=secret)
        for member in (Parameter_Server, 0, 1)
    }
    peers = {member: channel.address for member, channel in channels.items()}
    for channel in channels.values():
        channel.place(placement)
        channel.connect(peers)
    yield channels, context, secret
    for channel in channels.values():
        channel.close()
    context.term()


def _package(src: int, value: float) -> list[bytes]:
    items = [(0, np.full(3, value, dtype=np.float32))]
    return [bytes(f) for f in protocol.make_packages(JOB, src, items)]


def _receive(channel: RoutedChannel, count: int = 1) -> list:
    got: list = []
    for _ in range(50):
        got += channel.receive(0.1)
        if len(got) >= count:
            break
    return got


def test_a_package_reaches_each_hosting_pool_once_with_its_round(members):
    channels, _, _ = members
    sent = channels[Parameter_Server].send_frames([0, 2, 4], _package(Parameter_Server, 1.5), 3)
    assert sent == len(b"".join(_package(Parameter_Server, 1.5))) * 3  # counted per client
    (first,) = _receive(channels[0])
    (second,) = _receive(channels[1])
    assert (first.to, first.round_no, second.to, second.round_no) == ([0, 2], 3, [4], 3)
    assert first.message["src"] == Parameter_Server
    np.testing.assert_array_equal(first.message.content[0], np.full(3, 1.5, dtype=np.float32))


def test_a_client_update_carries_its_run_stats_to_the_server(members):
    channels, _, _ = members
    run = {"steps": 6, "samples": 60, "loss_sum": 1.25, "bytes_sent": 99, "train_s": 0.5}
    channels[1].send_frames([Parameter_Server], _package(4, 2.0), 2, {**run, "losses": [0.5]})
    (routed,) = _receive(channels[Parameter_Server])
    assert routed.message["src"] == 4 and routed.round_no == 2
    assert routed.run == {k: float(v) for k, v in run.items()} and routed.batch_losses == [0.5]


def test_packages_between_clients_of_one_pool_never_touch_a_socket(members):
    channels, _, _ = members
    channels[0].send_frames([1, 2], _package(0, 3.0))
    (routed,) = channels[0].receive(0.0)
    assert routed.to == [1, 2] and routed.message["src"] == 0
    assert channels[0].dropped == 0


def test_a_target_outside_the_job_is_the_codecs_error(members):
    channels, _, _ = members
    with pytest.raises(CodecError, match="target 6 is not a node of this job"):
        channels[0].send_frames([6], _package(0, 1.0))


@pytest.mark.parametrize(
    ("receiver", "to", "src", "why"),
    [
        (1, [1], 0, "not all hosted by 1"),  # pool 0's own client, sent to pool 1
        (Parameter_Server, [Parameter_Server], 4, "claims to be node 4, not hosted by 0"),
        (Parameter_Server, [], 0, "not all hosted"),
    ],
)
def test_a_misrouted_or_forged_package_is_dropped_and_counted(
    members, receiver, to, src, why, caplog
):
    channels, _, _ = members
    envelope = protocol.make(protocol.ROUTE, job=JOB, to=to)
    channels[0].peers[receiver].send_multipart([*envelope, *_package(src, 1.0)])  # a member
    target = channels[receiver]
    for _ in range(50):
        assert target.receive(0.1) == []
        if target.dropped:
            break
    assert target.dropped == 1
    assert why in caplog.text
