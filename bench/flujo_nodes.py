"""The benchmark's nodes written against Flujo's node API (loaded by flujo-launch from this file).

They do exactly what the baselines' nodes do (see ``bench/nodecore.py``): the manifest
passes the run's ``cfg`` dict as ``args``. ``Profiled*`` variants wrap a node in cProfile
and write ``<role>.prof`` into the run folder, for ``python -m bench --profile``.
"""

from __future__ import annotations

import cProfile
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Loaded by file path from a scratch folder: make the repository importable for `bench`.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from bench import nodecore  # noqa: E402
from flujo.api import Consumer, Processor, Producer  # noqa: E402


class BenchProducer(Producer):
    """Yields the workload's items."""

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg

    def open(self) -> None:
        self.report = nodecore.NodeReport(self.cfg, "producer")

    def produce(self) -> Iterable[Any]:
        return nodecore.tracked_items(self.cfg, self.report)

    def close(self) -> None:
        self.report.write()


class BenchProcessor(Processor):
    """Identity, plus busy CPU work in the "cpu" workload."""

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg

    def open(self) -> None:
        self.report = nodecore.NodeReport(self.cfg, "processor")

    def process(self, item: Any) -> Any:
        return nodecore.process_item(self.cfg, item)

    def close(self) -> None:
        self.report.write()


class BenchConsumer(Consumer):
    """Records arrivals and latencies; writes the result file when the stream ends."""

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg

    def open(self) -> None:
        self.report = nodecore.NodeReport(self.cfg, "consumer")
        self.recorder = nodecore.Recorder(self.cfg)

    def consume(self, item: Any) -> None:
        self.recorder.consume(item)

    def close(self) -> None:
        self.recorder.write()
        self.report.write()


class _Profiled:
    """Mixin: profile the node's process from open() to close(), runtime loop included."""

    role = ""

    def open(self) -> None:
        self._profile = cProfile.Profile()
        super().open()  # type: ignore[misc]
        self._profile.enable()

    def close(self) -> None:
        self._profile.disable()
        super().close()  # type: ignore[misc]
        self._profile.dump_stats(str(Path(self.cfg["report_dir"]).parent / f"{self.role}.prof"))  # type: ignore[attr-defined]


class ProfiledProducer(_Profiled, BenchProducer):
    role = "producer"


class ProfiledProcessor(_Profiled, BenchProcessor):
    role = "processor"


class ProfiledConsumer(_Profiled, BenchConsumer):
    role = "consumer"
