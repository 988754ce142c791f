"""--param keys: codecs declare theirs, a key no codec reads is named, describe lists them."""

from __future__ import annotations

import ast
import json

import pytest
from click.testing import CliRunner

from psgd import Codec, GlobalSettings, Parameter_Server
from psgd.cli.submit import submit
from psgd.codec_params import declared_params, describe_codec, unknown_at_start, unread_warnings
from psgd.errors import CodecError, CodecNotFound
from psgd.loader import BUILTIN_CODECS_DIR, resolve_codec
from psgd.testing import check_ps
from psgd.testing.scripts import main as scripts_main

pytestmark = pytest.mark.timeout(60)

TINY = ["--train-samples", "400", "--test-samples", "100", "--epochs", "1"]


class Base(Codec):
    params = {"alpha": (1, "the first")}

    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        return None

    def receive_blocks(self, content):
        return None


class Child(Base):
    params = {"beta": (2.0, "the second"), "alpha": (3, "overridden")}


class Undeclared(Base.__mro__[1]):  # Codec itself: declares nothing
    def dispose(self):
        pass

    def update_blocks(self, block_weight):
        return None

    def receive_blocks(self, content):
        return None


def test_declarations_add_up_along_the_class_hierarchy():
    assert declared_params(Child) == {"alpha": (3, "overridden"), "beta": (2.0, "the second")}
    assert declared_params(Undeclared) is None


def test_a_malformed_declaration_names_the_class_and_the_key():
    bad = type("Bad", (Base,), {"params": {"gamma": 5}})
    with pytest.raises(CodecError, match=r"Bad.params\['gamma'\]: expected \(default, 'help"):
        declared_params(bad)
    other_use = type("OtherUse", (Undeclared,), {"params": ["weights", "bias"]})
    assert declared_params(other_use) is None  # not a dict: not a declaration


def test_a_misspelled_key_is_named_with_what_the_codecs_read():
    warnings = unread_warnings({"lcoal_steps": 5, "beta": 1}, [Child], {"seed"})
    assert warnings == [
        "--param lcoal_steps=5 was never read; Child reads alpha, beta; the codecs also read seed"
    ]
    assert "(did you mean alpha?)" in unread_warnings({"alpah": 1}, [Child], set())[0]
    assert unknown_at_start({"alpah": 1}, [Child])[0].startswith("--param alpah=1 is not a")
    assert unknown_at_start({"alpah": 1}, [Child, Undeclared]) == []  # it may read anything


def _builtin_classes() -> list[str]:
    names = []
    for path in sorted(BUILTIN_CODECS_DIR.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                names.append(f"{path.stem}.{node.name}")
    return names


@pytest.mark.parametrize("name", _builtin_classes())
def test_every_builtin_codec_declares_every_key_it_reads_when_built(name):
    try:
        cls = resolve_codec(name)
    except CodecNotFound:
        pytest.skip(f"{name} is a helper (a mix-in), not a codec")
    declared = declared_params(cls)
    assert declared is not None, f"{name} declares no params"
    settings = GlobalSettings(5, params={"dc_learn_rate": 0.1} if "DCASGD" in name else None)
    settings.learn_rate = 0.01
    GlobalSettings.set_default(settings)
    server = "Server" in name or name.startswith("robust.")
    cls(Parameter_Server if server else 0).dispose()
    assert GlobalSettings.params_read() <= set(declared), name


def test_a_job_names_the_key_no_codec_read_at_start_and_end(tmp_path):
    result = CliRunner().invoke(
        submit,
        ["--simulate", *TINY, "--codec", "fedavg.FedAvgClient", "--ps-codec",
         "fedavg.FedAvgServer", "--param", "lcoal_steps=5", "--param", "local_steps=3",
         "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    start = "warning: --param lcoal_steps=5 is not a declared parameter; FedAvgClient reads "
    end = "warning: --param lcoal_steps=5 was never read; FedAvgClient reads local_steps"
    assert start in result.output and end in result.output
    assert result.output.index(start) < result.output.index("job ") < result.output.index(end)
    assert "did you mean local_steps?" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params_unread"] == ["lcoal_steps"]


def test_keys_read_by_the_codecs_raise_no_warning(tmp_path):
    result = CliRunner().invoke(
        submit, ["--simulate", *TINY, "--codec", "averaging.ModelAverage", "--param",
                 "block_steps=2", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_codec_scripts_warn_of_an_unread_key():
    check = check_ps("fedavg.FedAvgClient", "fedavg.FedAvgServer", params={"lcoal_steps": 2})
    check.assert_ok()
    assert "warning: --param lcoal_steps=2 was never read" in check.table()
    quiet = check_ps("fedavg.FedAvgClient", "fedavg.FedAvgServer", params={"local_steps": 2})
    assert not quiet.warnings


def test_describe_lists_declared_parameters_with_defaults_and_help():
    result = CliRunner().invoke(scripts_main, ["describe", "averaging.BMUF", "plain.Plain"])
    assert result.exit_code == 0, result.output
    assert "averaging.BMUF\n  Blockwise model-update filtering" in result.output
    assert "bmuf_zeta      block learning rate, > 0 (default: 1.0)" in result.output
    assert "block_steps" in result.output  # inherited from ModelAverage
    assert "plain.Plain" in result.output and "parameters: none" in result.output
    assert "parameters: none declared" in describe_codec(Undeclared)
    missing = CliRunner().invoke(scripts_main, ["describe", "fedavg.FedAvgClien"])
    assert missing.exit_code == 2 and "did you mean FedAvgClient?" in missing.output
