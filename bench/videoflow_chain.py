"""Baseline: the same chain as a videoflow 0.2.10 flow (multiprocessing queues of size 1).

Run as ``python -m bench.videoflow_chain CONFIG.json`` in a scratch folder (videoflow
writes a ``nodes_proctime.log`` into its working directory). The flow uses videoflow's
batch engine, which blocks on full queues instead of dropping items like the realtime
engine does, so every item is counted. videoflow itself appends a metadata consumer
process to every flow; it is part of what is being measured.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import BenchError, RunOutput, collect, run_command, with_barrier


def available() -> str | None:
    """None when videoflow imports, else the reason it cannot run."""
    try:
        import videoflow.core  # noqa: F401
    except Exception as error:
        return f"videoflow not importable: {error}"
    return None


def run_chain(cfg: dict[str, Any], workdir: Path, timeout: float) -> RunOutput:
    """Run the videoflow flow once in a fresh interpreter."""
    cfg = with_barrier(cfg, workdir, 2)  # processor and consumer
    config = workdir / "videoflow.json"
    config.write_text(json.dumps(cfg))
    repo = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "PYTHONPATH": str(repo)}
    launch = time.monotonic_ns()
    code = run_command(
        [sys.executable, "-m", "bench.videoflow_chain", str(config)],
        timeout,
        cwd=workdir,
        env=env,
        log=workdir / "videoflow.log",
    )
    wall = (time.monotonic_ns() - launch) / 1e9
    if code != 0:
        tail = (workdir / "videoflow.log").read_text(errors="replace")[-400:]
        raise BenchError(f"videoflow flow exited with {code}: {tail}")
    return collect(cfg, launch, wall)


def _main(config_path: str) -> None:
    from videoflow.core import Flow
    from videoflow.core.constants import BATCH
    from videoflow.core.node import ConsumerNode, ProcessorNode, ProducerNode

    from bench import nodecore

    logging.getLogger("videoflow").setLevel(logging.WARNING)
    cfg = json.loads(Path(config_path).read_text())

    class BenchProducer(ProducerNode):
        def open(self) -> None:
            self._report = nodecore.NodeReport(cfg, "producer")
            self._items = nodecore.tracked_items(cfg, self._report)

        def next(self) -> Any:
            return next(self._items)  # StopIteration ends the flow

        def close(self) -> None:
            self._report.write()

    class BenchProcessor(ProcessorNode):
        def open(self) -> None:
            self._report = nodecore.NodeReport(cfg, "processor")
            nodecore.node_ready(cfg)

        def process(self, item: Any) -> Any:
            return nodecore.process_item(cfg, item)

        def close(self) -> None:
            self._report.write()

    class BenchConsumer(ConsumerNode):
        def open(self) -> None:
            self._report = nodecore.NodeReport(cfg, "consumer")
            self._recorder = nodecore.Recorder(cfg)
            nodecore.node_ready(cfg)

        def consume(self, item: Any) -> None:
            self._recorder.consume(item)

        def close(self) -> None:
            self._recorder.write()
            self._report.write()

    producer = BenchProducer()
    processor = BenchProcessor()(producer)
    consumer = BenchConsumer()(processor)
    flow = Flow([producer], [consumer], flow_type=BATCH)
    flow.run()
    flow.join()


if __name__ == "__main__":
    _main(sys.argv[1])
