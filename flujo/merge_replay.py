"""What a lossless merge's successor does with the next input of a port while it replays its
predecessor's log (docs/PROTOCOL.md, section 9.5), without sockets.

The successor emits every output its predecessor logged, in logged number order, before any
new one: its readers drop a number lower than one they already passed on, so an output that
went out of order would be lost. It therefore waits for the input of the next logged entry
on that entry's port, and decides on each port head with :func:`replay_action`.

An input that will never come again must not stop the merge. Its senders keep every input
the merge has not acknowledged and replay it in order (9.3), and the merge records in its
log what it acknowledged upstream before its senders hear it: the entries a successor waits
for are the ones its senders still keep. One of them can still be missing from the replay
when a graceful hand-over freed it (its output went downstream, exactly once), a sender's
retention overflowed (counted in ``unretained``: at most once, as 9.3 says) or the sender
ended: the port's next input is then past it, or the port has ended, and the entry is given
up (its output number is not used again; readers take a gap in a merge's numbers as they
take any SKIP-less gap). No entry is given up while its port might still bring it.
"""

from __future__ import annotations

from enum import Enum


class ReplayAction(Enum):
    """What to do with the head of the port of the next logged entry."""

    TAKE = "take"  # the logged input: emit it with its logged number
    DONE = "done"  # an input acknowledged downstream already: drop it (acknowledged again)
    DEFER = "defer"  # an input the predecessor never numbered: numbered anew once the replay is over
    GIVE_UP = "give up"  # the logged input will not come again: go on with the next entry
    WAIT = "wait"  # nothing on that port yet: wait for it


def replay_action(logged: int, head: int | None, ended: bool, acked_through: int, replays: bool = True) -> ReplayAction:
    """The next logged entry is input ``logged`` of a port whose first waiting input is
    ``head`` (None: none waits), which has ``ended`` (every sender sent its end of stream), and
    whose inputs up to ``acked_through`` are done downstream. ``replays``: the port's senders
    keep and replay (a lossless edge); from any other nothing comes again."""
    if not replays:
        return ReplayAction.GIVE_UP  # at most once, as that edge is (9.7): never waited for
    if head is None:
        return ReplayAction.GIVE_UP if ended else ReplayAction.WAIT
    if head == logged:
        return ReplayAction.TAKE
    if head > logged:  # a port delivers in order: its senders went past the logged input
        return ReplayAction.GIVE_UP
    if head <= acked_through:
        return ReplayAction.DONE
    # Below the logged input and not done: the predecessor never numbered it (a gap it gave
    # up on, filled late). Numbered now, it would go out ahead of lower logged numbers.
    return ReplayAction.DEFER
