"""Starting a replica's process: locally, through another host's agent, or on a Ray actor;
and starting it again after a death, at the same endpoints, so its peers reconnect."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from flujo.launch.channels import Channels
from flujo.launch.errors import EXIT_NODE_FAILED, LaunchError
from flujo.launch.fork_client import ForkServer
from flujo.launch.hosts import Hosts
from flujo.launch.manifest import FlowSpec
from flujo.launch.plan import lossless
from flujo.launch.process import NODE_ARGV, NodeProcess, OutputRelay, local_argv
from flujo.launch.reaper import Reaper
from flujo.launch.replica import Key, Replica
from flujo.protocol import CONFIG_ENV, Control
from flujo.snapshots import encode_restore
from flujo.vocab import NodeKind

#: A restarted producer numbers its items from this far past its predecessor's last report,
#: so that no sequence number is used twice (readers skip the gap).
SEQ_JUMP = 1 << 24
#: Called in the loop when a remote or Ray process exits: (replica key, that process, status).
RemoteExit = Callable[[Key, Any, int], None]


class Spawner:
    """Spawns replicas' processes; each new process goes into the replica's state machine."""

    def __init__(
        self,
        flow: FlowSpec,
        replicas: dict[Key, Replica],
        channels: Channels,
        hosts: Hosts,
        relay: OutputRelay,
        reaper: Reaper,
        remote_exit: RemoteExit,
        forks: ForkServer | None = None,
    ) -> None:
        self._flow, self._replicas, self._channels, self._hosts = flow, replicas, channels, hosts
        self._relay, self._reaper, self._remote_exit = relay, reaper, remote_exit
        self._forks = forks  # Python nodes start as its forks

    def spawn_all(self) -> None:
        for replica in self._replicas.values():
            try:
                replica.spawned(self._spawn(replica), time.time())
            except OSError as error:
                raise LaunchError(EXIT_NODE_FAILED, f'node "{replica.config.label}" could not start: {error}') from None

    def respawn(self, replica: Replica) -> None:
        """Start a new process for a replica whose process died: same endpoints, so its peers reconnect."""
        config = replica.config
        seq_start, resume_at = config.seq_start, None
        if config.kind == NodeKind.PRODUCER:
            stats = replica.sample.stats
            next_seq = stats.get("next_seq", seq_start)
            # A drained producer reported its next number exactly; a dead one may have sent more.
            seq_start = next_seq if replica.current.drained is not None else next_seq + SEQ_JUMP
            if self._lossless_outputs(config.node):
                # Drained or dead, what its readers had not acknowledged left with the process:
                # the successor produces it again (9.4), and readers drop what they have.
                resume_at = self._resume_point(config, stats.get("acked"), next_seq)
        restore = encode_restore(*replica.snapshot) if replica.snapshot is not None else None
        replica.respawning(
            dataclasses.replace(
                config,
                seq_start=seq_start,
                resume_at=resume_at,
                restore_state=restore,
                generation=config.generation + 1,
            )
        )
        # Senders that already ended their stream towards the dead process will not send it
        # again; a lossless one that still runs replays to the successor, end of stream included.
        reader = self._flow.nodes[config.node]
        for port in replica.config.inputs:
            replays = lossless(self._flow, self._flow.nodes[port.source], reader)
            for index in range(port.senders):
                sender = self._replicas[(port.source, index)]
                ended = sender.ended_for_good if replays else sender.finished or sender.exit_code is not None
                if ended:
                    self._channels.publish(Control.GONE, port.source, index, *replica.key)
        replica.spawned(self._spawn(replica), time.time())

    def _lossless_outputs(self, node: str) -> bool:
        """Every output edge of that producer is lossless: its successor may resume (9.4)."""
        flow = self._flow
        readers = flow.downstream(node)
        return bool(readers) and all(lossless(flow, flow.nodes[node], reader) for reader, _ in readers)

    @staticmethod
    def _resume_point(config: Any, acked: Any, next_seq: int) -> int:
        """Where a producer's successor (after a crash or a graceful restart) resumes: after what
        its readers had done by its last report; before any report, where its predecessor
        started (readers drop what they already have, so going back is safe; going past what
        they have is not)."""
        if type(acked) is int and -1 <= acked < next_seq:
            return acked + 1
        return config.resume_at if config.resume_at is not None else 0

    def _spawn(self, replica: Replica) -> Any:
        config = replica.config
        spec = self._flow.nodes[config.node]
        env = {**spec.env, CONFIG_ENV: config.to_json(), "PYTHONUNBUFFERED": "1"}
        cwd = str(self._flow.base_dir / spec.cwd) if spec.cwd else str(self._flow.base_dir)
        key = replica.key
        command = list(spec.command) if spec.command else None
        ray = self._hosts.ray
        if ray is not None:  # an actor Ray places runs it, with that machine's Python
            ray_process = ray.spawn(
                key,
                spec.resources,
                len(config.inputs),
                config.label,
                command,
                env,
                cwd,
                on_placed=lambda address, ports: self._placed_at(key, address, ports),
                on_exit=lambda code: self._remote_exit(key, ray_process, code),
            )
            return ray_process
        if spec.host is not None:  # its agent starts it, with that host's Python, at the same path
            remote = self._hosts.links[spec.host].spawn(
                config.label, command, env, cwd, on_exit=lambda code: self._remote_exit(key, remote, code)
            )
            return remote
        argv = NODE_ARGV if spec.run else local_argv(spec.command or [])
        return NodeProcess(
            config.label,
            argv,
            {**os.environ, **env},
            cwd,
            self._relay,
            on_exit=lambda pid, code: self._channels.notify_exit(key, pid, code),
            reaper=self._reaper,
            forks=self._forks,
        )

    def _placed_at(self, key: Key, address: str, ports: list[int]) -> dict[str, str]:
        """A restarted replica's new actor runs on ``address``: if that is another machine, its
        inputs bind there (at ``ports``), and its senders are told to connect there. Returns the
        environment to start it with."""
        replica = self._replicas[key]
        config = replica.config
        if config.inputs and not config.inputs[0].endpoint.startswith(f"tcp://{address}:"):
            free = list(ports)
            inputs = tuple(
                dataclasses.replace(port, endpoint=f"tcp://{address}:{free.pop()}") for port in config.inputs
            )
            replica.config = dataclasses.replace(config, inputs=inputs)
            for port in inputs:
                self._channels.publish(Control.MOVED, *key, port.port, port.endpoint)
            for sender in self._replicas.values():  # their own restarts connect to the new place
                sender.config = dataclasses.replace(
                    sender.config,
                    outputs=tuple(
                        dataclasses.replace(
                            edge,
                            endpoints=tuple(
                                next((p.endpoint for p in inputs if p.port == edge.target_port), endpoint)
                                if edge.target == key[0] and index == key[1]
                                else endpoint
                                for index, endpoint in enumerate(edge.endpoints)
                            ),
                        )
                        for edge in sender.config.outputs
                    ),
                )
        spec = self._flow.nodes[key[0]]
        return {**spec.env, CONFIG_ENV: replica.config.to_json(), "PYTHONUNBUFFERED": "1"}
