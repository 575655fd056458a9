"""The demo's terminal: message lines, a live status line, and what the healing layer does.

`[demo]` lines report the run, `[healing]` lines every breaker change and every
move of a step's traffic, and with --replicas each replica's lines are relayed
prefixed with `[replica N]`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from .. import catalog


class Console:
    """Message lines, and a one-line live status kept at the bottom on a terminal."""

    def __init__(self, stream=None, *, status_every: float = 10.0):
        self.stream = stream if stream is not None else sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._lock = threading.Lock()
        self._status = ""
        self._status_every = status_every
        self._last_status_line = 0.0

    def line(self, text: str) -> None:
        with self._lock:
            if self.tty and self._status:
                self.stream.write("\r\033[K" + text + "\n" + self._status)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        with self._lock:
            if self.tty:
                self._status = text
                self.stream.write("\r\033[K" + text)
                self.stream.flush()
                return
            now = time.monotonic()
            if now - self._last_status_line >= self._status_every:
                self._last_status_line = now
                self.stream.write(text + "\n")
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self.tty and self._status:
                self.stream.write("\n")
                self.stream.flush()
            self._status = ""


def _events_total(store) -> float:
    for snap in store.snapshot():
        if snap.spec is catalog.EXPORTER_EVENTS:
            return float(sum(snap.values))
    return 0.0


class StatusReporter:
    """Computes the live status: events/s, execution success rate, spend so far."""

    def __init__(self, orchestrator, store):
        self.orchestrator = orchestrator
        self.store = store
        self._last = (time.monotonic(), _events_total(store))

    def text(self) -> str:
        now, events = time.monotonic(), _events_total(self.store)
        last_time, last_events = self._last
        self._last = (now, events)
        rate = (events - last_events) / max(now - last_time, 1e-9)
        stats = self.orchestrator.stats
        success = 1 - stats.execution_errors / stats.executions if stats.executions else 1.0
        tasks = stats.tasks_done + stats.tasks_failed
        task_success = stats.tasks_done / tasks if tasks else 1.0
        incident = self.orchestrator.incident
        elapsed = self.orchestrator.elapsed()
        if elapsed < incident.start:
            phase = f"incident in {incident.start - elapsed:.0f}s"
        elif elapsed < incident.end:
            phase = f"incident: {incident.agent} degraded for {incident.end - elapsed:.0f}s more"
        else:
            phase = "incident over"
        return (f"[demo] t={elapsed:4.0f}s {rate:6,.0f} events/s | agent success {success:6.1%} | "
                f"tasks {tasks:,} ({task_success:.1%} done) | spend ${stats.spend_usd:,.2f} | {phase}")


# A step's traffic "moved" when another agent gets at least this share of it (near-equal
# agents trade the lead all the time, which is not news).
TRAFFIC_SHIFT_WEIGHT = 0.8
TRAFFIC_SHIFT_POLLS = 4      # ... for this many status polls in a row (2 s)


class HealingReporter:
    """`[healing]` lines: every breaker change as it happens, and where each step's traffic goes."""

    def __init__(self, remediator, console: Console):
        self.remediator = remediator
        self.console = console
        self._leaders: dict[str, str] = {}
        self._contenders: dict[str, tuple[str, int]] = {}    # task -> (agent, polls it has led)
        remediator.breakers.add_listener(self.breaker_changed)
        # These lines say what the breakers' own log lines would, once each.
        logging.getLogger("agent_exporter.healing.breaker").setLevel(logging.WARNING)

    def breaker_changed(self, agent: str, old: str, new: str, reason: str) -> None:
        self.console.line(f"[healing] {agent}: circuit {old} -> {new} ({reason})")

    def poll(self) -> None:
        """Report a step whose traffic moved to another agent (as /v1/agents shows it)."""
        for task, weights in self.remediator.selector.published().items():
            if not weights:
                continue
            leader, weight = max(weights.items(), key=lambda item: item[1])
            # Until a move is seen the traffic is the first choice's (candidates come first choice
            # first): a move during the first polls is news too, not where the story starts.
            previous = self._leaders.setdefault(task, next(iter(weights)))
            if leader == previous or weight < TRAFFIC_SHIFT_WEIGHT:
                self._contenders.pop(task, None)
                continue
            contender, polls = self._contenders.get(task, (leader, 0))
            polls = polls + 1 if contender == leader else 1
            self._contenders[task] = (leader, polls)
            if polls >= TRAFFIC_SHIFT_POLLS:
                self._leaders[task] = leader
                del self._contenders[task]
                self.console.line(f"[healing] {task}: traffic moved from {previous} to {leader} "
                                  f"(selector weight {weight:.2f})")


class LogFollower:
    """Relays the lines other processes write to their log files, each with its prefix."""

    def __init__(self, console: Console, interval: float = 0.2):
        self.console = console
        self.interval = interval
        self._files: list[tuple[str, Path, int]] = []     # (prefix, path, offset read so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-log-follower", daemon=True)

    def follow(self, prefix: str, path: Path) -> None:
        self._files.append((prefix, Path(path), 0))

    def start(self) -> "LogFollower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._relay()          # what was written while stopping

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._relay()

    def _relay(self) -> None:
        for i, (prefix, path, offset) in enumerate(self._files):
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except OSError:
                continue
            complete = data[:data.rfind(b"\n") + 1]
            for line in complete.decode(errors="replace").splitlines():
                self.console.line(f"{prefix} {line}")
            self._files[i] = (prefix, path, offset + len(complete))
