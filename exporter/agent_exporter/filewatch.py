"""Whether files read earlier have changed since: for files read again when they change.

Users: webconfig.WatchedWebConfig (the web config and the TLS files it names)
and credentials.TokenFile (the /v1/* bearer token).  A check costs a stat of
each file, so it can be made on every request: a change is seen by the very
next one.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

# File systems stamp modification times from a coarse clock (a jiffy; a second on some, two on FAT),
# so two writes of the same size within one tick leave the same stamp.  As git does for its index, a
# stamp that recent is not trusted alone: the contents are compared too, until a check made once
# that long has passed since the newest stamp.  (A stamp ahead of the clock, from skew, is trusted
# until the clock comes that close to it.)
RACY_NS = 2_000_000_000
# How often files whose reading failed are read again even though their stamps have not changed.
RETRY_SECONDS = 1.0


def _stamps(paths: tuple[Path, ...]) -> tuple:
    """What tells a file changed, for each path.  stat follows symbolic links, so a Kubernetes secret
    volume swapping its ..data link shows as a new inode even when the size and mtime are the same;
    the ctime shows a chmod or chown, which can make an unreadable file readable."""
    stamps = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_ino, stat.st_dev, stat.st_mtime_ns, stat.st_size, stat.st_ctime_ns))
    return tuple(stamps)


def _digests(paths: tuple[Path, ...]) -> tuple:
    """A SHA-256 of each file's contents (None for one that cannot be read): no secret is kept."""
    digests = []
    for path in paths:
        try:
            digests.append(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digests.append(None)
    return tuple(digests)


class FileWatch:
    """The files being read, as they were when their reading began.  Not locked: its owner, which
    reads the files, holds a lock around `changed()` and the reading."""

    def __init__(self):
        self._paths: tuple[Path, ...] = ()
        self._stamps: tuple = ()
        self._digests: tuple = ()
        self._trusted_from_ns: int | None = None      # until then, the contents are compared too
        self._started_ns = 0
        self._retry_at = 0.0

    def restart(self) -> None:
        """Forget every file: a reading of them all begins now."""
        self._paths, self._stamps, self._digests = (), (), ()
        self._started_ns = time.time_ns()
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def add(self, *paths) -> None:
        """Watch these files too, as they are now: call it before reading them, so that a change made
        while they are read shows at the next check."""
        paths = tuple(Path(path) for path in paths)
        self._paths += paths
        self._stamps += _stamps(paths)
        self._digests += _digests(paths)
        newest = max((stamp[2] for stamp in self._stamps if stamp is not None), default=0)
        self._trusted_from_ns = None if self._started_ns >= newest + RACY_NS else newest + RACY_NS

    def changed(self, *, failing: bool = False) -> bool:
        """Whether any file changed since it was added.  `failing` (the last reading failed): also
        true once every RETRY_SECONDS, as what makes a file readable again may not show on it (its
        directory's permissions, a mount)."""
        if failing and time.monotonic() >= self._retry_at:
            return True
        return _stamps(self._paths) != self._stamps or self._changed_under_the_same_stamp()

    def _changed_under_the_same_stamp(self) -> bool:
        if self._trusted_from_ns is None:
            return False
        now = time.time_ns()
        if now < self._trusted_from_ns - 2 * RACY_NS:
            return False        # a write now would stamp an earlier time than the newest stamp
        changed = _digests(self._paths) != self._digests
        if not changed and now >= self._trusted_from_ns:
            self._trusted_from_ns = None
        return changed
