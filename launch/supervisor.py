"""The launcher's policy: what each subscription, report and exit means for a replica and for
the flow. It starts the flow once every replica is ready, releases ports, restarts a replica
that died (its restart policy and budget), replaces one that drained (a graceful restart), starts
the stop ladder of a node whose inputs have ended, and stops the flow when a node fails."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flujo.launch.channels import Channels
from flujo.launch.fork_client import ForkServer
from flujo.launch.handover import Handovers
from flujo.launch.hosts import Hosts
from flujo.launch.ladder import StopLadder
from flujo.launch.manifest import FlowSpec
from flujo.launch.process import NodeProcess, OutputRelay
from flujo.launch.reaper import Reaper
from flujo.launch.replica import Key, Replica, ReplicaState
from flujo.launch.spawner import Spawner
from flujo.launch.timers import Timers
from flujo.protocol import Control, Status, identity_topic
from flujo.shm_wire import cleanup_process_segments
from flujo.vocab import Join

#: How long a node's exit waits for its last report (its error, its end of stream), which travels another way.
LAST_REPORT_WAIT = 0.5


class Supervisor:
    """Applies every event of a flow run to its replicas; ``stop`` and ``restart`` are its commands."""

    def __init__(
        self,
        flow: FlowSpec,
        replicas: dict[Key, Replica],
        channels: Channels,
        hosts: Hosts,
        timers: Timers,
        say: Callable[[str], None],
        relay: OutputRelay,
        reaper: Reaper,
        run_id: str,
        forks: ForkServer | None = None,
    ) -> None:
        self._flow, self.replicas, self._channels, self._timers = flow, replicas, channels, timers
        self._say, self._relay, self._run_id = say, relay, run_id
        self.started = False  # every replica was ready: START went out
        self.stopping = False  # the whole flow was told to stop
        self.failures: list[str] = []
        self._ladder = StopLadder(flow, timers, say)
        self._handovers = Handovers(replicas, channels.publish, say, self._ladder.start)
        self._spawner = Spawner(flow, replicas, channels, hosts, relay, reaper, self._on_remote_exit, forks)
        self._dead_pools: dict[Key, int] = {}  # lossless senders: the last dead process whose segments stay

    @property
    def running(self) -> bool:
        """Some replica runs, or will run again."""
        return not all(replica.ended_for_good for replica in self.replicas.values())

    def spawn_all(self) -> None:
        self._spawner.spawn_all()

    # -- commands ----------------------------------------------------------------------------------
    def stop(self, nodes: list[str] | None = None) -> None:
        """Stop the given nodes (default: every producer); the rest drains organically."""
        names = nodes if nodes is not None else self._flow.producers()
        if nodes is None:
            self.stopping = True
        self._channels.publish(Control.STOP, *names)
        for replica in self.replicas.values():
            if replica.config.node in names:
                replica.stop_requested()
                self._ladder.start(replica)
        self._watch_readers()

    def restart(self, node: str) -> list[str]:
        """Replace the node's replicas one after the other, each drained first; the rest of
        the flow runs on. Returns the replicas' labels."""
        return self._handovers.restart(node)

    def ended(self, node: str) -> str:
        """How the node ended (e.g. "exit status 0"), or "" while any of its replicas runs or will restart."""
        replicas = [r for r in self.replicas.values() if r.config.node == node]
        if not all(r.ended_for_good for r in replicas):
            return ""
        codes = sorted({r.exit_code for r in replicas if r.exit_code is not None})
        return f"exit status {', '.join(map(str, codes))}"

    # -- events ------------------------------------------------------------------------------------
    def on_subscription(self) -> None:
        topic = self._channels.subscription()
        if topic is None:
            return  # an unsubscription
        for replica in self.replicas.values():
            if topic == identity_topic(*replica.key):
                replica.subscribed()
                self._channels.replay()  # bring this replica up to date
                self._handovers.back(replica)
        self._start_when_ready()

    def on_status(self, kind: Status, node: str, index: int, payload: Any) -> None:
        replica = self.replicas.get((node, index))
        if replica is None:
            return
        if kind is Status.READY:
            replica.became_ready()
            self._start_when_ready()
            self._handovers.back(replica)
        elif kind is Status.ENDING:
            self._ladder.start(replica)
        elif kind is Status.RELEASED:
            self._release(replica, payload or [port.port for port in replica.config.inputs])
            self._handovers.progress()
        elif kind is Status.STATS:
            replica.sample.update(payload, time.time())
        elif kind is Status.FINISHED:
            replica.finished_stream()
            replica.sample.update(payload or {}, time.time())
            self._handovers.progress()
            self._watch_readers()
        elif kind is Status.DRAINED:
            replica.drained(payload)
            replica.sample.update(payload["stats"], time.time())
            self._handovers.progress()
        elif kind is Status.POSITION:
            self._handovers.on_position(replica.key, payload)
        elif kind is Status.PAUSE_SEEN:
            self._handovers.on_pause_seen(replica.key, payload)
        elif kind is Status.SNAPSHOT:  # checked by flujo/wire_check.py: [through, bounded bytes]
            replica.keep_snapshot(*payload)
            # Only now may that process acknowledge upstream through it (section 9.6).
            self._channels.publish(Control.KEPT, node, index, replica.config.generation, payload[0])
        elif kind is Status.ERROR:
            replica.failed_with(payload)
            for line in payload.get("traceback", "").rstrip("\n").splitlines():
                self._relay.line(replica.config.label, line)  # the failure itself is judged at its exit

    def _unlink_segments(self, replica: Replica, pid: int) -> None:
        """A dead process's shared-memory segments go at once, but a lossless sender's stay until
        that replica's next process ends (or the run does): descriptors it sent may still be on
        their way, and a reader refusing one it cannot map any more while it takes the next
        would lose that item (the replay its successor gets stops where its readers already
        are). So at most one dead pool per replica is left in /dev/shm."""
        key = replica.key
        if any(edge.lossless and edge.shm for edge in replica.config.outputs):
            previous, self._dead_pools[key] = self._dead_pools.get(key), pid
            if previous is None:
                return
            pid = previous
        cleanup_process_segments(self._run_id, *key, pid)

    def on_local_exit(self) -> None:
        """A local child's watcher thread reported its exit."""
        node, index, pid, code = self._channels.next_exit()
        replica = self.replicas[(node, index)]
        if replica.process is not None and replica.process.pid == pid:  # not an earlier process
            self._on_exit(replica, code)

    def _on_remote_exit(self, key: Key, process: Any, code: int) -> None:
        """Called in the loop when an agent or Ray reports an exit (or its host is lost)."""
        replica = self.replicas[key]
        if replica.process is process:
            self._on_exit(replica, code)

    def _on_exit(self, replica: Replica, code: int) -> None:
        if code == 0 and replica.current.subscribed and not replica.finished and replica.current.drained is None:
            # Its end-of-stream report (with its last counters and summary) comes over the status
            # socket, the exit another way: seen under load arriving after the flow had ended.
            self._await_report(lambda: replica.finished)
        was = replica.exited(code, time.time())
        # Its shared memory: senders take back what it held, its own segments go; lossless
        # senders replay to its successor what it had not acknowledged, released or not.
        self._channels.forget_released(*replica.key)
        self._channels.publish(Control.EXITED, *replica.key)
        if isinstance(replica.process, NodeProcess):
            self._unlink_segments(replica, replica.process.pid)
        if code > 0 and replica.error is None and (replica.config.run or replica.current.subscribed):
            self._await_report(lambda: replica.error is not None)  # a node that speaks the protocol may have said why
        if replica.restarting:  # it was draining for a graceful restart: its successor starts now
            if replica.current.drained is None:
                self._say(
                    f'node "{replica.config.label}" exited with status {code} before it had drained; '
                    "restarting it (what its queues held may be lost)"
                )
            self._respawn(replica)
            return
        self._handovers.progress()  # an exit may be what a handover waited for
        if was is ReplicaState.DRAINING:  # it ended its stream while draining: nothing to restart
            self._handovers.back(replica, ended=True)
        if self._should_restart(replica, code):
            return
        for port in replica.config.inputs:  # again: what its process released was forgotten at its exit
            replica.released_port(port.port)
            self._channels.publish(Control.RELEASED, *replica.key, port.port)
        # Readers count it as ended, if they have not yet; senders, as released for good (a
        # lossless sender stops waiting for its acknowledgements).
        self._channels.publish(Control.GONE, *replica.key)
        self._watch_readers()
        self._start_when_ready()  # a node that ended before it was ready does not hold the others back
        if replica.current.escalated:
            self._fail(replica, f"did not end within its stop timeout and needed {replica.current.escalated}")
        elif replica.error is not None:
            self._fail(replica, replica.error.get("message", "failed"))
        elif code != 0:
            self._fail(replica, f"exited with status {code}")

    def _await_report(self, arrived: Callable[[], bool]) -> None:
        """A node sends its last report (its error, its end of stream) before it exits, but the
        report comes over the status socket and the exit another way: give it a moment, so the
        failure keeps its reason and traceback, and the status its last counters."""
        deadline = time.monotonic() + LAST_REPORT_WAIT
        while not arrived() and (left := deadline - time.monotonic()) > 0:
            if self._channels.wait_for_status(left):
                self._channels.receive_status(self.on_status)  # checked like every other report

    def _should_restart(self, replica: Replica, code: int) -> bool:
        """Apply the node's restart policy to a death mid-stream; True when a restart is scheduled."""
        budget = replica.budget
        if replica.finished or replica.current.escalated or budget is None or not budget.wants_restart(code):
            return False
        if self.failures:
            return False  # the flow is already stopping because of a failure
        delay = budget.next_delay(time.monotonic())
        if delay is None:
            spec = self._flow.nodes[replica.config.node]
            self._fail(
                replica,
                f"exited with status {code} and was already restarted {spec.max_restarts} "
                f"times within {spec.restart_window:g} s",
            )
            return False
        self._say(
            f'node "{replica.config.label}" exited with status {code}; restarting in {delay:.1f} s '
            f"(restart {budget.total})"
        )
        replica.restart_scheduled()
        self._timers.after(delay, lambda: self._respawn(replica))
        return True

    def _respawn(self, replica: Replica) -> None:
        self._spawner.respawn(replica)
        self._watch_readers()  # its senders may have ended meanwhile

    # -- consequences ------------------------------------------------------------------------------
    def _watch_readers(self) -> None:
        """Start the stop ladder of every replica whose inputs have all ended or been stopped
        (any one input of a zip): a node that never reads, or hangs, must not hold the flow."""
        for replica in self.replicas.values():
            record = replica.current
            if (
                replica.config.inputs
                and not record.grace_started
                and record.exit_code is None
                and not record.finished
                and self._inputs_ended(replica)
            ):
                self._ladder.start(replica, reading=True)

    def _inputs_ended(self, replica: Replica) -> bool:
        def ended(sender: Replica) -> bool:
            return sender.finished or sender.stopped or sender.ended_for_good

        ports = [
            all(ended(self.replicas[(port.source, index)]) for index in range(port.senders))
            for port in replica.config.inputs
        ]
        return all(ports) if replica.config.join == Join.MERGE else any(ports)

    def _start_when_ready(self) -> None:
        if self.started or self.stopping:
            return
        if all(replica.started for replica in self.replicas.values()):
            self.started = True
            self._channels.publish(Control.START)

    def _release(self, replica: Replica, ports: list[str]) -> None:
        for port in ports:
            if replica.released_port(port):
                self._channels.publish(Control.RELEASED, *replica.key, port)

    def _fail(self, replica: Replica, reason: str) -> None:
        self.failures.append(f'node "{replica.config.label}" failed: {reason}')
        self._say(f'node "{replica.config.label}" failed: {reason}; stopping the flow')
        if not self.stopping:
            self.stop()
