"""A command's output, line by line as it comes, for the tests that watch one run."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator


def lines_of(stream) -> queue.Queue:
    """The lines of `stream` (a process's text output) without their newline, then None at its end;
    a daemon thread reads them, so a test can wait for a line with a deadline."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def until(lines: queue.Queue, deadline: float) -> Iterator[str]:
    """The lines that arrive before `deadline` (time.monotonic()), ending early with the output."""
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            return
        if line is None:
            return
        yield line
