"""Which shared-memory slots a sender keeps for the replays of its lossless edges, without
sockets or memory (docs/PROTOCOL.md, sections 9.3 and 16).

A lossless edge keeps every message it sent to a reader replica until that replica
acknowledges it (flujo/acks.py, ``Retention``). A message whose arrays travel as
shared-memory descriptors is kept as its frames, which name slots: the slots must stay
as they are until the acknowledgement (not only until the reader released its views), so
that a replay to the reader's successor resends the same descriptors and the successor
maps the same bytes. Each message pins its slots, per reader: a fan-out pins a slot once
per reader, independently; a slot goes back to the pool once no reader keeps a message
that names it (and nothing else holds it, flujo/shm.py).

Pins follow the retentions by sequence number rather than by message: a reader's
acknowledgement moves the first number its retention still keeps (its *floor*), and every
pin below it goes. That covers items still waiting in a batch (pinned, not yet kept: above
the floor), a message forgotten because the reader stopped acknowledging, and a graceful
restart's pause marker (which acknowledges what the held reader took) alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

Entry = TypeVar("Entry", bound=Hashable)
#: A reader of a lossless edge: (reader node, reader replica, reader input port), as its
#: acknowledgements name it (flujo/acks.py).
PinKey = tuple[str, int, str]


class SlotPins(Generic[Entry]):
    """Per reader, the entries (slots) each kept sequence number names; an entry is pinned while
    some reader keeps a number that names it."""

    def __init__(self) -> None:
        self._kept: dict[PinKey, deque[tuple[int, tuple[Entry, ...]]]] = {}
        self._pins: dict[Entry, int] = {}  # entry -> how many kept numbers (over all readers) name it

    def pin(self, reader: PinKey, seq: int, entries: Iterable[Entry]) -> None:
        """Item ``seq`` (naming ``entries``) went to ``reader`` on a lossless edge: keep them."""
        entries = tuple(entries)
        if not entries:
            return
        kept = self._kept.setdefault(reader, deque())
        if kept and seq <= kept[-1][0]:
            raise ValueError(f"item {seq} pinned for {reader} after {kept[-1][0]}: a sender sends in increasing order")
        kept.append((seq, entries))
        pins = self._pins
        for entry in entries:
            pins[entry] = pins.get(entry, 0) + 1

    def unpin_below(self, reader: PinKey, floor: int) -> list[Entry]:
        """``reader`` keeps nothing numbered below ``floor`` any more (acknowledged, forgotten):
        its pins below it go. Returns the entries no reader pins any more, once each."""
        kept = self._kept.get(reader)
        if not kept or kept[0][0] >= floor:
            return []
        pins = self._pins
        unpinned: list[Entry] = []
        while kept and kept[0][0] < floor:
            for entry in kept.popleft()[1]:
                count = pins[entry] - 1
                if count:
                    pins[entry] = count
                else:
                    del pins[entry]
                    unpinned.append(entry)
        if not kept:
            del self._kept[reader]
        return unpinned

    def pinned(self, entry: Entry) -> bool:
        return entry in self._pins

    def readers(self) -> list[PinKey]:
        """The readers that keep something pinned."""
        return list(self._kept)

    def __len__(self) -> int:
        """How many entries are pinned."""
        return len(self._pins)
