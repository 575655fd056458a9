"""Ctrl-C, or closing the terminal, stops `agent-exporter demo --stack --replicas 2` and everything it started.

A terminal sends SIGINT to its whole foreground process group.  The demo's
children (Prometheus, two clustered Alertmanagers, the replicas) must not take
it themselves: signalled together, an Alertmanager whose cluster peer is
already gone spends 10 s trying to leave the cluster, so the demo took 12 s to
stop.  The demo stops them itself, in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from process_output import lines_of, until

pytestmark = pytest.mark.integration

# Stopping takes about 2 s here: the replicas drain, then the stack stops.  The bound is well
# under the 10 s an Alertmanager spends leaving a cluster whose peer is gone.
STOP_WITHIN = 8.0


def descendants(pid: int) -> set[int]:
    """The PIDs of `pid`'s children, their children, and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue        # exited meanwhile
        child, parent = int(stat.parent.name), int(text.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_a_terminal_signal_stops_the_fleet_and_its_stack_promptly(signum):
    # A session of its own, like a shell's job: SIGINT to its process group is what Ctrl-C sends,
    # SIGHUP what a closed terminal sends.
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_exporter", "demo", "--stack", "--replicas=2", "--duration=120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output: list[str] = []
    started: set[int] = set()
    try:
        for line in until(lines_of(process.stdout), time.monotonic() + 90):
            output.append(line)
            if line.startswith("[replica 2] [demo] t="):    # the fleet runs: every process is up
                break
        else:
            pytest.fail("the fleet did not start:\n" + "\n".join(output))
        started = descendants(process.pid)
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in started if alive(pid)}
        assert {"prometheus", "prometheus-aler"} <= names       # comm is cut to 15 characters

        os.killpg(process.pid, signum)
        interrupted = time.monotonic()
        exit_code = process.wait(timeout=60)
        stopped_after = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in started:         # whatever this test's demo left behind, and only that
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    transcript = "\n".join(output[-40:])
    assert exit_code == 0, transcript
    assert stopped_after < STOP_WITHIN, f"{signum.name} took {stopped_after:.1f} s to stop the demo"
    assert not [pid for pid in started if alive(pid)], "the demo left processes running"
