"""CI tests what the README promises: its test command, its quick start, its lowest versions."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _quickstart_module():
    spec = importlib.util.spec_from_file_location("ci_quickstart", ROOT / ".ci" / "quickstart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_test_command_is_what_ci_runs():
    blocks = re.findall(r"```bash\n(.*?)```", _section("Tests"), flags=re.S)
    assert blocks and blocks[0].strip() == "bash .ci/run"
    assert (ROOT / ".ci" / "run").read_text().startswith("#!/usr/bin/env bash\n")


def test_quick_start_commands_are_installed_commands_after_one_install_step():
    commands = _quickstart_module().quick_start_commands(README)
    assert commands == ["psgd-submit --local 2", "psgd-submit --simulate"]
    lines = re.findall(r"```bash\n(.*?)```", _section("Quick start"), flags=re.S)
    assert all(line.strip().startswith("pip install . && ") for line in lines)


def test_quick_start_parser_refuses_a_readme_without_one():
    with pytest.raises(ValueError, match="Quick start"):
        _quickstart_module().quick_start_commands("# psgd\n\nno quick start here\n")


def _lower_bounds(requirements: list[str]) -> dict[str, str]:
    bounds = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement.replace(" ", ""))
        assert match, f"pyproject.toml: {requirement!r} has no plain lower bound"
        bounds[match[1].lower()] = match[2]
    return bounds


def test_lowest_constraints_pin_exactly_the_lower_bounds_of_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _lower_bounds(project["dependencies"] + project["optional-dependencies"]["test"])
    pins = {}
    for line in (ROOT / ".ci" / "constraints-lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    # a pin may spell a bound in full (pyzmq>=25.0 is pinned as 25.0.0)
    assert set(pins) == set(declared)
    for name, bound in declared.items():
        assert pins[name].split(".")[: len(bound.split("."))] == bound.split("."), name
