"""Flujo: stream processing where every node is an OS process and ZeroMQ carries the data."""
from flujo.api import Consumer, Node, Outputs, Processor, Producer, consumer, processor, producer

__all__ = ["Consumer", "Node", "Outputs", "Processor", "Producer", "consumer", "processor", "producer"]
