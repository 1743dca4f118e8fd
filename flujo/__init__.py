"""Flujo: stream processing where every node is an OS process and ZeroMQ carries the data."""

from flujo.api import Consumer, Node, Outputs, Processor, Producer, consumer, processor, producer
from flujo.shm import frame_buffer

__all__ = [
    "Consumer",
    "Flow",
    "FlowDefinitionError",
    "FlowError",
    "Node",
    "Outputs",
    "Processor",
    "Producer",
    "consumer",
    "frame_buffer",
    "processor",
    "producer",
]


def __getattr__(name: str) -> object:
    # Flow drives the launcher; loading it on first use keeps the node runtime free of launcher code.
    if name in ("Flow", "FlowError", "FlowDefinitionError"):
        from flujo.launch import flow

        return getattr(flow, name)
    raise AttributeError(f"module 'flujo' has no attribute {name!r}")
