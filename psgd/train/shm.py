"""Messages between the scheduler and executor processes, through shared memory files.

A model is ~1 MB of frames; sent through a pipe it crosses in 64 KB pieces, each a wake-up of
the other process, and a busy receiver stalls the sender. Instead the sender writes a
message's frames once into a file in shared memory (``/dev/shm`` where there is one; one file
serves every client the message goes to) and the pipe carries only its ``SharedFrames``
reference: the path and the frame sizes. A reader takes one copy of the bytes (codecs may keep
the arrays they receive, so they must not point into a file that goes away) and the owner
removes the file once every reader is done.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SEGMENT_DIR",
    "SharedFrames",
    "put_frames",
    "put_messages",
    "read_frames",
    "release",
    "job_prefix",
    "remove_all",
    "remove_stale",
    "take_messages",
]

#: Where message files live: memory-backed on Linux, the temp folder elsewhere.
SEGMENT_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


@dataclass(frozen=True)
class SharedFrames:
    """Where a message's frames are: a file, the message's offset in it, each frame's size."""

    path: str
    sizes: tuple[int, ...]
    offset: int = 0


def put_frames(frames: list[bytes], prefix: str = "psgd") -> SharedFrames:
    """Write ``frames`` to a new file; the caller owns it (``release`` it when done)."""
    return put_messages([frames], prefix)[0]


def put_messages(messages: list[list[bytes]], prefix: str = "psgd") -> list[SharedFrames]:
    """Write several messages into one new file; one reference each, all to that file."""
    path = str(SEGMENT_DIR / f"{prefix}-{secrets.token_hex(6)}")
    refs, offset = [], 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb", buffering=0) as file:
        for frames in messages:
            sizes = tuple(len(frame) for frame in frames)
            refs.append(SharedFrames(path, sizes, offset))
            for frame in frames:
                file.write(frame)
            offset += sum(sizes)
    return refs


def read_frames(ref: SharedFrames) -> list[memoryview]:
    """The frames of ``ref``: views of one private copy of them (the file stays)."""
    with open(ref.path, "rb", buffering=0) as file:
        file.seek(ref.offset)
        data = memoryview(file.read(sum(ref.sizes)))
    return _split(data, ref.sizes)


def take_messages(refs: list[SharedFrames]) -> list[list[memoryview]]:
    """The frames of every ref (each file read once), then the files are removed."""
    files: dict[str, memoryview] = {}
    for ref in refs:
        if ref.path not in files:
            with open(ref.path, "rb", buffering=0) as file:
                files[ref.path] = memoryview(file.read())
    taken = [_split(files[r.path][r.offset : r.offset + sum(r.sizes)], r.sizes) for r in refs]
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return taken


def _split(data: memoryview, sizes: tuple[int, ...]) -> list[memoryview]:
    frames, offset = [], 0
    for size in sizes:
        frames.append(data[offset : offset + size])
        offset += size
    return frames


def release(ref: SharedFrames) -> None:
    """Remove the file of ``ref`` (its readers have what they need)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ref.path)


def remove_all(prefix: str) -> None:
    """Remove every file a job's processes left (executors killed mid-run)."""
    for leftover in SEGMENT_DIR.glob(f"{prefix}-*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def job_prefix() -> str:
    """A prefix for one job's files that names the process owning them: ``psgd-<pid>-<hex>``."""
    return f"psgd-{os.getpid()}-{secrets.token_hex(3)}"


def remove_stale() -> int:
    """Remove the files of jobs whose process is gone (killed before it could clean up)."""
    removed = 0
    for path in SEGMENT_DIR.glob("psgd-*-*"):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
