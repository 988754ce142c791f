"""Print the commands of README.md's "Quick start", one a line, without their install step.

``.ci/run`` installs the wheel it built (for ``pip install .``) and runs each printed command
from an empty folder: the quick start a user reads is the one CI runs.

    python .ci/quickstart.py README.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

INSTALL = re.compile(r"^pip install [^&]*&&\s*")


def quick_start_commands(readme: str) -> list[str]:
    """The shell lines of the bash blocks under ``## Quick start``, install prefix removed."""
    if "\n## Quick start" not in readme:
        raise ValueError("README.md has no '## Quick start' section")
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            line = INSTALL.sub("", line.strip())
            if line and not line.startswith("#"):
                commands.append(line)
    if not commands:
        raise ValueError("README.md's Quick start holds no bash command")
    return commands


if __name__ == "__main__":
    print("\n".join(quick_start_commands(Path(sys.argv[1]).read_text(encoding="utf-8"))))
