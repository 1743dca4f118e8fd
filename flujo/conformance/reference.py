"""The Python runtime's nodes for the kit's contract: ``python -m flujo.conformance.reference KIND``.

``processor`` sends every item on unchanged; ``consumer`` takes every item (both fail on
the kit's FAIL_ITEM, as user code raising would); ``producer`` produces until stopped.
"""

from __future__ import annotations

import sys
from typing import Any

from flujo.api import Consumer, Node, Processor, Producer
from flujo.config import NodeConfig
from flujo.conformance.items import FAIL_ITEM, small_item
from flujo.runtime import NodeRuntime
from flujo.vocab import NodeKind


class Identity(Processor):
    def process(self, item: Any) -> Any:
        if isinstance(item, str) and item == FAIL_ITEM:
            raise RuntimeError("told to fail by the conformance kit")
        return item


class Taker(Consumer):
    def consume(self, item: Any) -> None:
        if isinstance(item, str) and item == FAIL_ITEM:
            raise RuntimeError("told to fail by the conformance kit")


class Endless(Producer):
    """Produces ``small_item(n)`` for n = 0, 1, 2, …; it can resume at any item (section 9.4)."""

    first = 0

    def resume_from(self, position: int) -> bool:
        self.first = position
        return True

    def produce(self) -> Any:
        count = self.first
        while True:
            yield small_item(count)
            count += 1


NODES: dict[NodeKind, type[Node]] = {NodeKind.PROCESSOR: Identity, NodeKind.CONSUMER: Taker, NodeKind.PRODUCER: Endless}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in NODES:
        print(f"usage: python -m flujo.conformance.reference {{{'|'.join(NODES)}}}", file=sys.stderr)
        return 2
    return NodeRuntime(NodeConfig.from_environment(), NODES[NodeKind(argv[0])]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
