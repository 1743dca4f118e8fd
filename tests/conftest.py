"""Fixtures that run real flows in real processes, and prove none is left behind."""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from launcher_forks import ForkedLauncher, LauncherForks
from manifests import nodes_toml
from netns import Host

from flujo.launch.cli import main

HERE = Path(__file__).parent
NODES = HERE / "flow_nodes.py"  # node classes the test manifests use


def poll_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> object:
    """Wait until ``condition()`` is truthy; fail the test after ``timeout`` seconds. It looks
    again after 5 ms, then twice as long each time up to ``interval``: a short wait ends soon
    after its condition, and a long one costs a look every ``interval`` only. The suite is
    CPU-bound and most conditions ask a launcher for its status (about 1.5 ms of CPU there and
    here) or read a file: at a look every 20 ms, as before, each waiting test took about 7 % of
    a core, and a run has hundreds of them."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(pause)
        pause = min(pause * 2, interval)
    raise AssertionError(f"condition not met within {timeout} s")


def flow_processes(flow_name: str) -> list[psutil.Process]:
    """Live processes that belong to the named flow (its launcher, its fork server, its nodes)."""
    marker = f'"flow": "{flow_name}"'
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            env = process.info["environ"] or {}
            cmdline = " ".join(process.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # A forked Python node and the fork server name their flow in their title (command line).
        ours = (
            marker in env.get("FLUJO_NODE_CONFIG", "")
            or f"flujo-test-flow={flow_name}" in cmdline
            or f"flow={flow_name}" in cmdline.split()
        )
        if ours and process.status() != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


_IN_PROCESS = threading.Lock()
_FORKS: list[LauncherForks] = []  # this worker's launcher fork server, once started


def _launcher_forks() -> LauncherForks:
    if not _FORKS:
        _FORKS.append(LauncherForks())
    return _FORKS[0]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class FlowRunner:
    """Writes manifests into a temporary folder and runs ``flujo-launch`` on them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.running: list[ForkedLauncher] = []
        # Each test's launchers announce themselves in their own folder: tests never see each other.
        self.env = {**os.environ, "FLUJO_RUNS": str(folder / "runs")}

    def manifest(self, body: str | Mapping[str, Mapping[str, object]], flow: str = "") -> Path:
        """A manifest with a unique flow name; ``{nodes}`` stands for the test nodes file.
        ``body`` is TOML text, or node name -> fields (rendered by manifests.nodes_toml)."""
        text = body if isinstance(body, str) else nodes_toml(body)
        text = f'[flow]\nname = "{self.name}"\n{flow}\n' + textwrap.dedent(text).replace("{nodes}", str(NODES))
        path = self.folder / "manifest.toml"
        path.write_text(text)
        return path

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def start(self, manifest: Path, *options: str, on: Host | None = None, nice: int = 0) -> ForkedLauncher:
        """Run the launcher on ``manifest``, forked from this worker's launcher fork server
        (tests/launcher_forks.py), on host ``on`` (its network namespace; None: this one) at
        niceness ``nice``."""
        marker = f"flujo-test-flow={self.name}"  # in its command line: the orphan check finds it
        process = _launcher_forks().start(
            [str(manifest), *options],
            self.env,
            f"flujo-launch {marker} {manifest}",
            namespace=on.namespace if on else None,
            nice=nice,
        )
        self.running.append(process)
        return process

    def command(self, *args: str) -> Result:
        """Run ``flujo-launch ARGS`` (stop, status, ...) against this test's flows, in this
        process: tests poll status often, and a Python process for each look costs a core
        on a loaded machine. (test_cli runs the installed command itself.) One at a time: the
        runner swaps sys.stdout and os.environ, and tests may poll from a thread."""
        with _IN_PROCESS:
            done = CliRunner().invoke(main, list(args), env=self.env)
        stderr = done.stderr
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            stderr += "".join(traceback.format_exception(done.exception))
        return Result(done.exit_code, done.stdout, stderr)

    def replicas(self) -> dict[str, dict]:
        """This test's running flow, by replica label, from `flujo-launch status --json` ({} when not running)."""
        reply = self.command("status", "--json", "--flow", self.name)
        if reply.returncode != 0:  # not announced yet, or already gone
            return {}
        return {node["label"]: node for node in json.loads(reply.stdout)["nodes"]}

    def run(self, manifest: Path, timeout: float = 40) -> Result:
        process = self.start(manifest)
        stdout, stderr = process.communicate(timeout=timeout)
        return Result(process.returncode, stdout, stderr)

    def cleanup(self) -> list[str]:
        """Kill whatever is left; return descriptions of the orphans found."""
        for process in self.running:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it ended, its exit not yet reported
                    os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        orphans = []
        try:
            poll_for(lambda: not flow_processes(self.name), timeout=5)
        except AssertionError:
            for process in flow_processes(self.name):
                orphans.append(f"{process.pid} {' '.join(process.cmdline())}")
                process.kill()
        return orphans


#: What the suite's node, launcher and agent processes import from source: the package (flujo,
#: flujo.launch, flujo.nodes), the samples' and the chaos harness's nodes, and the test nodes and
#: helpers they load by path.
_IMPORTED_BY_PROCESSES = tuple(HERE.parent / name for name in ("flujo", "launch", "nodes", "samples", "bench"))


def pytest_configure(config: pytest.Config) -> None:
    """Compile what the flows' processes import, once, before any test starts one. A run starts
    thousands of node and launcher processes; where PYTHONDONTWRITEBYTECODE is set (as on the
    development machine) nothing writes .pyc files, and each process compiled the package from
    source: about 0.05 s more CPU each (0.16 s instead of 0.11 s to import flujo.node, 0.20 s
    instead of 0.14 s for the launcher). py_compile writes whatever that variable says, into the
    __pycache__ folders .gitignore already leaves out; files already compiled are not redone."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller compiled before starting it
        return
    for folder in _IMPORTED_BY_PROCESSES:
        compileall.compile_dir(folder, quiet=1)
    for helper in HERE.glob("*.py"):
        if not helper.name.startswith(("test_", "conftest")):  # pytest rewrites those (below)
            compileall.compile_file(helper, quiet=1)
    _cache_rewritten_tests(config)


def _cache_rewritten_tests(config: pytest.Config) -> None:
    """Write pytest's cache of the test modules with their asserts rewritten, once, for every
    worker to read. Each of the workers collects every module; where PYTHONDONTWRITEBYTECODE
    is set pytest reads that cache but never writes it, and in a fresh clone the workers would
    all rewrite at once anyway: 1.7 of the 3.6 CPU-s each worker spent collecting. Uses pytest's
    own functions (private, pytest is held below 9 in pyproject.toml): if they move, the workers
    rewrite as before."""
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
        )
    except ImportError:
        return
    state = config.stash.get(assertstate_key, None)
    if state is None or config.getoption("assertmode") != "rewrite":
        return
    for module in [*HERE.glob("test_*.py"), HERE / "conftest.py"]:
        cache = get_cache_dir(module)
        pyc = cache / (module.name[:-3] + PYC_TAIL)
        if _read_pyc(module, pyc) is None:
            cache.mkdir(exist_ok=True)
            source_stat, code = _rewrite_test(module, config)
            _write_pyc(state, code, source_stat, pyc)


@pytest.fixture(autouse=True)
def _private_flujo_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs folder and key folder of this test's own, so that tests running side by side
    (pytest -n) never see each other's flows or share a key pair being written."""
    home = tmp_path_factory.mktemp("flujo-home")
    monkeypatch.setenv("FLUJO_RUNS", str(home / "runs"))
    monkeypatch.setenv("FLUJO_HOME", str(home / "keys"))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (made if missing), held across processes."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_c_sdk(timeout: float = 300) -> subprocess.CompletedProcess:
    """``make -C sdk/c``, one build at a time: test workers running side by side share the
    build folder, and make is not safe to run twice at once in the same folder."""
    sdk = HERE.parent / "sdk" / "c"
    (sdk / "build").mkdir(exist_ok=True)
    with _locked(sdk / "build" / ".lock"):
        return subprocess.run(["make", "-s", "-C", str(sdk)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def flow(tmp_path: Path):
    runner = FlowRunner(tmp_path)
    yield runner
    orphans = runner.cleanup()
    assert not orphans, f"processes left behind: {orphans}"


#: The longest tests (`pytest -n 5 --durations=40`: 6 s to 40 s each, the rest under
#: 6 s), run first: workers take tests in collection order after the groups (xdist sorts work
#: units by size, so tests/test_ray.py's cluster group and the people counter's pair go first), so
#: a long test started last would run on alone while the other workers sit idle. Longest first; a
#: prefix names a file or test.
LONG_FIRST = (
    "tests/test_people_counter.py::test_manifest_sample_runs_the_whole_clip",
    "tests/test_people_counter.py::test_counts_are_the_same_from_run_to_run_even_across_restarts",
    "tests/test_hostile_wire.py::test_forged_and_malformed_messages_are_refused_while_the_stream_goes_on",
    "tests/test_flow_context.py::test_the_readme_example_runs_as_written",
    "tests/test_live_output.py::test_a_chatty_node_prints_as_fast_on_a_terminal_as_into_a_pipe",
    "tests/test_sdk_js.py::test_js_nodes_pass_the_conformance_kit_at_the_restartable_level",
    "tests/test_conformance.py::test_python_processor_reaches_acknowledging",
    "tests/test_chaos.py::test_random_kills_lose_and_repeat_nothing",
    "tests/test_conformance.py::test_python_consumer_reaches_acknowledging",
    "tests/test_polyglot.py::test_the_polyglot_sample_gets_every_frame_right",
    "tests/test_sdk_c.py::test_the_c_examples_pass_the_conformance_kit_at_the_restartable_level",
    "tests/test_lossless.py::test_a_graceful_restart_then_a_crash_of_the_reader_loses_nothing",
    "tests/test_lossless_shm.py::test_memory_stays_bounded_while_the_reader_acknowledges_nothing",
    "tests/test_shared_memory.py::test_frames_kept_past_the_call_stay_unchanged",
    "tests/test_ssh_hosts.py::test_a_lost_session_is_started_again_and_the_nodes_restart_there_by_policy",
    "tests/test_partitions.py::test_a_link_cut_shorter_than_the_timeout_loses_nothing",
    "tests/test_ssh_hosts.py::test_ssh_failures_stop_the_launch_with_the_ssh_clients_own_words",
    "tests/test_status_restarts.py::test_status_across_a_restart_mid_stream",
    "tests/test_conformance.py::test_python_producer_reaches_acknowledging",
    "tests/test_partial_stop.py::test_status_shows_rates_queues_busy_and_the_bottleneck",
    "tests/test_ssh_hosts.py::test_one_command_runs_the_flow_with_an_agent_started_over_ssh",
    "tests/test_people_counter.py::test_python_sample_runs_unchanged_on_another_video",
    "tests/test_ssh_hosts.py::test_sync_copies_the_flow_folder_to_a_host_that_does_not_have_it",
    "tests/test_shared_memory.py::test_graceful_restart_of_a_producer_whose_frames_a_reader_keeps",
    "tests/test_cli.py::test_conform_runs_the_kit_on_a_node_program_and_passes_its_verdict_on",
    "tests/test_shared_memory.py::test_a_killed_sender_costs_only_its_frames_in_flight",
    "tests/test_vision_detector.py::test_vision_nodes_load_only_their_own_module",
    "tests/test_partitions.py::test_a_cut_past_the_timeout_restarts_the_host_nodes_when_it_returns",
)


def _rank(item: pytest.Item) -> int:
    """An item's place among LONG_FIRST; every other test after them, in collection order."""
    return next((rank for rank, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)), len(LONG_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the order within each rank is kept
