"""The codec contract: names, semantics and return-value checks kept as Parallel-SGD has them."""

from __future__ import annotations

import threading
from typing import Tuple  # noqa: UP035

import numpy as np
import pytest

from psgd import BlockWeight, Codec, GlobalSettings, Parameter_Server, netEncapsulation
from psgd.codec import InvalidArguments, collect_packages
from psgd.errors import CodecError


class Echo(Codec):
    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        return netEncapsulation(1, block_weight.content)

    def receive_blocks(self, content):
        self.set_result(content)


def test_parallel_sgd_import_line_works():
    import psgd

    for name in ("Codec", "netEncapsulation", "BlockWeight", "GlobalSettings", "Parameter_Server"):
        assert hasattr(psgd, name)


def test_parameter_server_is_negative_and_not_a_worker_id():
    assert isinstance(Parameter_Server, int) and Parameter_Server < 0


def test_codec_is_abstract():
    with pytest.raises(TypeError):
        Codec(0)


def test_set_result_defaults_to_addition_and_get_result_clears():
    codec = Echo(3)
    assert codec.node_id == 3
    assert not codec.is_done()
    codec.set_result(np.ones(2))
    assert codec.is_done()
    codec.set_result(np.full(2, 2.0))
    np.testing.assert_array_equal(codec.get_result(), [3.0, 3.0])
    assert not codec.is_done()


def test_get_result_on_an_empty_buffer_is_a_clear_error():
    codec = Echo(0)
    with pytest.raises(CodecError, match=r"Echo.get_result\(\): no result .*is_done"):
        codec.get_result()


def test_set_result_on_an_empty_buffer_calls_the_operation_with_zero():
    codec = Echo(0)
    seen = []

    def merge(old, new):
        seen.append(old)
        return old + new  # Parallel-SGD's tutorial merges relying on the 0.0 start

    codec.set_result(np.full(2, 3.0), merge)
    codec.set_result(np.full(2, 1.0), merge)
    assert isinstance(seen[0], np.ndarray) and seen[0].shape == () and seen[0] == 0.0
    np.testing.assert_array_equal(seen[1], [3.0, 3.0])
    np.testing.assert_array_equal(codec.get_result(), [4.0, 4.0])


def test_net_encapsulation_has_parallel_sgd_names():
    package = netEncapsulation([1, 2], {"a": 1})
    assert not package.has_handled and not package.has_sent
    assert package.content == {"a": 1} and package.has_handled
    package.content = {"b": 2}
    assert package.content == {"b": 2}
    with pytest.raises(InvalidArguments, match="target"):
        netEncapsulation("node 1", 0)


def test_set_result_custom_operation_gets_old_then_new():
    codec = Echo(0)
    codec.set_result([1])
    codec.set_result([2], operation=lambda old, new: old + new + [9])
    assert codec.get_result() == [1, 2, 9]


def test_set_result_is_thread_safe():
    codec = Echo(0)
    threads = [
        threading.Thread(target=lambda: [codec.set_result(1) for _ in range(2000)])
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codec.get_result() == 16000


def test_save_yourself_defaults_to_none():
    assert Echo(0).do_something_to_save_yourself() is None


def test_net_encapsulation_targets_and_content():
    assert netEncapsulation(2, "x").target() == [2]
    assert sorted(netEncapsulation({1, 2}, "x").target()) == [1, 2]
    assert netEncapsulation((0, Parameter_Server), "x").target() == [0, Parameter_Server]
    assert netEncapsulation(np.int64(4), "x").target() == [4]
    assert netEncapsulation([1], {"a": 1}).content == {"a": 1}


def test_net_encapsulation_is_generic():
    annotation = netEncapsulation[Tuple[int, np.ndarray]]  # noqa: UP006
    assert annotation is not None


@pytest.mark.parametrize("bad", ["0", 1.5, [1, "2"], None, True])
def test_net_encapsulation_rejects_bad_targets(bad):
    with pytest.raises(CodecError, match="target"):
        netEncapsulation(bad, 1)


def test_block_weight_fields():
    bw = BlockWeight(np.zeros(3), 5)
    assert bw.block_id == 5 and bw.content.shape == (3,)


def test_collect_packages_accepts_none_one_iterables_and_generators():
    codec = Echo(0)
    pkg = netEncapsulation(1, 0)
    assert collect_packages(codec, "update_blocks", None) == []
    assert collect_packages(codec, "update_blocks", pkg) == [pkg]
    assert collect_packages(codec, "update_blocks", [pkg, pkg]) == [pkg, pkg]
    assert collect_packages(codec, "update_blocks", (p for p in [pkg])) == [pkg]


@pytest.mark.parametrize("bad", [1, "text", {"a": 1}, [netEncapsulation(1, 0), 3]])
def test_collect_packages_names_class_method_and_type(bad):
    with pytest.raises(CodecError) as info:
        collect_packages(Echo(0), "receive_blocks", bad)
    message = str(info.value)
    assert "Echo.receive_blocks" in message
    assert type(bad).__name__ in message or "int" in message


def test_global_settings_get_params_defaults_to_zero():
    GlobalSettings.set_default(GlobalSettings(2, params={"local_steps": 5}))
    assert GlobalSettings.get_params("local_steps") == 5
    assert GlobalSettings.get_params("missing") == 0
    assert GlobalSettings.get_params("missing", 7) == 7
