"""A pytest plugin (loaded by conftest.py): no test may leave a process, thread or DDS participant
behind, and no callback may fail unseen.

Why: a process, spin thread or DDS participant that outlives its test takes CPU, GIL time and
discovery traffic from every test after it, and on a 2-core machine that made real-time tests fail
inside the full suite that passed alone (issue 35). So after the last test of each module:

- **processes**: every process started while the session runs inherits ``DYSL_TEST_SESSION=<pid>``
  (set here, before any test starts one), so children of children and processes re-parented to init
  are found by their environment; children of this process that were never waited for (zombies) too.
  Leftovers are listed with their module and killed, so that later modules run on a quiet machine.
- **threads**: Python threads that did not exist when the first test started.
- **DDS participants**: rclpy contexts of ``ros_session`` still up, and Fast DDS's per-participant
  threads (``dds.*`` in /proc/self/task) beyond those of the process-wide watchdog.

At the end of the session a leak found anywhere fails the run (exit status 1) with the list.
multiprocessing's resource tracker (started by the first semaphore a worker pool creates, ended by
the interpreter at exit) is stopped before the last check: it belongs to the interpreter, not to a test.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Generator
from contextlib import suppress
from dataclasses import dataclass, field

import pytest

MARK = "DYSL_TEST_SESSION"
os.environ[MARK] = str(os.getpid())
NEEDLE = f"{MARK}={os.getpid()}".encode()
# Fast DDS threads that live as long as the library, not a participant.
DDS_PROCESS_THREADS = ("dds.shm.wdog", "dds.shm.wdog ")
TRACKER = "multiprocessing.resource_tracker"
GRACE_S = 3.0
"""How long a leftover may take to finish on its own (a process still exiting after SIGINT)."""


@dataclass
class Leaks:
    found: list[str] = field(default_factory=list)
    threads_at_start: set[int] = field(default_factory=set)

    def add(self, where: str, what: list[str]) -> None:
        self.found += [f"{where}: {item}" for item in what]


def session_processes() -> dict[int, str]:
    """pid -> command line of every live process started under this session, and unreaped children."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state == "Z":
                if int(ppid) == me:
                    found[pid] = f"<zombie: never waited for> {stat.split('(', 1)[1].rsplit(')', 1)[0]}"
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            if b"\0" + NEEDLE + b"\0" not in b"\0" + environ + b"\0":
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found


def participant_threads() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        with suppress(OSError):
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
            if name.startswith("dds.") and name not in DDS_PROCESS_THREADS:
                names.append(name)
    return names


def leftovers(leaks: Leaks, tracker_ok: bool = True) -> tuple[list[str], dict[int, str]]:
    """What is left now, after a grace period for things still finishing on their own.
    ``tracker_ok``: multiprocessing's resource tracker is the interpreter's (until the session ends)."""
    from ros_harness import open_contexts

    deadline = time.monotonic() + GRACE_S
    while True:
        processes = {
            pid: cmd for pid, cmd in session_processes().items()
            if not (tracker_ok and TRACKER in cmd)
        }
        threads = [t for t in threading.enumerate() if t.ident not in leaks.threads_at_start and t.is_alive()]
        contexts = open_contexts()
        dds = participant_threads()
        if not (processes or threads or contexts or dds) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    items = [f"process {pid} {cmd}" for pid, cmd in processes.items()]
    items += [f"thread {t.name!r} (daemon={t.daemon})" for t in threads]
    items += [f"rclpy context still up (DDS participant), {ctx!r}" for ctx in contexts]
    if dds and not contexts:
        items.append(f"DDS participant threads {sorted(set(dds))}")
    return items, processes


def kill(processes: dict[int, str]) -> None:
    for pid in processes:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with suppress(OSError):
            os.waitpid(pid, os.WNOHANG)


_leaks = Leaks()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    # Everything imported at collection (torch, transformers, ...) moves to the permanent generation:
    # a full collection then scans only what tests allocate, not a 200 ms heap walk inside a
    # real-time test.
    gc.collect()
    gc.freeze()
    _leaks.threads_at_start = {t.ident for t in threading.enumerate() if t.ident is not None}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    yield
    if nextitem is not None and nextitem.module is item.module:
        return
    # The module's fixtures are torn down: whatever its tests started must be gone now.
    items, processes = leftovers(_leaks)
    if items:
        _leaks.add(item.module.__name__ if item.module is not None else item.nodeid, items)
        kill(processes)
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    with suppress(Exception):
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
    items, processes = leftovers(_leaks, tracker_ok=False)
    if items:
        _leaks.add("end of session", items)
        kill(processes)
    if _leaks.found and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _leaks.found:
        terminalreporter.section("left behind by tests", sep="=", red=True, bold=True)
        for line in _leaks.found:
            terminalreporter.line(line)
        terminalreporter.line(f"{len(_leaks.found)} leftover(s): the run fails (test/leak_check.py)")
