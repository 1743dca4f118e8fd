"""Test helpers for node logic without processes or sockets (like a mock node).

``drive`` runs a node object through its whole lifecycle in the calling process and returns
what it sent, with every item passed through the wire codec first, so a node sees exactly
what it would see in a flow: tuples become lists and arrays arrive read-only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flujo.api import Consumer, Node, Outputs, Processor, Producer
from flujo.closing import CloseReason, closer
from flujo.protocol import Codec


def wire(item: Any, codec: Codec | None = None) -> Any:
    """``item`` as the receiving node would see it after one hop."""
    codec = codec or Codec("test", 0)
    frames = [frame if isinstance(frame, bytes) else frame.tobytes() for frame in codec.encode(0, item)]
    return codec.decode(frames).item


def drive(node: Node, items: Iterable[Any] = (), *, through_wire: bool = True) -> list[Any]:
    """Open ``node``, feed it ``items`` (ignored by producers), close it (``close(reason)`` with
    "end-of-stream", or "failure" when it raised); return its outputs.

    Producers return what they yielded; processors what they returned, with ``None``
    ("no output") left out; consumers return an empty list. An item that is a dict with
    named ports is not unpacked: call ``node.process(**ports)`` yourself for joins.
    """
    codec = Codec("test", 0)
    convert = (lambda value: wire(value, codec)) if through_wire else (lambda value: value)
    sent: list[Any] = []
    reason = CloseReason.FAILURE
    node.open()
    try:
        if isinstance(node, Producer):
            sent = [convert(item) for item in node.produce() if item is not None]
        elif isinstance(node, Processor):
            for item in items:
                result = node.process(convert(item))
                if isinstance(result, Outputs):
                    sent.append(Outputs({port: convert(value) for port, value in result.items()}))
                elif result is not None:
                    sent.append(convert(result))
        elif isinstance(node, Consumer):
            for item in items:
                node.consume(convert(item))
        else:
            raise TypeError(f"{type(node).__qualname__} is not a Producer, Processor or Consumer")
        reason = CloseReason.END_OF_STREAM
    finally:
        closer(node.close)(reason)
    return sent
