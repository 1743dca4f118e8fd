"""When to restart a node that died, and after how long: policy, cap and exponential back-off.

Pure and clock-driven, so it is tested with a fake clock.
"""

from __future__ import annotations

from collections import deque

from flujo.vocab import RestartPolicy

FIRST_DELAY = 0.1  # seconds before the second restart within the window (the first has none)
MAX_DELAY = 10.0  # back-off ceiling


class RestartBudget:
    """Restarts of one node: at most ``max_restarts`` within ``window`` seconds.

    The first restart in the window comes at once: recovery from a single crash is a matter of
    milliseconds (docs/PROTOCOL.md, section 9.3). Restart *n* > 1 waits ``FIRST_DELAY * 2**(n-2)``,
    capped at ``MAX_DELAY``: a node that keeps crashing is retried ever more slowly, then given up on.
    """

    def __init__(self, policy: str, max_restarts: int, window: float) -> None:
        self.policy, self.max_restarts, self.window = policy, max_restarts, window
        self._recent: deque[float] = deque()
        self.total = 0

    def wants_restart(self, exit_code: int) -> bool:
        """Whether the policy restarts a replica that died with ``exit_code`` mid-stream."""
        return self.policy == RestartPolicy.ALWAYS or (self.policy == RestartPolicy.ON_FAILURE and exit_code != 0)

    def next_delay(self, now: float) -> float | None:
        """Record a restart at ``now`` and return its delay, or None when the cap is reached."""
        while self._recent and now - self._recent[0] > self.window:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            return None
        self._recent.append(now)
        self.total += 1
        count = len(self._recent)
        return 0.0 if count == 1 else min(MAX_DELAY, FIRST_DELAY * 2 ** (count - 2))
