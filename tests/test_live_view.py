"""The launcher's live terminal view: the status table, output lines above it, robustness."""

from __future__ import annotations

import copy
import io
import threading

from rich.console import Console

from flujo.launch.live import LiveView, render_status

STATUS = {
    "flow": "people-counter",
    "started": True,
    "stopping": False,
    "bottleneck": "detector",
    "nodes": [
        {
            "label": "reader",
            "node": "reader",
            "replica": 0,
            "pid": 1234,
            "state": "running",
            "exit_code": None,
            "restarts": 0,
            "error": None,
            "items_in": 0,
            "items_out": 512,
            "errors": 0,
            "rate": 29.7,
            "queue": 0.0,
            "busy": 0.12,
        },
        {
            "label": "detector.0",
            "node": "detector",
            "replica": 0,
            "pid": 1235,
            "state": "running",
            "exit_code": None,
            "restarts": 1,
            "error": None,
            "items_in": 500,
            "items_out": 498,
            "errors": 0,
            "rate": 14.9,
            "queue": 1.0,
            "busy": 0.97,
        },
        {
            "label": "tracker",
            "node": "tracker",
            "replica": 0,
            "pid": 1236,
            "state": "exited",
            "exit_code": 0,
            "restarts": 0,
            "error": None,
            "items_in": 498,
            "items_out": 498,
            "errors": 0,
            "rate": 0.0,
            "queue": 0.25,
            "busy": 0.0,
        },
        {
            "label": "sink",
            "node": "sink",
            "replica": 0,
            "pid": 1237,
            "state": "failed",
            "exit_code": 1,
            "restarts": 0,
            "error": "ValueError: boom",
            "items_in": 3,
            "items_out": 0,
            "errors": 1,
            "rate": 0.5,
            "queue": 0.5,
            "busy": 0.3,
        },
    ],
}


def rendered(status: dict, width: int = 100) -> str:
    console = Console(record=True, width=width, force_terminal=False)
    console.print(render_status(status))
    return console.export_text()


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, color_system=None), out


def test_table_shows_every_replica() -> None:
    text = rendered(STATUS)
    for node in STATUS["nodes"]:
        assert node["label"] in text
        assert node["state"] in text
    for cell in ("1234", "512", "29.7", "14.9", "0.5", "100%", "97%", "12%", "25%"):
        assert cell in text
    assert "flow people-counter" in text
    assert "bottleneck: detector" in text
    assert "ValueError: boom" in text
    assert "exit 1" in text
    assert "stopping" not in text


def test_stopping_and_queue_bar() -> None:
    text = rendered({**STATUS, "stopping": True})
    assert "stopping" in text
    assert "██████████" in text  # the full queue of the detector
    assert "█████" in text  # the half-full queue of the sink


def test_bottleneck_rows_are_bold() -> None:
    table = render_status(STATUS)
    styles = [table.rows[i].style for i in range(len(table.rows))]
    assert styles == [None, "bold", None, None]


def test_missing_keys_are_shown_as_dashes() -> None:
    text = rendered({"nodes": [{"label": "lonely"}, {}, "not a node"]})
    assert "lonely" in text
    assert "–" in text
    assert "bottleneck" not in text
    assert "flow" in text
    rendered({})  # no nodes at all


def test_fits_in_80_columns() -> None:
    text = rendered(STATUS, width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "items/s" in text and "busy" in text  # no header was cut short
    assert "…" not in text


def test_live_view_prints_lines_and_the_final_table() -> None:
    console, out = terminal()
    with LiveView("people-counter", lambda: STATUS, console=console, refresh_per_second=20) as view:
        view.line("reader", "hello")
        view.line("detector.0", "world")
        view.line("reader", "again")
    output = out.getvalue()
    assert "reader | hello" in output
    assert "detector.0 | world" in output
    assert "reader     | again" in output  # padded to the widest label seen so far
    final = output[output.rindex("flow people-counter") :]
    assert "bottleneck: detector" in final
    assert "ValueError: boom" in final
    assert "29.7" in final


def test_label_width_given() -> None:
    console, out = terminal()
    with LiveView("f", lambda: STATUS, console=console, label_width=12) as view:
        view.line("sink", "x")
    assert "sink         | x" in out.getvalue()


def test_status_that_raises_keeps_the_last_table() -> None:
    calls = 0

    def status() -> dict:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("dictionary changed size during iteration")
        return STATUS

    console, out = terminal()
    with LiveView("people-counter", status, console=console, refresh_per_second=50) as view:
        view.line("reader", "still here")
    output = out.getvalue()
    assert calls > 1
    assert "still here" in output
    final = output[output.rindex("flow people-counter") :]
    assert "detector.0" in final and "29.7" in final


def test_status_that_always_raises() -> None:
    def status() -> dict:
        raise RuntimeError("shutting down")

    console, out = terminal()
    with LiveView("people-counter", status, console=console) as view:
        view.line("reader", "hi")
    assert "flow people-counter" in out.getvalue()
    assert "hi" in out.getvalue()


def test_status_changes_are_shown() -> None:
    current = copy.deepcopy(STATUS)
    console, out = terminal()
    with LiveView("people-counter", lambda: current, console=console, refresh_per_second=50):
        current["stopping"] = True
        current["nodes"][0]["state"] = "finished"
    final = out.getvalue()[out.getvalue().rindex("flow people-counter") :]
    assert "stopping" in final and "finished" in final


def test_lines_from_several_threads() -> None:
    console, out = terminal()
    threads_count, per_thread = 8, 25
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                view.line(f"node{n}", f"line {n}-{i}")
        except BaseException as error:
            errors.append(error)

    with LiveView("people-counter", lambda: STATUS, console=console, refresh_per_second=50) as view:
        threads = [threading.Thread(target=write, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    output = out.getvalue()
    for n in range(threads_count):
        positions = [output.index(f"line {n}-{i}\n") for i in range(per_thread)]
        assert positions == sorted(positions)  # each thread's lines in order


def test_without_a_terminal_lines_and_one_final_table() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with LiveView("people-counter", lambda: STATUS, console=console) as view:
        view.line("reader", "plain")
    output = out.getvalue()
    assert "reader | plain" in output
    assert output.count("flow people-counter") == 1
    assert "\x1b" not in output


def test_launcher_on_a_terminal_shows_the_live_table(flow) -> None:
    """The launcher itself, its output on a pseudo-terminal: node lines above a status table."""
    import os
    import pty
    import subprocess
    import sys

    manifest = flow.manifest("""
        [nodes.numbers]
        run = "flujo.nodes.basic:Count"
        args = { n = 5 }
        [nodes.printer]
        run = "flujo.nodes.basic:Print"
        inputs = ["numbers"]
    """)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "flujo.launch", str(manifest)],
        stdout=terminal,
        stderr=terminal,
        env={**flow.env, "COLUMNS": "100"},
    )
    os.close(terminal)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the launcher is gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        process.wait(timeout=30)
        os.close(controller)
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # without colours
    assert process.returncode == 0
    assert f"flow {flow.name}" in text and "items/s" in text and "exited" in text
    assert all(f"printer | {n}" in text for n in range(5))


def test_a_terminal_that_falls_behind_costs_screen_lines_not_memory(monkeypatch) -> None:
    import flujo.launch.live as live

    monkeypatch.setattr(live, "MAX_PENDING", 10)
    release, blocked = threading.Event(), threading.Event()

    class SlowTerminal(io.StringIO):
        stalled = False

        def write(self, text: str) -> int:
            if self.stalled and "line 0" in text:  # the terminal hangs while the first line goes out
                blocked.set()
                release.wait(10)
            return super().write(text)

    out = SlowTerminal()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with LiveView("f", lambda: STATUS, console=console, refresh_per_second=1) as view:
        out.stalled = True
        view.line("chatty", "line 0")
        assert blocked.wait(10)
        for number in range(1, 31):
            view.line("chatty", f"line {number}")  # returns at once, though the terminal hangs
        release.set()
    output = out.getvalue()
    assert "20 lines not shown: the terminal fell behind" in output
    assert "line 20\n" not in output and all(f"line {n}\n" in output for n in range(21, 31))


def test_a_nodes_control_characters_cannot_move_the_cursor() -> None:
    console, out = terminal()
    with LiveView("f", lambda: STATUS, console=console) as view:
        view.line("bar", "50%\r60%\b")
        view.line("ansi", "\x1b[2J\x1b[31mred\x1b[0m")
    output = out.getvalue()
    assert "bar | 50%60%" in output and "\x1b[2J" not in output and "ansi | red" in output
