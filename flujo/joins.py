"""How a node's input ports become calls: one port, zip or merge, without sockets.

:meth:`Join.next` never waits on a socket of its own accord: when no port has what it
needs, it returns :data:`WAIT` and names, in ``waiting_on``, the ports to wait for. The
node's loop then does its housekeeping and waits (flujo/runtime.py). Only a single port the
join needs may block in its receive (the source's own short timeout, GIL released): cheaper
than a poll and a failed receive per item.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from flujo.merge_replay import ReplayAction, replay_action
from flujo.port_queue import PortQueue
from flujo.protocol import NOBLOCK, Message, MessageKind
from flujo.vocab import zips_several

#: Returned by a join for a sequence number that carries no item (filtered upstream).
SKIP = object()
#: Returned by a join that needs more input: wait for ``Join.waiting_on``, then ask again.
WAIT = object()
Step = tuple[int, str | None, Any]  # (sequence number, port or None for a zip, items or SKIP)


class Drained(Exception):
    """Raised by a join of a held replica once every sender has paused (or ended) and every
    item they sent before pausing has been taken: the replica may hand over to its successor."""


class JoinView(Protocol):
    """What a join needs to know of the rest of its node."""

    @property
    def holding_output(self) -> bool:
        """The node holds output back (a batch): a join must not block in a receive."""

    @property
    def draining(self) -> bool:
        """This replica is held: it ends (Drained) once its senders are quiet."""

    @property
    def drain_limit(self) -> int | None:
        """A held zip: the sequence number its senders pause after, once agreed."""


_REPLAYED = object()  # a merge's successor has taken every input its predecessor numbered


class Join:
    """Turns the ports' streams into calls: ``next()`` gives (seq, port, items), None at the end, or WAIT.

    * one port: every message, in order;
    * zip: one call per sequence number present on every port, ends when any port ends;
    * merge: one call per message in arrival order, ends when all ports end.
    A held replica raises Drained instead once its ports are quiet (a zip: any port) and drained.
    ``items`` is the list of values (one per port for zip) or SKIP for a filtered item.
    """

    def __init__(self, ports: Sequence[PortQueue], mode: str, view: JoinView) -> None:
        self.ports = list(ports)
        self._view = view
        self._zip = zips_several(mode, len(self.ports))
        self._merge_seq = 0
        # A lossless merge numbers through its log (flujo/merge_log.py, section 9.5): a replay
        # gets the numbers its predecessor gave, and a skipped input is numbered too (a SKIP
        # goes on for it), so every input's output can be acknowledged in order.
        self.numbering: Any = None
        self._deferred: deque[tuple[str, Message]] = deque()  # see flujo/merge_replay.py, DEFER
        self._turn = 0  # merge: which port to look at first, for fairness
        self.waiting_on: list[PortQueue] = []  # after WAIT: the ports whose input is needed
        if self._zip:  # one numbering: what a replay on one port says is done, is on every port
            for port in self.ports:
                port.peers = self.ports

    def next(self) -> Step | object | None:
        if self._zip:
            return self._next_zip()
        return self._next_single() if len(self.ports) == 1 else self._next_merge()

    def _lacking(self, port: PortQueue) -> bool | None:
        """Try to fill ``port``'s empty queue: True once it has something, None at its end,
        False when the loop must wait for it. Raises Drained for a held replica it ends."""
        while not port.ready:
            if port.senders_done:
                return None
            if self._quiet_and_empty(port):
                raise Drained
            if port.ready:
                return True  # held items were taken
            if self._view.holding_output:
                if port.receive(NOBLOCK):
                    continue
            elif port.receive():
                continue
            self.waiting_on = [port]  # timed out (or must not block): housekeeping, then wait
            return False
        return True

    def _next_replayed(self, numbering: Any) -> Step | object | None:
        """A lossless merge's successor: the inputs its predecessor numbered come first, in
        their logged order, whatever order their replays arrive in (its readers drop a number
        lower than one they already have); flujo/merge_replay.py decides on each port's head.
        _REPLAYED once none is left."""
        by_name = {port.name: port for port in self.ports}
        while numbering.replaying:
            name, logged = numbering.next_logged()
            port = by_name[name]
            ended = False
            if not port.ready and port.outbox is not None:
                filled = self._lacking(port)
                if filled is False:
                    return WAIT
                ended = filled is None
            head = port.ready[0].seq if port.ready else None
            lossless = port.outbox is not None
            action = replay_action(logged, head, ended, numbering.acked_through(name), lossless)
            if action is ReplayAction.WAIT:
                self.waiting_on = [port]
                return WAIT
            if action is ReplayAction.GIVE_UP:
                numbering.skip_logged()
                continue
            message = port.ready.popleft()
            if action is ReplayAction.DEFER:
                self._deferred.append((name, message))
            elif action is ReplayAction.TAKE:
                taken = self._number(numbering, name, message)
                if taken is not None:
                    return taken
            # DONE: acknowledged downstream already; acknowledged again, no more
        return _REPLAYED

    def _number(self, numbering: Any, name: str, message: Message) -> Step | None:
        """A lossless merge's output for ``message``: numbered through the log, on disk before it
        goes; None for one done downstream already (a replay: acknowledged again, no more)."""
        out = numbering.number(name, message.seq)
        if out is None:
            return None
        numbering.flush()
        return out, name, SKIP if message.kind is MessageKind.SKIP else [message.item]

    def _next_single(self) -> Step | object | None:
        port = self.ports[0]
        port.refresh()
        if not port.ready:
            filled = self._lacking(port)
            if not filled:
                return None if filled is None else WAIT
        message = port.ready.popleft()
        return message.seq, port.name, SKIP if message.kind is MessageKind.SKIP else [message.item]

    def _next_merge(self) -> Step | object | None:
        ports = self.ports
        for port in ports:
            port.refresh()
        numbering = self.numbering
        if numbering is not None:
            if numbering.replaying:
                step = self._next_replayed(numbering)
                if step is not _REPLAYED:
                    return step
            while self._deferred:
                name, message = self._deferred.popleft()
                taken = self._number(numbering, name, message)
                if taken is not None:
                    return taken
        while True:
            count = len(ports)
            for offset in range(count):
                port = ports[(self._turn + offset) % count]
                if port.ready:
                    self._turn = (self._turn + offset + 1) % count
                    message = port.ready.popleft()
                    if numbering is not None:
                        taken = self._number(numbering, port.name, message)
                        if taken is None:
                            break
                        return taken
                    if message.kind is MessageKind.SKIP:
                        break  # the merged stream numbers its own items: a gap means nothing here
                    seq, self._merge_seq = self._merge_seq, self._merge_seq + 1
                    return seq, port.name, [message.item]
            else:
                if all(port.exhausted for port in ports):
                    return None
                if all(port.exhausted or self._quiet_and_empty(port) for port in ports):
                    raise Drained
                if any(port.ready for port in ports):
                    continue  # held items were taken
                # Look at every port (no short-circuit): a busy port must not hide another's end.
                got = [port.receive_available() for port in ports if not port.senders_done]
                if not any(got):
                    self.waiting_on = [port for port in ports if not port.senders_done]
                    return WAIT

    def _next_zip(self) -> Step | object | None:
        for port in self.ports:
            port.refresh()
        while True:
            for port in self.ports:
                if not port.ready:
                    filled = self._lacking(port)  # only this port: the others feel backpressure
                    if filled is None:
                        return None  # zip ends when any input ends
                    if not filled:
                        self._take_heads(port)
                        return WAIT
            heads = [port.ready[0] for port in self.ports]
            newest = max(message.seq for message in heads)
            if any(message.seq != newest for message in heads):
                # Misaligned only after a loss upstream: drop what has no partner.
                for port in self.ports:
                    if port.ready[0].seq < newest:
                        port.ready.popleft()
                continue
            for port in self.ports:
                port.ready.popleft()
            if any(message.kind is MessageKind.SKIP for message in heads):
                return newest, None, SKIP
            return newest, None, [message.item for message in heads]

    def _take_heads(self, lacking: PortQueue) -> None:
        """About to wait for ``lacking``: the other ports take what they have until each holds
        a head, and then on until each holds a queue's worth (backpressure holds: no more than
        the socket would), waking the zip as it comes. What a replay said was done is dropped
        as it comes: a successor whose inputs a crash set apart drains the stale side, whose
        senders may be what holds up the other. Stale items can also wait behind a head (a
        port fed by two replicas, one of them replaying), and their sender gets no credit, so
        no room, until they are taken."""
        waiting = [lacking]
        for port in self.ports:
            if port is lacking:
                continue
            room = max(1, port.config.hwm)
            while port.buffered < room and port.receive(NOBLOCK):
                pass
            if port.buffered < room and not port.senders_done:
                waiting.append(port)
        self.waiting_on = waiting

    def _quiet_and_empty(self, port: PortQueue) -> bool:
        """While draining: nothing more can come to this process on the port (every sender
        paused or ended, or, for a zip, everything up to the agreed limit is in), and
        nothing is left in it. A sender of a zip may get nothing past the limit for a long
        time (its replicated upstream deals elsewhere): the limit, not its pause, decides."""
        view = self._view
        if not view.draining:
            return False
        limit = view.drain_limit
        if not port.quiet and (limit is None or not port.complete_through(limit)):
            return False
        port.take_held()
        return not port.ready
