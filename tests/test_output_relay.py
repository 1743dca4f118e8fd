"""Node output: shown with its label, and kept in per-node log files that rotate."""

from __future__ import annotations

from pathlib import Path

from flujo.launch.logstore import parse_line
from flujo.launch.process import LOG_BACKUPS, OutputRelay


def _texts(path: Path) -> list[str]:
    """A log file's lines without their time stamps (each line has one)."""
    lines = [parse_line("", raw) for raw in path.read_text().splitlines()]
    assert all(line.at for line in lines)
    return [line.text for line in lines]


def test_log_files_rotate_and_keep_the_newest_lines(tmp_path: Path) -> None:
    shown: list[tuple[str, str]] = []
    relay = OutputRelay(lambda label, text: shown.append((label, text)), tmp_path, max_bytes=200)
    lines = [f"line {i:04d} with 100% of its % signs" for i in range(100)]  # 37 bytes each, 65 stamped
    for text in lines:
        relay.line("work.0", text)
    relay.line("sink", "only line")
    relay.close()
    assert shown[:2] == [("work.0", lines[0]), ("work.0", lines[1])] and len(shown) == 101  # every line shown
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "sink.log",
        "work.0.log",
        *(f"work.0.log.{n}" for n in range(1, LOG_BACKUPS + 1)),
    ]
    kept = []
    for name in [*(f"work.0.log.{n}" for n in range(LOG_BACKUPS, 0, -1)), "work.0.log"]:  # oldest first
        text = (tmp_path / name).read_text()
        assert len(text.encode()) <= 200
        kept += _texts(tmp_path / name)
    assert kept == lines[-len(kept) :] and len(kept) >= 8  # the newest lines, in order, none torn
    assert _texts(tmp_path / "sink.log") == ["only line"]
