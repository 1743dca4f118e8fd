"""The reaper (launch/reaper.sh) on its own: what it kills and unlinks when its parent's pipe
closes, what it refuses, and that signals do not end it. Its use by the launcher and the agent
is tested end to end in test_no_orphans.py and test_hosts.py."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import poll_for

from flujo.launch.reaper import SCRIPT, SHELL, Reaper

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def groups() -> Iterator[list[subprocess.Popen]]:
    """Process groups of their own (a `sleep` each); whatever is left is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def group(started: list[subprocess.Popen]) -> subprocess.Popen:
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    started.append(process)
    return process


@pytest.fixture
def segments() -> Iterator[str]:
    """A prefix of this test's own for /dev/shm files; whatever is left is removed."""
    prefix = f"flujo.t{uuid.uuid4().hex[:8]}."
    yield prefix
    for name in os.listdir("/dev/shm"):
        if name.startswith((prefix, "x" + prefix)):
            os.unlink(f"/dev/shm/{name}")


def ended(process: subprocess.Popen) -> bool:
    return process.poll() is not None


def test_the_groups_still_known_are_killed_and_the_segments_unlinked_when_the_pipe_closes(
    groups: list[subprocess.Popen], segments: str
) -> None:
    watched, forgotten, never = group(groups), group(groups), group(groups)
    mine = [Path(f"/dev/shm/{segments}node.0.{i}") for i in range(3)]
    other = Path(f"/dev/shm/x{segments}node.0.0")  # another flow's: the prefix must start the name
    for path in [*mine, other]:
        path.write_bytes(b"x")
    reaper = Reaper()
    reaper.watch(watched.pid)
    reaper.watch(forgotten.pid)
    reaper.watch(forgotten.pid)  # twice: still one group
    reaper.forget(forgotten.pid)
    reaper.forget(never.pid)  # never watched: nothing happens
    reaper.unlink_on_exit(segments)
    reaper.close()
    assert reaper._process.returncode == 0
    assert watched.wait(timeout=5) == -signal.SIGKILL
    assert not ended(forgotten) and not ended(never)
    assert not any(path.exists() for path in mine) and other.exists()


def reaper_actions(lines: list[str], log: Path) -> list[str]:
    """What the reaper would do after reading ``lines`` (its pipe then closing): its ``kill`` and
    ``rm`` replaced by shell functions that only note their arguments, and the reaper in a PID
    namespace of its own besides, so that a reaper that wrongly accepted "+1" could not signal
    every process of the machine."""
    notes = f'kill() {{ echo "kill $*" >> "{log}"; }}; rm() {{ echo "rm $*" >> "{log}"; }}'
    reaper = subprocess.Popen(
        ["unshare", "--pid", "--fork", SHELL, "-c", f'{notes}; . "{SCRIPT}"'],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    reaper.communicate("".join(lines).encode(), timeout=10)
    assert reaper.returncode == 0
    return log.read_text().splitlines() if log.exists() else []


def test_lines_that_are_not_groups_or_prefixes_are_ignored(tmp_path: Path, segments: str) -> None:
    """Whatever reaches the pipe: only "+PGID" (not 0 or 1, no leading zero) and "uPREFIX" of
    the right characters count."""
    kept = Path(f"/dev/shm/{segments}kept")
    kept.write_bytes(b"x")
    hostile = [
        "+1\n",  # init, or every process the reaper may signal
        "+01\n",  # the same to kill(1)
        "+0\n",
        "+00\n",
        "+-5\n",
        "+777x\n",
        "+ 777\n",
        "+*\n",
        "-*\n",
        f"u{segments}*/../kept\n",  # a path
        "u*\n",  # a pattern: every segment
        f"u{segments[:-1]}?\n",
        "u\n",
        "nonsense\n",
        "\n",
        "+778",  # the last line has no newline: not a whole line
    ]
    assert reaper_actions(hostile, tmp_path / "hostile.log") == []
    assert reaper_actions(["+777\n", *hostile, "+779\n", "-779\n", f"u{segments}\n"], tmp_path / "log") == [
        "kill -s KILL -- -777",
        f"rm -f -- {kept}",
    ]


def ignored_signals(pid: int) -> set[int]:
    """The signals process ``pid`` ignores (SigIgn in /proc/PID/status)."""
    mask = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigIgn:"))
    bits = int(mask.split()[1], 16)
    return {signum for signum in range(1, 65) if bits & (1 << (signum - 1))}


def test_signals_do_not_end_the_reaper_only_the_closing_pipe_does(groups: list[subprocess.Popen]) -> None:
    watched = group(groups)
    reaper = Reaper()
    reaper.watch(watched.pid)
    wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE}
    poll_for(lambda: wanted <= ignored_signals(reaper._process.pid), timeout=5)  # its first line ran
    for signum in wanted:  # an ignored signal is discarded as it is sent
        os.kill(reaper._process.pid, signum)
    assert reaper._process.poll() is None and not ended(watched)
    reaper.close()
    poll_for(lambda: ended(watched), timeout=5)


def test_a_prefix_that_could_name_a_path_or_a_pattern_is_refused_at_the_source() -> None:
    reaper = Reaper()
    try:
        for prefix in ("", "../x", "a/b", "flujo.*", "a\n+1"):
            with pytest.raises(ValueError, match="not a segment prefix"):
                reaper.unlink_on_exit(prefix)
    finally:
        reaper.close()
