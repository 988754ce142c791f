"""docs/tutorial.md, run as a reader would: every file written, every command run, in order.

Conventions of the tutorial: a ```` ```python file=PATH ```` (or ``json``) block is a file to
write; each line of a ```` ```bash ```` block is a command, run in one empty folder with the
installed commands first on ``PATH``; ``# exit N`` ends a command that must exit with N; a
command ending in ``&`` is a daemon started in the background (``--port N`` becomes
``--port 0`` and every later ``:N`` the port it chose). Each line of a ```` ```text ````
block must appear in the output of the command before it (any digits stand for any digits).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from psgd.cluster.local import wait_for_endpoint

pytestmark = pytest.mark.timeout(240)

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)
COMMAND_TIMEOUT_S = 120


@dataclass
class Step:
    kind: str  # "file", "command", "daemon" or "output"
    text: str
    path: str = ""
    exit_code: int = 0


def read_steps(markdown: str) -> list[Step]:
    steps = []
    for language, info, body in BLOCK.findall(markdown):
        target = re.search(r"file=(\S+)", info)
        if target:
            steps.append(Step("file", body, path=target[1]))
        elif language == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                command, _, comment = line.partition("  # ")
                command = command.strip()
                if not command or command.startswith("#"):
                    continue
                code = re.fullmatch(r"exit (\d+)", comment.strip())
                kind = "daemon" if command.endswith("&") else "command"
                steps.append(
                    Step(kind, command.rstrip("&").strip(), exit_code=int(code[1]) if code else 0)
                )
        elif language == "text":
            steps.append(Step("output", body))
    return steps


def _digits(text: str) -> str:
    return re.sub(r"\d+", "0", " ".join(text.split()))


def test_the_tutorial_reads_as_written_and_every_step_works(tmp_path):
    steps = read_steps(TUTORIAL.read_text(encoding="utf-8"))
    assert [s.kind for s in steps].count("command") >= 8, "the tutorial lost its commands"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    ports: dict[str, str] = {}
    daemons: list[subprocess.Popen[str]] = []

    def with_ports(text: str) -> str:
        for written, chosen in ports.items():
            text = text.replace(f":{written}", f":{chosen}")
        return text

    output = ""
    try:
        for step in steps:
            if step.kind == "file":
                target = tmp_path / step.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(with_ports(step.text), encoding="utf-8")
            elif step.kind == "daemon":
                argv = shlex.split(step.text)
                written = argv[argv.index("--port") + 1]
                argv[argv.index("--port") + 1] = "0"
                daemon = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, cwd=tmp_path, env=env)  # fmt: skip
                daemons.append(daemon)
                ports[written] = _port_of(daemon)
            elif step.kind == "command":
                done = subprocess.run(with_ports(step.text), shell=True, capture_output=True,
                                      text=True, cwd=tmp_path, env=env,
                                      timeout=COMMAND_TIMEOUT_S)  # fmt: skip
                output = done.stdout + done.stderr
                assert done.returncode == step.exit_code, f"$ {step.text}\n{output[-3000:]}"
                assert "Traceback" not in output, f"$ {step.text}\n{output[-3000:]}"
            else:
                for line in step.text.strip().splitlines():
                    assert _digits(line) in _digits(output), f"{line!r} not in:\n{output[-3000:]}"
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    assert all(d.returncode == 0 for d in daemons), "a daemon did not stop cleanly on SIGTERM"
    _assert_runs_agree(tmp_path / "runs")


def _port_of(daemon: subprocess.Popen[str]) -> str:
    """The port a ``--port 0`` daemon printed; its output keeps being drained afterwards."""
    return str(wait_for_endpoint(daemon).port)


def _assert_runs_agree(runs: Path) -> None:
    """The tutorial says the three runs reach the same accuracy; they must."""
    accuracy = {
        name: json.loads((runs / name / "summary.json").read_text())["accuracy"]
        for name in ("simulate", "local", "cluster")
    }
    assert len(set(accuracy.values())) == 1, accuracy
    assert (runs / "compare.png").is_file() and (runs / "compare.csv").is_file()
