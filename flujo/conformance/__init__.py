"""Conformance kit: proves a node program, in any language, speaks docs/PROTOCOL.md.

Usage::

    python -m flujo.conformance [--level basic|full|restartable|acknowledging] [--kind processor|consumer|producer]
                                [--timeout S] [--window S] [--only SCENARIO] -- COMMAND...

The kit plays the launcher (it binds the control XPUB and the status PULL), the upstream
senders (PUSH sockets into the node's input port, several replicas where order matters)
and the downstream readers (PULL sockets the node's outputs connect to). It starts
COMMAND with ``FLUJO_NODE_CONFIG`` set, as ``flujo-launch`` does, once per scenario, and
prints one line per clause (PROTOCOL.md section, PASS/FAIL, expected and seen), then the
level reached. Exit status 0 when the requested level is reached.

The node under test, by contract:

* ``--kind processor`` (default): an identity processor. One input port, one output port
  ("out"); it sends each DATA item on unchanged with its sequence number, SKIP as SKIP.
* ``--kind consumer``: takes every item; its ``finished`` counters count them.
* Either fails on the item ``"flujo-conformance:fail"``, as an exception in its user code
  would (it reports ``error``; the error and crash clauses).
* ``--kind producer``: produces items (any values) until it is stopped; it has its own
  scenarios (start, numbering from ``seq_start``, fan-out, stats, drain, held reader).

Levels: **basic** (handshake, DATA/SKIP, EOS, stop, clean exit), **full** (BATCH, arrays,
order across replicated senders, fan-out and replicas, stats, released readers, errors,
a crash under a restart policy), **restartable** (graceful restarts: drain as the held
node, and pause/resume/align as the sender of a held reader), **acknowledging** (section
9: cumulative acknowledgements end to end, duplicates of a sender's replay dropped, forged
acknowledgements refused, unacknowledged items replayed to a reader's successor, a producer's
``acked`` and ``resume_at``). Each level includes the ones before it. The Python reference nodes::

    python -m flujo.conformance --level acknowledging -- python -m flujo.conformance.reference processor
    python -m flujo.conformance --level acknowledging --kind consumer -- python -m flujo.conformance.reference consumer
    python -m flujo.conformance --level acknowledging --kind producer -- python -m flujo.conformance.reference producer

``main(argv) -> int`` runs the same from Python; importing this package starts nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flujo.conformance.items import FAIL_ITEM

if TYPE_CHECKING:
    from flujo.conformance.checks import LEVELS
    from flujo.conformance.cli import main

__all__ = ["FAIL_ITEM", "LEVELS", "main"]


def __getattr__(name: str) -> Any:
    # The kit (and numpy with it) loads on first use: `python -m flujo.conformance.reference`
    # imports this package at every node start of every scenario, and needs none of it.
    if name == "main":
        from flujo.conformance.cli import main

        return main
    if name == "LEVELS":
        from flujo.conformance.checks import LEVELS

        return LEVELS
    raise AttributeError(f"module 'flujo.conformance' has no attribute {name!r}")
