"""The Python node API: three kinds of node, each a class with lifecycle hooks.

A node is written once and runs in its own OS process; the runtime calls, in order:

    open()                      allocate resources (models, files, devices)
    produce() / process() / consume()
    close(reason)               free them (always called, also after an error); ``reason``
                                says why (:class:`flujo.closing.CloseReason`); ``close()``
                                without a parameter works too

* ``Producer.produce()`` is a generator: every value it yields becomes one item. Yielding
  ``None`` sends nothing but lets the runtime see its commands (a live source with no new
  data yet should yield ``None`` rather than block for long).
* ``Processor.process(item)`` returns the output item; ``None`` means "no output for this
  item" (a filter), and downstream zip joins still advance. With named input ports the
  items arrive as keyword arguments (``process(a=..., b=...)``); with several unnamed ports,
  positionally in manifest order. Return :class:`Outputs` to send to named output ports.
* ``Consumer.consume(item)`` receives items and returns nothing.

Plain functions work too: a generator function is a producer, any other function is a
processor or a consumer depending on where the graph puts it. The decorators
:func:`producer`, :func:`processor` and :func:`consumer` make the kind explicit.

Items are values msgpack can carry (None, bool, int, float, str, bytes, lists, dicts)
and numpy arrays, nested freely. Arrays cross process boundaries without copies and
arrive read-only: copy one before writing into it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from flujo.vocab import NodeKind


class Outputs(dict):
    """A processor's result addressed to named output ports: ``Outputs(left=x, right=y)``.

    Output ports that the mapping leaves out receive a "no item" marker for this input,
    so a zip join downstream of them keeps advancing.
    """


class Node:
    """Base of every node. Subclasses take their manifest ``args`` as constructor keywords."""

    kind: ClassVar[NodeKind | None] = None  # None: the node's place in the graph decides
    #: Names of the output ports this node can send to; "out" is the default port.
    outputs: ClassVar[tuple[str, ...]] = ("out",)

    def open(self) -> None:
        """Allocate resources. Called once in the node's process, before the first item."""

    def close(self) -> None:
        """Free resources. Called once after the last item, also when the node fails.

        A subclass that wants to know why declares ``close(self, reason: CloseReason =
        CloseReason.END_OF_STREAM)`` (:mod:`flujo.closing`): ``"end-of-stream"``, ``"stop"``,
        ``"restart"`` (a graceful restart: a successor continues) or ``"failure"`` (user
        code raised). The runtime looks at the signature once and passes the reason only
        to a ``close`` that takes it."""

    def frame_buffer(self, shape: Any, dtype: Any = "uint8") -> Any:
        """A writable numpy array for an output item, in shared memory when this node's
        outputs use it (see :func:`flujo.shm.frame_buffer`): sent, it crosses without a copy.
        Do not write it again once sent."""
        from flujo.shm import frame_buffer

        return frame_buffer(shape, dtype)

    def summary(self) -> Mapping[str, Any] | None:
        """What this node has to say at the end, for instance a sink's final counts: a small
        mapping of plain values (numbers, strings), shown in the launcher's closing summary
        and kept in ``--json-status``. Called once, after ``close()``; None: nothing."""
        return None


class Producer(Node):
    """Brings data into a flow. Has no inputs."""

    kind = NodeKind.PRODUCER

    def produce(self) -> Iterable[Any]:
        """Yield the items of the stream; returning ends the stream."""
        raise NotImplementedError

    def length(self) -> int | None:
        """How many items ``produce()`` will yield, if known (a file's frames): the launcher
        then shows progress and an estimated time left. Called once, after ``open()``."""
        return None

    # Optional: ``resume_from(self, position: int) -> bool``. A producer that can go on from its
    # item numbered ``position`` (0 for the first item it ever yields: a file reader seeks)
    # defines it and returns True; its successor after a crash then continues exactly where its
    # readers' acknowledgements end (docs/PROTOCOL.md, section 9.4). False, or no such method:
    # it cannot (a camera), and its own crash is at most once.


class Processor(Node):
    """Reads items and writes one result (or none) per input item."""

    kind = NodeKind.PROCESSOR

    def process(self, *items: Any, **ports: Any) -> Any:
        """Return the output for one input item (or one aligned set of items)."""
        raise NotImplementedError


class Consumer(Node):
    """Reads items and sends nothing on."""

    kind = NodeKind.CONSUMER

    def consume(self, *items: Any, **ports: Any) -> None:
        """Handle one input item (or one aligned set of items)."""
        raise NotImplementedError


_KIND_ATTRIBUTE = "__flujo_kind__"


def _mark(kind: NodeKind) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        setattr(function, _KIND_ATTRIBUTE, kind)
        return function

    return decorate


def producer(function: Callable[..., Iterable[Any]]) -> Callable[..., Iterable[Any]]:
    """Mark a function returning an iterable (usually a generator) as a producer."""
    return _mark(NodeKind.PRODUCER)(function)


def processor(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a function as a processor: called once per item, its result is sent on."""
    return _mark(NodeKind.PROCESSOR)(function)


def consumer(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a function as a consumer: called once per item, its result is ignored."""
    return _mark(NodeKind.CONSUMER)(function)


def declared_kind(target: Any) -> NodeKind | None:
    """The kind a class or function declares, or None when the graph decides."""
    if inspect.isclass(target) and issubclass(target, Node):
        return target.kind
    kind = getattr(target, _KIND_ATTRIBUTE, None)
    if kind:
        return NodeKind(kind)
    if inspect.isgeneratorfunction(target):
        return NodeKind.PRODUCER
    return None


def declared_outputs(target: Any) -> tuple[str, ...]:
    """Output port names a class declares; functions have only the default port."""
    if inspect.isclass(target) and issubclass(target, Node):
        return tuple(target.outputs)
    return ("out",)


class _FunctionProducer(Producer):
    def __init__(self, function: Callable[..., Iterable[Any]], args: Mapping[str, Any]):
        self._function, self._args = function, dict(args)

    def produce(self) -> Iterable[Any]:
        return self._function(**self._args)


class _FunctionProcessor(Processor):
    def __init__(self, function: Callable[..., Any], args: Mapping[str, Any]):
        self.process = functools.partial(function, **args) if args else function  # type: ignore[method-assign]


class _FunctionConsumer(Consumer):
    def __init__(self, function: Callable[..., Any], args: Mapping[str, Any]):
        self.consume = functools.partial(function, **args) if args else function  # type: ignore[method-assign]


_FUNCTION_WRAPPERS: dict[NodeKind, Callable[[Any, Mapping[str, Any]], Node]] = {
    NodeKind.PRODUCER: _FunctionProducer,
    NodeKind.PROCESSOR: _FunctionProcessor,
    NodeKind.CONSUMER: _FunctionConsumer,
}


def instantiate(target: Any, kind: NodeKind, args: Mapping[str, Any]) -> Node:
    """Build the node object for ``target`` (a Node class or a function) playing ``kind``.

    Classes receive ``args`` as constructor keywords; functions receive them as extra
    keywords on every call (a producer function once, when the stream starts).
    """
    if inspect.isclass(target):
        if not issubclass(target, Node):
            raise TypeError(f"{target.__qualname__} is not a flujo Producer, Processor or Consumer")
        node_class: Callable[..., Node] = target
        return node_class(**args)
    if not callable(target):
        raise TypeError(f"{target!r} is neither a node class nor a function")
    return _FUNCTION_WRAPPERS[kind](target, args)
