"""Messages through shared memory files: round trips, one file per batch, stale files removed."""

from __future__ import annotations

import subprocess
import sys

from psgd.train.shm import (
    SEGMENT_DIR,
    job_prefix,
    put_frames,
    put_messages,
    read_frames,
    release,
    remove_all,
    remove_stale,
    take_messages,
)


def test_frames_come_back_as_written_and_release_removes_the_file():
    prefix = job_prefix()
    ref = put_frames([b"header", b"", bytes(range(256)) * 10], prefix)
    assert [bytes(f) for f in read_frames(ref)] == [b"header", b"", bytes(range(256)) * 10]
    assert [bytes(f) for f in read_frames(ref)][0] == b"header"  # a reader leaves the file
    release(ref)
    assert not list(SEGMENT_DIR.glob(f"{prefix}-*"))


def test_several_messages_share_one_file_and_are_taken_once():
    prefix = job_prefix()
    refs = put_messages([[b"a", b"bb"], [b"ccc"], [b"dddd", b"e"]], prefix)
    assert len({ref.path for ref in refs}) == 1
    taken = take_messages(refs)
    assert [[bytes(f) for f in m] for m in taken] == [[b"a", b"bb"], [b"ccc"], [b"dddd", b"e"]]
    assert not list(SEGMENT_DIR.glob(f"{prefix}-*"))


def test_files_of_dead_processes_are_removed_and_live_ones_kept():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = SEGMENT_DIR / f"psgd-{dead}-abcdef-0123456789ab"
    stale.write_bytes(b"left by a killed job")
    live = put_frames([b"still in use"], job_prefix())
    assert remove_stale() >= 1
    assert not stale.exists()
    assert bytes(read_frames(live)[0]) == b"still in use"
    remove_all(live.path.rsplit("-", 1)[0].rsplit("/", 1)[-1])
