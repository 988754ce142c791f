"""worker.json parsing: Parallel-SGD's format, errors that name the field and the value."""

from __future__ import annotations

import json

import pytest

from psgd.cluster.workers import DEFAULT_PORT, Endpoint, load_workers, parse_endpoint
from psgd.errors import ConfigError


def write(tmp_path, data):
    path = tmp_path / "worker.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_hosts_with_and_without_ports(tmp_path):
    listed = load_workers(write(tmp_path, {"PS": "10.0.0.1", "Worker": ["a:1", "a:2", "b"]}))
    assert listed.ps == Endpoint("10.0.0.1", DEFAULT_PORT)
    assert listed.workers == [Endpoint("a", 1), Endpoint("a", 2), Endpoint("b", DEFAULT_PORT)]
    assert listed.workers[0].address == "tcp://a:1"


def test_ps_is_optional(tmp_path):
    assert load_workers(write(tmp_path, {"Worker": ["h"]})).ps is None


def test_ipv6_endpoints():
    assert parse_endpoint("[::1]:9", "w") == Endpoint("::1", 9)
    assert Endpoint("::1", 9).address == "tcp://[::1]:9"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"Worker": ["h", 42]}, r'Worker\[1\]: expected "host" or "host:port", got 42'),
        ({"Worker": ["h:99999"]}, r"Worker\[0\]: port must be 1..65535"),
        ({"Worker": ["h:x"]}, r"Worker\[0\]: port must be"),
        ({"Worker": []}, "Worker: expected a non-empty list"),
        ({"Worker": ["h:1", "h:1"]}, r"Worker\[1\]: h:1 is listed twice \(also Worker\[0\]\)"),
        ({"PS": "h:1", "Worker": ["h:1"]}, r"Worker\[0\]: h:1 is listed twice \(also PS\)"),
        ({"Workers": ["h"]}, "unknown fields"),
        ("[1, 2]", "expected an object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_worker_json_names_field_and_value(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        load_workers(write(tmp_path, data))


def test_missing_file_suggests_local(tmp_path):
    with pytest.raises(ConfigError, match="--local"):
        load_workers(tmp_path / "nope.json")
