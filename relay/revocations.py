"""Revoked token ids: how long a relay remembers them, and how they reach every worker.

The control plane revokes a *token id*, the part after the colon of a TURN REST username
``"<expiry>:<token-id>"``. A relay tears down the allocations made with it and refuses new
ones until no username of that token can still be valid. A revocation carries no expiry,
so a relay keeps it for :data:`REVOCATION_MEMORY` (the longest relay credential the control
plane issues), or longer when an allocation showed a later username expiry.

With several workers, the one node agent (in the supervisor) appends each revocation to a
*revocation log*, a small file next to the metrics boards (tmpfs), one line
``<until> <token-id>`` per id. Every worker follows the file: a few times a second it reads
the whole lines added since it last looked and applies them. A worker that starts (or is
restarted) reads the file from the beginning, so it gets every revocation still live.
When most lines have passed their ``until``, the writer writes the live ones to a new file
and renames it over the old; a reader notices the new inode and reads it from the start
(applying a revocation twice is harmless). Nothing can block: the writer never waits for
a reader, and a reader only ever takes complete lines.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

REVOCATION_MEMORY: Final = 24 * 3600.0  # the control plane's longest relay credential
MAX_TOKEN_ID: Final = 512  # characters; a username is at most 508 bytes anyway
_READ_CHUNK: Final = 1 << 16


def valid_token_id(value: object) -> bool:
    """A token id we accept from the control plane: printable, no spaces, not too long."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_TOKEN_ID
        and value.isprintable()
        and not any(c.isspace() for c in value)
    )


class ExpiringSet:
    """Strings remembered until a time each: membership is a dict look-up, forgetting the
    expired ones costs nothing until one is due (a heap orders them by expiry)."""

    __slots__ = ("_heap", "_until")

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # may hold stale entries, skipped on pop

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, item: object) -> bool:
        return item in self._until

    def until(self, item: str) -> float | None:
        return self._until.get(item)

    def add(self, item: str, until: float) -> bool:
        """Remember ``item`` until ``until`` (never shortens); True if it was not known."""
        known = self._until.get(item)
        if known is not None and known >= until:
            return False
        self._until[item] = until
        heapq.heappush(self._heap, (until, item))
        return known is None

    def forget(self, now: float) -> int:
        """Drop what expired at or before ``now``; returns how many."""
        heap, until, dropped = self._heap, self._until, 0
        while heap and heap[0][0] <= now:
            when, item = heapq.heappop(heap)
            if until.get(item) == when:
                del until[item]
                dropped += 1
        if len(heap) > 2 * len(until) + 1024:  # many superseded entries: rebuild
            self._heap = [(t, i) for i, t in until.items()]
            heapq.heapify(self._heap)
        return dropped

    def items(self) -> list[tuple[str, float]]:
        return list(self._until.items())


class RevocationWriter:
    """The agent's end of the revocation log. Not thread-safe: one thread writes."""

    def __init__(self, path: Path, memory: float = REVOCATION_MEMORY) -> None:
        self.path = path
        self.memory = memory
        self._live = ExpiringSet()
        self._lines = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)

    def add(self, token_ids: Iterable[str], now: float) -> int:
        """Append the ids not already live; returns how many were written."""
        until = now + self.memory
        fresh = [t for t in token_ids if valid_token_id(t) and self._live.add(t, until)]
        if not fresh:
            return 0
        self._write(b"".join(b"%.3f %s\n" % (until, t.encode()) for t in fresh))
        self._lines += len(fresh)
        self._live.forget(now)
        if self._lines > 2 * len(self._live) + 1024:
            self._compact()
        return len(fresh)

    def _write(self, blob: bytes) -> None:
        view = memoryview(blob)
        while view:
            view = view[os.write(self._fd, view) :]

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        live = self._live.items()
        try:
            old, self._fd = self._fd, fd
            self._write(b"".join(b"%.3f %s\n" % (u, t.encode()) for t, u in live))
            os.replace(tmp, self.path)
        except OSError:
            self._fd = old
            os.close(fd)
            raise
        os.close(old)
        self._lines = len(live)

    def close(self) -> None:
        os.close(self._fd)


class RevocationReader:
    """A worker's end of the revocation log: :meth:`poll` returns the ids added since."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._inode = -1
        self._offset = 0
        self._partial = b""

    def poll(self, now: float) -> list[str]:
        """Token ids of the complete lines added since the last poll, still live at ``now``.
        A missing file (the writer has not started yet) is simply empty."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return []
        if inode != self._inode:
            self._reopen()
        if self._fd is None:
            return []
        chunks = [self._partial]
        while True:
            chunk = os.pread(self._fd, _READ_CHUNK, self._offset)
            if not chunk:
                break
            self._offset += len(chunk)
            chunks.append(chunk)
        data = b"".join(chunks)
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        out: list[str] = []
        for line in data[:end].splitlines():
            stamp, _, raw = line.partition(b" ")
            try:
                until, token = float(stamp), raw.decode()
            except (ValueError, UnicodeDecodeError):
                continue
            if until > now and valid_token_id(token):
                out.append(token)
        return out

    def _reopen(self) -> None:
        """Start over on the file now at ``path`` (new, or rewritten by compaction)."""
        self.close()
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        self._inode = os.fstat(self._fd).st_ino  # the file actually opened
        self._offset = 0
        self._partial = b""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
