"""Nodes used by the integration tests' manifests."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flujo.api import Consumer, Outputs, Processor, Producer


def square(number: int) -> int:
    return number * number


def add(a: int, b: int) -> int:
    return a + b


def from_port(a: int | None = None, b: int | None = None) -> list[Any]:
    """A merge of ports a and b: each item with the port it came on, ["a", 3]."""
    return ["a", a] if a is not None else ["b", b]


def keep_even(number: int) -> int | None:
    return number if number % 2 == 0 else None


def jitter(number: int) -> int:
    """Uneven work, so replicas finish out of order."""
    time.sleep(0.001 * (number % 4))
    return number


def fail_at(number: int, at: int = 5) -> int:
    if number == at:
        raise ValueError(f"cannot handle {number}")
    return number


class Split(Processor):
    """Even numbers to the "even" port, odd ones to "odd"."""

    outputs = ("even", "odd")

    def process(self, number: int) -> Outputs:
        return Outputs(even=number) if number % 2 == 0 else Outputs(odd=number)


class Tagged(Producer):
    """Yields {"source": tag, "i": i} for i < n."""

    def __init__(self, tag: str, n: int) -> None:
        self.tag, self.n = tag, n

    def produce(self) -> Iterable[dict[str, Any]]:
        for i in range(self.n):
            yield {"source": self.tag, "i": i}


class CountingProducer(Producer):
    """Counts up to n (forever if 0), records in ``report`` how many it yielded."""

    def __init__(self, report: str, n: int = 0) -> None:
        self.report, self.n, self.count = Path(report), n, 0

    def produce(self) -> Iterable[int]:
        while not self.n or self.count < self.n:
            self.count += 1  # counted when handed over: the runtime may close the generator at a yield
            yield self.count - 1

    def close(self) -> None:
        self.report.write_text(json.dumps({"produced": self.count}))


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class BigArrays(Producer):
    """Yields n fresh arrays of ``mb`` megabytes; reports resident memory before and at peak."""

    def __init__(self, report: str, n: int, mb: int) -> None:
        self.report, self.n, self.mb = Path(report), n, mb

    def produce(self) -> Iterable[dict[str, Any]]:
        import numpy as np

        self.baseline = _rss_mb()
        self.peak = self.baseline
        for i in range(self.n):
            array = np.full(self.mb * 1024 * 1024, i % 256, dtype=np.uint8)
            yield {"i": i, "data": array}
            del array
            self.peak = max(self.peak, _rss_mb())

    def close(self) -> None:
        self.report.write_text(json.dumps({"baseline_mb": self.baseline, "peak_mb": self.peak}))


class Collect(Consumer):
    """Appends each item as a JSON line (arrays summarised), flushed, with an optional delay."""

    def __init__(self, path: str, delay: float = 0.0) -> None:
        self.path, self.delay = Path(path), delay

    def open(self) -> None:
        self.file = self.path.open("a")  # a restarted sink goes on where its predecessor stopped

    def consume(self, item: Any) -> None:
        if self.delay:
            time.sleep(self.delay)  # a slow consumer, on purpose
        # An array arrives only once numpy is loaded: these nodes start without it, as flujo's do.
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(item, dict) and isinstance(item.get("data"), numpy.ndarray):
            item = {**item, "data": [int(item["data"][0]), int(item["data"].nbytes)]}
        self.file.write(json.dumps(item) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class RunningSum(Processor):
    """The sum of every number so far: state across items, kept across a crash by
    ``snapshot()``/``restore()`` (PROTOCOL 9.6) unless ``stateless``, which starts afresh."""

    def __init__(self, stateless: bool = False) -> None:
        self.total = 0
        if stateless:
            self.snapshot = None  # type: ignore[assignment]

    def process(self, number: int) -> int:
        self.total += number
        return self.total

    def snapshot(self) -> dict[str, int]:
        return {"total": self.total}

    def restore(self, state: dict[str, int]) -> None:
        self.total = state["total"]


class CountingMerge(Processor):
    """A merge of ports a and b that counts what it took per port, ``[port, item, count]``: the
    counts continue across a crash through ``snapshot()``/``restore()`` (PROTOCOL 9.5, 9.6)."""

    def __init__(self) -> None:
        self.counts = {"a": 0, "b": 0}

    def process(self, a: int | None = None, b: int | None = None) -> list[Any]:
        port, item = ("a", a) if a is not None else ("b", b)
        self.counts[port] += 1
        return [port, item, self.counts[port]]

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def restore(self, state: dict[str, int]) -> None:
        self.counts = dict(state)


class Journal(Consumer):
    """Appends ``[pid, item]`` per item consumed, flushed: which process consumed what (a crash
    test reads the runs of successive processes apart)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def open(self) -> None:
        self.file = self.path.open("a")
        self.pid = os.getpid()

    def consume(self, item: Any) -> None:
        self.file.write(json.dumps([self.pid, item]) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CountingJournal(Journal):
    """A Journal whose items are ``[item, how many it has consumed in all]``: a count kept across
    a crash by ``snapshot()``/``restore()`` (PROTOCOL 9.6), so every item ``i`` of 0, 1, ... is
    written with the count ``i + 1`` by whichever process consumed it."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.count = 0

    def consume(self, item: Any) -> None:
        self.count += 1
        super().consume([item, self.count])

    def snapshot(self) -> dict[str, int]:
        return {"count": self.count}

    def restore(self, state: dict[str, int]) -> None:
        self.count = state["count"]


class HeldOnCue:
    """Mixin for a consumer that holds its first item until the file ``gate`` exists, having
    touched the file ``held`` to say so: nothing it reads is consumed, nor acknowledged, before
    the cue. The consumer it goes with takes ``path`` first."""

    def __init__(self, path: str, gate: str, held: str) -> None:
        super().__init__(path)  # type: ignore[call-arg]
        self.gate, self.held, self.first = Path(gate), Path(held), True

    def consume(self, item: Any) -> None:
        if self.first:
            self.first = False
            self.held.touch()
            while not self.gate.exists():
                time.sleep(0.005)
        super().consume(item)  # type: ignore[misc]


class HeldJournal(HeldOnCue, Journal):
    """Journal, holding its first item on cue."""


def line_count(path: str) -> int:
    """Lines written so far (0 before the file exists)."""
    try:
        with open(path) as file:
            return sum(1 for _ in file)
    except FileNotFoundError:
        return 0


def read_lines(path: str) -> list[Any]:
    with open(path) as file:
        return [json.loads(line) for line in file]


def pair_tags(x: dict[str, Any], y: dict[str, Any]) -> list[int]:
    return [x["i"], y["i"]]


class Paced(Producer):
    """Counts to n, pausing ``pause`` seconds between items (a source with its own pace)."""

    def __init__(self, n: int, pause: float = 0.001) -> None:
        self.n, self.pause, self.first = n, pause, 0

    def resume_from(self, position: int) -> bool:
        """A successor after a crash goes on from ``position`` (lossless edges, PROTOCOL 9.4)."""
        self.first = position
        return True

    def produce(self) -> Iterable[int]:
        for i in range(self.first, self.n):
            time.sleep(self.pause)
            yield i


class Stubborn(Producer):
    """Yields a few items, then hangs in its generator and never sees a stop; may ignore SIGTERM."""

    def __init__(self, ignore_sigterm: bool = False) -> None:
        self.ignore_sigterm = ignore_sigterm

    def open(self) -> None:
        if self.ignore_sigterm:
            import signal

            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def produce(self) -> Iterable[int]:
        yield from range(3)
        while True:
            time.sleep(3600)


class HangInClose(Consumer):
    """Consumes normally, then hangs when closing."""

    def consume(self, item: Any) -> None:
        pass

    def close(self) -> None:
        time.sleep(3600)


def always_fail(number: int) -> int:
    raise ValueError(f"cannot handle {number}")


class Sleepy(Processor):
    """Passes items on, slowly (``pause`` seconds each) in its first process only: a restart
    of it cannot drain in time, and its successor runs at full speed."""

    def __init__(self, pause: float = 0.5) -> None:
        first = json.loads(os.environ["FLUJO_NODE_CONFIG"])["generation"] == 0
        self.pause = pause if first else 0.0

    def process(self, item: Any) -> Any:
        time.sleep(self.pause)
        return item


def where(number: int) -> dict[str, int]:
    """The number, and the network namespace (its inode) of the process that saw it."""
    return {"n": number, "net": os.stat("/proc/self/ns/net").st_ino}


def where_gpus(number: int) -> dict[str, Any]:
    """``where``, and the GPUs the process was given (CUDA_VISIBLE_DEVICES)."""
    return {**where(number), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}


class Gated(Producer):
    """Counts to n, ``pause`` seconds apart, then holds its stream open until the file
    ``gate`` exists: a test decides when the stream may end. It yields None meanwhile, so
    it keeps obeying commands."""

    def __init__(self, n: int, gate: str, pause: float = 0.0) -> None:
        self.n, self.gate, self.pause, self.first = n, Path(gate), pause, 0

    def produce(self) -> Iterable[int | None]:
        for i in range(self.first, self.n):
            if self.pause:
                time.sleep(self.pause)
            yield i
        while not self.gate.exists():
            time.sleep(0.005)
            yield None


class ResumingGated(Gated):
    """Gated, and a successor goes on from where its readers' acknowledgements end (PROTOCOL 9.4)."""

    def resume_from(self, position: int) -> bool:
        self.first = position
        return True


class Chatty(Producer):
    """Prints ``lines`` lines as fast as it can, then yields one item; reports how long the
    printing took in its summary (what a slow terminal would stretch)."""

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.seconds = 0.0

    def produce(self) -> Iterable[int]:
        began = time.perf_counter()
        for number in range(self.lines):
            print(f"line {number} of a chatty node, long enough to look like a real log line", flush=True)
        self.seconds = time.perf_counter() - began
        yield 0

    def summary(self) -> dict[str, float]:
        return {"print_seconds": round(self.seconds, 3)}


class Measured(Paced):
    """A paced producer that knows its length: the launcher shows progress and an ETA."""

    def length(self) -> int:
        return self.n


class Tally(Consumer):
    """Counts even and odd numbers; reports the counts as its closing summary."""

    def open(self) -> None:
        self.counts = {"even": 0, "odd": 0}

    def consume(self, number: int) -> None:
        self.counts["even" if number % 2 == 0 else "odd"] += 1

    def summary(self) -> dict[str, int]:
        return self.counts


class NeverReads(Consumer):
    """Takes its first item and then hangs in consume: it never reads again nor reports ending."""

    def consume(self, item: Any) -> None:
        time.sleep(3600)


class FailsInOpen(Consumer):
    """Fails while allocating its resources, before it is ready."""

    def open(self) -> None:
        raise RuntimeError("camera 7 is not connected")

    def consume(self, item: Any) -> None:
        pass


class SpawnsChild(Producer):
    """Starts a child process that ignores SIGTERM (a helper daemon, say), then yields nothing for ever."""

    def open(self) -> None:
        import subprocess
        import sys

        self._child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
            ]
        )

    def produce(self) -> Iterable[int]:
        while True:
            time.sleep(0.05)
            yield None


class UntilGate(Producer):
    """Counts 0, 1, 2, ... until the file ``gate`` exists: a stream that lasts as long as a test
    needs, at most about 64 items per ``pause`` seconds."""

    def __init__(self, gate: str, pause: float = 0.01) -> None:
        self.gate, self.pause = Path(gate), pause

    def produce(self) -> Iterable[int]:
        i = 0
        while i % 64 or not self.gate.exists():
            yield i
            i += 1
            if i % 64 == 0:
                time.sleep(self.pause)


class Reporting(Producer):
    """Counts to n, ``pause`` seconds apart, writing to ``progress`` how many items it has handed
    over so far: a test reads how far the source got without asking the clock. With ``pad``,
    each item is {"i": i, "pad": pad bytes}: few of them fit in the sockets' buffers."""

    def __init__(self, n: int, progress: str, pause: float = 0.0, pad: int = 0) -> None:
        self.n, self.progress, self.pause, self.pad = n, Path(progress), pause, pad

    def produce(self) -> Iterable[int | dict[str, Any]]:
        for i in range(self.n):
            if self.pause:
                time.sleep(self.pause)
            self.progress.write_text(str(i))  # item i is being handed over (i done before it)
            yield {"i": i, "pad": b"x" * self.pad} if self.pad else i
        self.progress.write_text(str(self.n))


def progress(path: str) -> int:
    """What a Reporting producer has written so far (0 before it started)."""
    try:
        return int(Path(path).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


class HoldsFirst(HeldOnCue, Collect):
    """Collect, holding its first item on cue: a consumer as slow as a test needs. Of a dict
    it collects the number under "i"."""

    def consume(self, item: Any) -> None:
        super().consume(item["i"] if isinstance(item, dict) else item)


class Describe(Producer):
    """Writes how its process was started to ``path`` (JSON: pid, parent, session, working
    folder, first import path, the FLUJO_TEST_MARK variable, the helper module's folder),
    prints a line, then yields ``n`` numbers."""

    def __init__(self, path: str, n: int = 3) -> None:
        self.path, self.n = Path(path), n

    def open(self) -> None:
        import describe_helper  # type: ignore[import-not-found]  # in the node's working folder

        facts = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "session": os.getsid(0),
            "cwd": os.getcwd(),
            "path0": sys.path[0],
            "mark": os.environ.get("FLUJO_TEST_MARK"),
            "helper": str(Path(describe_helper.__file__).parent),
            "stdin": os.readlink("/proc/self/fd/0"),
            "parent": Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode(),
        }
        self.path.write_text(json.dumps(facts))
        print("describe: started", flush=True)

    def produce(self) -> Iterable[int]:
        yield from range(self.n)
