"""Per-credential allocation counts for the ``--user-quota`` limit, node-wide.

The TURN core asks a :class:`Quota` before it opens an allocation or holds an EVEN-PORT
reservation, and gives the count back when either ends. A single worker keeps the counts in
a dict (:class:`LocalQuota`). Several workers share one :class:`SharedQuota`: a small
open-addressing table in a file under ``/dev/shm`` (next to the metrics boards) that the
supervisor creates before starting them, so a credential's allocations are counted across
the node rather than once per worker (which let N workers hold N times the quota).

Each row is a 64-bit key hash and one count per worker; a worker writes only its own column,
so a worker that dies and restarts clears its own counts (:meth:`SharedQuota.reset`) without
touching its siblings'. Every operation holds ``flock`` on the file: a handful of memory
reads and writes, on the slow path only (an Allocate, a deletion, an expiry), never per
packet. Linear probing with backward-shift deletion keeps lookups short without tombstones;
the table has at least twice as many rows as the node can hold allocations and
reservations, so it never fills.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from collections import Counter
from pathlib import Path
from typing import Protocol

_HEADER = 2  # cells: slots, workers
_MIN_SLOTS = 1024


class Quota(Protocol):
    def take(self, key: str, n: int, limit: int) -> bool:
        """Add ``n`` to ``key``'s count unless that would pass ``limit`` (0: no limit);
        returns whether it did."""
        ...

    def give(self, key: str, n: int) -> None:
        """Take ``n`` off ``key``'s count (what :meth:`take` added)."""
        ...

    def count(self, key: str) -> int:
        """``key``'s count, node-wide."""
        ...


class LocalQuota:
    """Counts in this process only: the quota of a node with one worker (and the tests')."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def take(self, key: str, n: int, limit: int) -> bool:
        if limit > 0 and self._counts[key] + n > limit:
            return False
        self._counts[key] += n
        return True

    def give(self, key: str, n: int) -> None:
        self._counts[key] -= n
        if self._counts[key] <= 0:
            del self._counts[key]

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)


def table_slots(max_allocations: int) -> int:
    """Rows for a node that holds at most ``max_allocations`` allocations and reservations
    (each key has at least one): a power of two, at least twice that."""
    slots = _MIN_SLOTS
    while slots < 2 * max_allocations:
        slots *= 2
    return slots


def _tag(key: str) -> int:
    """A non-zero signed 64-bit hash of ``key`` (0 marks an empty row)."""
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") | 1
    return value - (1 << 64) if value >= 1 << 63 else value


class SharedQuota:
    """The node's counts in the file ``path``, as worker ``worker``. ``create`` makes the
    file (the supervisor, once, with ``slots`` rows and ``workers`` columns)."""

    def __init__(
        self,
        path: Path,
        worker: int,
        *,
        create: bool = False,
        slots: int = _MIN_SLOTS,
        workers: int = 1,
    ) -> None:
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(self._fd, (_HEADER + slots * (1 + workers)) * 8)
            self._map = mmap.mmap(self._fd, 0)
        except OSError:
            os.close(self._fd)
            raise
        self._cells = memoryview(self._map).cast("q")
        if create:
            self._cells[0], self._cells[1] = slots, workers
        self.slots, self.workers = int(self._cells[0]), int(self._cells[1])
        if not 0 <= worker < self.workers:
            self.close()
            raise ValueError(f"worker {worker} of a table for {self.workers}")
        self.worker = worker
        self._width = 1 + self.workers

    # -- the table, under the lock -----------------------------------------------------

    def _row(self, slot: int) -> int:
        return _HEADER + slot * self._width

    def _sum(self, at: int) -> int:
        return sum(self._cells[at + 1 : at + self._width])

    def _find(self, tag: int) -> tuple[int, int]:
        """(row offset of ``tag`` or -1, the first empty slot met or -1)."""
        slot = (tag & 0xFFFFFFFFFFFFFFFF) % self.slots
        for _ in range(self.slots):
            at = self._row(slot)
            found = self._cells[at]
            if found == tag:
                return at, -1
            if found == 0:
                return -1, slot
            slot = (slot + 1) % self.slots
        return -1, -1

    def _delete(self, slot: int) -> None:
        """Empty ``slot`` and shift later rows of its run back (linear probing)."""
        cells, width = self._cells, self._width
        hole = slot
        nxt = slot
        while True:
            nxt = (nxt + 1) % self.slots
            at = self._row(nxt)
            tag = cells[at]
            if tag == 0:
                break
            home = (tag & 0xFFFFFFFFFFFFFFFF) % self.slots
            # the row may move into the hole unless its home lies cyclically in (hole, nxt]
            if (hole < nxt and (home <= hole or home > nxt)) or (
                hole > nxt and home <= hole and home > nxt
            ):
                dst = self._row(hole)
                cells[dst : dst + width] = cells[at : at + width]
                hole = nxt
        dst = self._row(hole)
        for i in range(width):
            cells[dst + i] = 0

    # -- the Quota protocol ------------------------------------------------------------

    def take(self, key: str, n: int, limit: int) -> bool:
        tag = _tag(key)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            at, empty = self._find(tag)
            total = self._sum(at) if at >= 0 else 0
            if limit > 0 and total + n > limit:
                return False
            if at < 0:
                if empty < 0:  # full: cannot happen with table_slots()
                    return False
                at = self._row(empty)
                self._cells[at] = tag
            self._cells[at + 1 + self.worker] += n
            return True
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def give(self, key: str, n: int) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            at, _ = self._find(_tag(key))
            if at < 0:
                return
            cell = at + 1 + self.worker
            self._cells[cell] = max(0, self._cells[cell] - n)
            if self._sum(at) == 0:
                self._delete((at - _HEADER) // self._width)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def count(self, key: str) -> int:
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        try:
            at, _ = self._find(_tag(key))
            return self._sum(at) if at >= 0 else 0
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def reset(self) -> None:
        """Forget this worker's counts (it starts with no allocation: a restarted worker's
        predecessor's allocations died with it) and drop the rows left empty."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            rows = []
            for slot in range(self.slots):
                at = self._row(slot)
                if self._cells[at] == 0:
                    continue
                self._cells[at + 1 + self.worker] = 0
                if self._sum(at):
                    rows.append(list(self._cells[at : at + self._width]))
                for i in range(self._width):
                    self._cells[at + i] = 0
            for row in rows:  # put back, each at its place in the emptied table
                _, empty = self._find(row[0])
                at = self._row(empty)
                for i, value in enumerate(row):
                    self._cells[at + i] = value
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._cells.release()
        try:
            self._map.close()
        except BufferError:  # pragma: no cover - a view still held
            pass
        os.close(self._fd)
