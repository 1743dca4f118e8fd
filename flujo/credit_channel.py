"""The sockets of credits (docs/PROTOCOL.md, section 18); what they mean is flujo/credits.py's.

* :class:`CreditInbox`, on a sender replica: one PULL socket bound at its credit endpoint;
  every frame is checked (:func:`flujo.credits.parse_credit`) against the windows of its
  readers, and a refused one is counted and logged, never moves a window and never raises.
* :class:`CreditOutbox`, on a reader port: one PUSH per sender replica of the port, connected
  to that sender's credit endpoint; cumulative counts, so a credit that cannot go is covered
  by the next.

Both are created in the node's context, so on tcp they use CURVE with the flow key, as data
sockets do (section 11).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import zmq

from flujo.credits import CreditCounter, CreditWindow, ReaderKey, credit_frame, parse_credit
from flujo.protocol import NOBLOCK
from flujo.wire_check import ProtocolError, RefusalLog

#: Credits are a few dozen bytes: anything larger is refused by the socket itself.
CREDIT_MAX_MESSAGE = 1024
#: A waiting reader says its counts again to a sender it has not credited for this long. A
#: credit can be lost without an error (written to the connection of a sender process that
#: just died, before the successor's arrived); the next one covers it, but none comes while the
#: reader waits on another input, and that input may be what the uncredited sender holds up.
CREDIT_REFRESH_SECONDS = 0.2


class CreditInbox:
    """A sender's credit socket and the windows it moves."""

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        windows: dict[ReaderKey, CreditWindow],
        generation: int,
        refusals: RefusalLog | None = None,
    ) -> None:
        self.socket = context.socket(zmq.PULL)
        self.socket.linger = 0
        self.socket.maxmsgsize = CREDIT_MAX_MESSAGE
        self.socket.bind(endpoint)
        self.windows = windows  # (reader node, replica, port) -> its window
        self._generation = generation  # this sender process's: credits for another one are stale
        self._refusals = refusals or RefusalLog("flujo: credits")
        self.rejected = 0
        self.taken = 0

    def take(self) -> bool:
        """Apply every credit already received; True if any arrived. A malformed, forged or
        impossible one is refused: counted, logged, no window moves."""
        arrived = False
        now = time.monotonic()
        while True:
            try:
                frames = self.socket.recv_multipart(NOBLOCK)
            except zmq.Again:
                return arrived
            arrived = True
            try:
                if len(frames) != 1:
                    raise ProtocolError("credit", f"{len(frames)} frames, expected 1")
                parsed = parse_credit(frames[0], self.windows, self._generation)
                if parsed is not None:
                    reader, generation, taken = parsed
                    try:
                        self.windows[reader].credit(generation, taken, now)
                    except ProtocolError as refused:
                        refused.sender = f"{reader[0]}.{reader[1]}"
                        raise
                    self.taken += 1
            except ProtocolError as refused:
                self.rejected += 1
                self._refusals.refused(refused, "credits")

    def close(self) -> None:
        self.socket.close(linger=0)


class CreditOutbox:
    """A reader port's credits to each of its sender replicas."""

    def __init__(
        self,
        context: zmq.Context,
        node: str,
        replica: int,
        generation: int,
        port: str,
        endpoints: Sequence[str],
        every: int,
    ) -> None:
        self._node, self._replica, self._generation, self._port = node, replica, generation, port
        self.sockets: list[zmq.Socket] = []
        for endpoint in endpoints:  # one per sender replica 0 ... senders-1
            socket = context.socket(zmq.PUSH)
            socket.linger = 0  # a credit lost with this process: its successor starts a new count
            socket.sndhwm = 64  # cumulative: when one cannot go, the next says as much and more
            socket.reconnect_ivl = 10  # a restarted sender binds again: find it quickly
            socket.connect(endpoint)
            self.sockets.append(socket)
        self.counters = [CreditCounter(every) for _ in endpoints]
        self._last_sent = [0.0] * len(endpoints)  # per sender: when a credit last went (monotonic)
        self.sent = 0

    def took(self, sender: int, items: int, sender_generation: int) -> None:
        """``items`` arrived from that sender replica: credit it when due."""
        counter = self.counters[sender]
        if counter.took(items, sender_generation):
            self._send(sender, counter)

    @property
    def pending(self) -> bool:
        """Some sender has not been told everything taken from it."""
        return any(counter.pending for counter in self.counters)

    @property
    def due_before_waiting(self) -> bool:
        """Some sender should hear what was taken before this port waits (CreditCounter.due_before_waiting)."""
        return any(counter.due_before_waiting for counter in self.counters)

    def flush(self) -> None:
        """Before the node waits (and once at its start): every sender learns what was taken."""
        for sender, counter in enumerate(self.counters):
            if counter.pending:
                self._send(sender, counter)

    def refresh(self, now: float) -> None:
        """While the reader waits: say each count again to every sender not credited for
        CREDIT_REFRESH_SECONDS (counts are cumulative: a repeat changes nothing but a lost one)."""
        last_sent = self._last_sent
        for sender, counter in enumerate(self.counters):
            if counter.credited >= 0 and now - last_sent[sender] >= CREDIT_REFRESH_SECONDS:
                self._send(sender, counter, now)

    def _send(self, sender: int, counter: CreditCounter, now: float | None = None) -> None:
        frame = credit_frame(
            self._node, self._replica, self._port, self._generation, counter.sender_generation, counter.taken
        )
        try:
            self.sockets[sender].send(frame, NOBLOCK)
            counter.credited = counter.taken
            self._last_sent[sender] = time.monotonic() if now is None else now
            self.sent += 1
        except zmq.Again:  # that sender is gone or slow: a later credit covers this one
            pass

    def close(self) -> None:
        for socket in self.sockets:
            socket.close(linger=0)
