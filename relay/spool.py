"""The node agent's summary spool: per-allocation summaries wait on disk until the control
plane has them (docs/relay-summaries.md).

Every summary gets the node's next ``seq`` and is appended to ``DIR/summaries.log`` before
it is sent; a batch of appends is written and fsync'd together (:meth:`Spool.flush`, once
per collection round), and only flushed records are sent. The control plane answers with
``accepted``, the highest seq it has stored for the node; :meth:`Spool.ack` forgets every
record at or below it. Records therefore leave the spool in seq order, only once the
control plane has them, and a replay after a crash or an outage counts nothing twice (the
control plane ignores a seq at or below its highest).

Files in ``DIR`` (mode 0700; one agent at a time, held with ``flock`` on ``DIR/lock``):

- ``summaries.log``: one record per line, ``<seq> <crc32 hex> <summary JSON>\\n``; the CRC
  covers ``"<seq> " + JSON``. The JSON has no ``seq`` (it is added when sent), so records
  can be renumbered by rewriting their headers.
- ``state.json``: ``{"next_seq": N, "acked": A}``, written to a temporary file, fsync'd and
  renamed over the old one at every flush, before any record it numbers is sent: the seq
  never goes back, across restarts and crashes. On start the next seq is the larger of
  the state's and one past the highest record in the log; ``acked`` only saves resending
  records the control plane already has (a resent one would be ignored anyway).

A torn or corrupt line (a crash mid-write, a bad disk block) is skipped and counted, never
fatal; a torn tail is cut off so later appends start on a line of their own. A flush the
disk refuses part way (ENOSPC after some bytes went in) cuts the log back to its last whole
record at once, counts it in :attr:`Spool.write_failures` and keeps the records queued in
memory for the next flush, so what follows never lands behind half a line.

The spool is bounded (:data:`MAX_BYTES`, :data:`MAX_RECORDS`). When a flush would pass the
bound, it first drops intermediate summaries that a newer summary of the same allocation
supersedes (counters are cumulative, so nothing is lost), then the oldest intermediate
summaries, and the oldest final ones only as a last resort; each kind is counted in
:attr:`Spool.dropped`. Acknowledged and dropped records stay in the file until it is
compacted: emptied when nothing is pending, rewritten when dead lines outweigh live ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

MAX_BYTES: Final = 100 * 1024 * 1024  # the log's size at which records start being dropped
MAX_RECORDS: Final = 200_000  # pending records at which records start being dropped
LOW_WATER: Final = 0.9  # a bound being hit, drop down to this share of it
COMPACT_MIN: Final = 1 << 20  # bytes of dead lines before a rewrite is considered
LOG_NAME: Final = "summaries.log"
STATE_NAME: Final = "state.json"
LOCK_NAME: Final = "lock"
_READ_CHUNK: Final = 1 << 20


class SpoolError(Exception):
    """The spool directory cannot be used (not writable, or another agent holds it)."""


def default_dir(node_id: str, env: Mapping[str, str] | None = None) -> Path:
    """Where the spool lives without ``--spool``: ``$STATE_DIRECTORY/spool/<node>`` under
    systemd's ``StateDirectory=``, else ``$XDG_STATE_HOME/clickacall/spool/<node>``, else
    ``~/.local/state/clickacall/spool/<node>``. The node id keeps several nodes on one host
    apart."""
    env = os.environ if env is None else env
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "spool" / node_id
    xdg = env.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "clickacall" / "spool" / node_id


def _frame(seq: int, payload: bytes) -> bytes:
    head = b"%d " % seq
    return b"%s%08x %s\n" % (head, zlib.crc32(payload, zlib.crc32(head)), payload)


def _unframe(line: bytes) -> tuple[int, bytes] | None:
    """``(seq, JSON)`` of a complete line (without its newline), None if damaged."""
    seq_s, _, rest = line.partition(b" ")
    crc_s, _, payload = rest.partition(b" ")
    try:
        seq, crc = int(seq_s), int(crc_s, 16)
    except ValueError:
        return None
    if seq < 1 or len(crc_s) != 8 or zlib.crc32(payload, zlib.crc32(b"%d " % seq)) != crc:
        return None
    return seq, payload


def _key(summary: Mapping[str, Any]) -> tuple[str, str]:
    return str(summary.get("token_id")), str(summary.get("allocation"))


@dataclass(slots=True)
class _Record:
    offset: int  # of its line in the log
    length: int  # of its line, newline included
    key: tuple[str, str]  # (token id, allocation)
    final: bool


class Spool:
    """The spool in ``directory`` (created if missing). Not thread-safe: one agent uses it."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = MAX_BYTES,
        max_records: int = MAX_RECORDS,
        write: Callable[[int, memoryview], int] = os.write,
    ) -> None:
        self.dir = directory
        self._write = write  # os.write; tests inject a disk that fills up
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.corrupt = 0  # damaged lines skipped (a torn tail counts as one)
        self.dropped = {"superseded": 0, "intermediate": 0, "final": 0}
        self.delivered = 0  # records the control plane acknowledged
        self.renumbered = 0  # times the seqs had to jump past the control plane's
        self.write_failures = 0  # flushes the disk refused (the records stayed queued)
        self._records: dict[int, _Record] = {}  # pending, flushed, in seq order
        self._new: list[tuple[int, bytes, _Record]] = []  # appended, not flushed yet
        self._dead = 0  # bytes of acknowledged or dropped lines still in the log
        self._saved: tuple[int, int] | None = None  # (next_seq, acked) last made durable
        self._lock = -1
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(
                f"cannot use spool directory {directory}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise SpoolError(
                f"spool directory {directory} is in use by another relay node "
                "(give each node its own --spool)"
            ) from None
        try:
            self.next_seq, self.acked = self._read_state()
            self._fd = os.open(self.dir / LOG_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            self._end = self._scan()
            if self._dead > COMPACT_MIN or self.corrupt:
                self._compact()
        except OSError as exc:
            self.close()
            raise SpoolError(
                f"cannot use spool directory {directory}: {exc.strerror or exc}"
            ) from None

    # -- loading ----------------------------------------------------------------------

    def _read_state(self) -> tuple[int, int]:
        try:
            data = json.loads((self.dir / STATE_NAME).read_bytes())
            next_seq, acked = int(data["next_seq"]), int(data["acked"])
        except FileNotFoundError:
            return 1, 0
        except (ValueError, KeyError, TypeError):  # damaged: the log still knows the seqs
            self.corrupt += 1
            return 1, 0
        return max(1, next_seq), max(0, acked)

    def _scan(self) -> int:
        """Index the log's records above ``acked``; returns the offset of the end of its
        last complete line (a torn tail past it is cut off)."""
        offset = good_end = 0
        tail = b""
        while True:
            chunk = os.pread(self._fd, _READ_CHUNK, offset + len(tail))
            if not chunk:
                break
            data = tail + chunk
            start = 0
            while (nl := data.find(b"\n", start)) >= 0:
                line = data[start:nl]
                self._index(line, offset + start, nl + 1 - start)
                start = nl + 1
            offset += start
            good_end = offset
            tail = data[start:]
        if tail:  # a last line without its newline: a write cut short
            self.corrupt += 1
            os.ftruncate(self._fd, good_end)
        return good_end

    def _index(self, line: bytes, offset: int, length: int) -> None:
        parsed = _unframe(line)
        summary: Any = None
        if parsed is not None:
            with contextlib.suppress(ValueError):
                summary = json.loads(parsed[1])
        if parsed is None or not isinstance(summary, dict):
            self.corrupt += 1
            self._dead += length
            return
        seq = parsed[0]
        self.next_seq = max(self.next_seq, seq + 1)
        if seq <= self.acked or seq in self._records:
            self._dead += length
            return
        self._records[seq] = _Record(offset, length, _key(summary), bool(summary.get("final")))

    # -- adding -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records) + len(self._new)

    @property
    def size(self) -> int:
        """Bytes of the log, flushed or not."""
        return self._end + sum(len(line) for _, line, _ in self._new)

    def append(self, summary: Mapping[str, Any]) -> int:
        """Number ``summary`` (a dict without ``seq``) and queue it for the next
        :meth:`flush`; returns its seq."""
        seq = self.next_seq
        self.next_seq += 1
        line = _frame(seq, json.dumps(summary, separators=(",", ":")).encode())
        self._new.append(
            (seq, line, _Record(0, len(line), _key(summary), bool(summary.get("final"))))
        )
        return seq

    def flush(self) -> None:
        """Write what was appended, fsync it, and make the next seq durable. OSError if
        the disk refuses (the records stay queued for the next flush)."""
        if self._new:
            self._bound()
        if self._new:
            blob = b"".join(line for _, line, _ in self._new)
            try:
                if os.fstat(self._fd).st_size != self._end:  # a cut that failed last time
                    os.ftruncate(self._fd, self._end)
                _write_all(self._fd, blob, self._write)
                os.fsync(self._fd)
            except OSError:
                self.write_failures += 1
                with contextlib.suppress(OSError):  # else retried before the next write
                    os.ftruncate(self._fd, self._end)  # back to the last whole record
                raise
            offset = self._end
            for seq, line, rec in self._new:
                rec.offset = offset
                offset += len(line)
                self._records[seq] = rec
            self._end = offset
            self._new.clear()
        if self._saved != (self.next_seq, self.acked):
            self._write_state()

    def _write_state(self) -> None:
        tmp = self.dir / (STATE_NAME + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, json.dumps({"next_seq": self.next_seq, "acked": self.acked}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.dir / STATE_NAME)
        self._saved = (self.next_seq, self.acked)

    # -- the bound --------------------------------------------------------------------

    def _bound(self) -> None:
        """Drop records until the spool, with what is queued, fits under the bound (down
        to LOW_WATER of it once it is hit), then compact the log."""
        live = self._end - self._dead + sum(len(line) for _, line, _ in self._new)
        count = len(self)
        if live <= self.max_bytes and count <= self.max_records:
            return
        byte_goal, count_goal = self.max_bytes * LOW_WATER, self.max_records * LOW_WATER
        pending: list[tuple[int, _Record]] = [*self._records.items()]
        pending += [(seq, rec) for seq, _, rec in self._new]
        newest: dict[tuple[str, str], int] = {}
        for seq, rec in pending:
            newest[rec.key] = seq
        doomed: set[int] = set()

        def over() -> bool:
            return live > byte_goal or count - len(doomed) > count_goal

        def drop(seq: int, rec: _Record, why: str) -> None:
            nonlocal live
            doomed.add(seq)
            live -= rec.length
            self.dropped[why] += 1

        for seq, rec in pending:  # 1. superseded intermediate summaries
            if not over():
                break
            if not rec.final and newest[rec.key] != seq:
                drop(seq, rec, "superseded")
        for why, final in (("intermediate", False), ("final", True)):  # 2., 3.: oldest first
            for seq, rec in pending:
                if not over():
                    break
                if rec.final == final and seq not in doomed:
                    drop(seq, rec, why)
        for seq in doomed:
            rec_ = self._records.pop(seq, None)
            if rec_ is not None:
                self._dead += rec_.length
        self._new = [item for item in self._new if item[0] not in doomed]
        self._compact()

    # -- sending and acknowledging ----------------------------------------------------

    def pending(self, limit: int, max_bytes: int = 4 << 20) -> list[tuple[int, bytes]]:
        """The oldest flushed records, at most ``limit`` of them and about ``max_bytes``:
        ``(seq, summary JSON with "seq" first)``. A record found damaged on disk is
        dropped and counted as corrupt."""
        out: list[tuple[int, bytes]] = []
        total = 0
        for seq, rec in list(self._records.items()):
            if len(out) >= limit or (out and total + rec.length > max_bytes):
                break
            parsed = _unframe(os.pread(self._fd, rec.length, rec.offset).rstrip(b"\n"))
            if (
                parsed is None
                or parsed[0] != seq
                or not parsed[1].startswith(b"{")
                or parsed[1] == b"{}"
            ):
                self.corrupt += 1
                self._forget(seq)
                continue
            out.append((seq, b'{"seq":%d,%s' % (seq, parsed[1][1:])))
            total += rec.length
        return out

    def ack(self, accepted: int) -> int:
        """The control plane has every seq up to ``accepted``: forget those records;
        returns how many. If ``accepted`` is at or past our next seq (the spool was lost,
        or another node sends under this node id), the seqs jump past it and what is
        pending is renumbered, since the control plane would ignore it as replays."""
        done = 0
        if accepted >= self.next_seq:  # none of ours was stored: all of it goes again
            self.renumbered += 1
            self.flush()  # what is queued gets its place in the log first
            self.next_seq = accepted + 1
            self.acked = accepted
            self._compact(renumber=True)
            return 0
        for seq in list(self._records):
            if seq > accepted:
                break
            self._forget(seq)
            done += 1
        self.delivered += done
        self.acked = max(self.acked, accepted)
        if self._saved != (self.next_seq, self.acked):
            self._write_state()  # saves resending these after a crash (harmless if lost)
        if not self._records and not self._new and self._end:
            self._write_state()  # the next seq is durable before the log is emptied
            os.ftruncate(self._fd, 0)
            self._end = self._dead = 0
        elif self._dead > COMPACT_MIN and self._dead > self._end - self._dead:
            self._compact()
        return done

    def reject(self, seq: int) -> None:
        """The control plane refuses this record outright (it will never take it): drop it."""
        self._forget(seq)

    def _forget(self, seq: int) -> None:
        rec = self._records.pop(seq, None)
        if rec is not None:
            self._dead += rec.length

    def _compact(self, *, renumber: bool = False) -> None:
        """Rewrite the log with only the pending records (renumbered from ``next_seq`` on
        when asked); the state is made durable first, then the new log replaces the old."""
        items: list[tuple[int, bytes, _Record]] = []
        for seq, rec in self._records.items():
            parsed = _unframe(os.pread(self._fd, rec.length, rec.offset).rstrip(b"\n"))
            if parsed is None or parsed[0] != seq:
                self.corrupt += 1
                continue
            items.append((seq, parsed[1], rec))
        if renumber:
            base = self.next_seq
            items = [(base + i, payload, rec) for i, (_, payload, rec) in enumerate(items)]
            self.next_seq = base + len(items)
        self._write_state()
        tmp = self.dir / (LOG_NAME + ".new")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        records: dict[int, _Record] = {}
        offset = 0
        try:
            lines = []
            for seq, payload, rec in items:
                line = _frame(seq, payload)
                records[seq] = _Record(offset, len(line), rec.key, rec.final)
                offset += len(line)
                lines.append(line)
            _write_all(fd, b"".join(lines))
            os.fsync(fd)
            os.replace(tmp, self.dir / LOG_NAME)
        except OSError:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd = fd
        self._records = records
        self._end, self._dead = offset, 0
        _fsync_dir(self.dir)

    def close(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)
            self._fd = -1
        if self._lock >= 0:
            os.close(self._lock)  # releases the flock
            self._lock = -1

    def stats(self) -> dict[str, int]:
        return {
            "pending": len(self),
            "bytes": self.size,
            "delivered": self.delivered,
            "corrupt": self.corrupt,
            "write_failures": self.write_failures,
            **{f"dropped_{k}": v for k, v in self.dropped.items()},
        }


def _write_all(fd: int, blob: bytes, write: Callable[[int, memoryview], int] = os.write) -> None:
    view = memoryview(blob)
    while view:
        view = view[write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
