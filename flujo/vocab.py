"""Flujo's closed vocabularies, one definition each.

Every value is a ``StrEnum``, so it compares equal to (and serialises as) the spelling used in
manifests, in node configurations and on the wire: ``NodeKind.PRODUCER == "producer"``. Code compares
against the members, never against bare strings, and a typo is an AttributeError instead of a branch
that silently never runs.
"""

from __future__ import annotations

from enum import StrEnum


class NodeKind(StrEnum):
    """What a node does with items: brings them in, reads and writes them, or only reads them."""

    PRODUCER = "producer"
    PROCESSOR = "processor"
    CONSUMER = "consumer"


class Join(StrEnum):
    """How a node with several input ports combines them."""

    ZIP = "zip"  # one item from every port, same sequence number
    MERGE = "merge"  # items from any port as they come, renumbered


class QueuePolicy(StrEnum):
    """What a reader's full input queue does with one more item."""

    BLOCK = "block"  # the sender waits (backpressure)
    DROP_NEWEST = "drop-newest"
    DROP_OLDEST = "drop-oldest"


class RestartPolicy(StrEnum):
    """When the launcher starts a replica again after its process ended."""

    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


class ErrorPolicy(StrEnum):
    """What a node does when user code raises on one item."""

    FAIL = "fail"  # the node fails (and its restart policy applies)
    SKIP = "skip"  # the item is counted, logged and skipped


def zips_several(join: str, ports: int) -> bool:
    """The one rule for "this node zips several ports": only then do its senders have to agree on
    where to pause (graceful restarts), and does its reader wait on the port it lacks."""
    return join == Join.ZIP and ports > 1
