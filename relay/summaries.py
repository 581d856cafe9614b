"""Per-allocation summaries on their way from a worker to the control plane.

:func:`wire` turns a worker's summary (:meth:`relay.server.FastPathBackend.summary`) into
exactly what ``POST /v1/nodes/summaries`` accepts (control/schemas.py ``SummaryIn``, which
refuses unknown fields): a whitelist of fields, values clamped to the schema's bounds.
Figures the control plane does not store (``directions.*.loss``, which it recomputes from
``lost``; ``relay.non_rtp_packets`` and ``relay.ssrc_overflow``, which are on the node's
``/metrics``) are left out here rather than taught to the control plane, so a new figure in
relay/quality.py can never make the control plane refuse a node's summaries. A summary
without a TURN REST token id (a static ``--user`` credential) cannot be joined to a call
and is not sent.

With several workers the one node agent runs in the supervisor, which cannot reach the
workers' engines, so each worker hands its summaries over through files next to its
metrics board (tmpfs), the reverse of the revocation log (relay/revocations.py): worker
``i`` appends JSON lines to ``summaries-<i>.<n>``, starting segment ``n + 1`` when the
current one passes :data:`SEGMENT_BYTES` or when it (re)starts; the agent reads every
worker's segments in order, takes complete lines only, and deletes a segment once a later
one exists and it has read it to the end. A worker that dies leaves its last segment to be
read and deleted like any other; nothing blocks either side.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

SEGMENT_BYTES: Final = 1 << 20
MAX_STREAMS: Final = 16  # control/schemas.py MAX_STREAMS
_IDENT: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_ALLOCATION: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_STREAM_INTS: Final = ("packets", "bytes", "lost", "reordered", "duplicates")
_COUNT_MAX: Final = 10**15
_MILLIS_MAX: Final = 3_600_000.0
_READ_CHUNK: Final = 1 << 16


def _count(value: object) -> int:
    return min(max(int(value), 0), _COUNT_MAX) if isinstance(value, int | float) else 0


def _millis(value: object) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return round(min(max(float(value), 0.0), _MILLIS_MAX), 3)


def _direction(fig: object) -> dict[str, Any] | None:
    if not isinstance(fig, Mapping):
        return None
    mos = fig.get("mos")
    ok = isinstance(mos, int | float) and math.isfinite(mos)
    return {
        "packets": _count(fig.get("packets")),
        "bytes": _count(fig.get("bytes")),
        "lost": _count(fig.get("lost")),
        "jitter_ms": _millis(fig.get("jitter_ms")),
        "mos": round(min(max(float(mos), 1.0), 5.0), 2) if ok else None,  # type: ignore[arg-type]
    }


def wire(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary as the control plane's schema has it (no ``seq``: the spool adds it),
    or None if it carries no usable token id or allocation id."""
    token_id, allocation = summary.get("token_id"), summary.get("allocation")
    if not isinstance(token_id, str) or not _IDENT.fullmatch(token_id):
        return None
    if not isinstance(allocation, str) or not _ALLOCATION.fullmatch(allocation):
        return None
    started = float(summary.get("started_at") or 0.0)
    at = max(float(summary.get("at") or 0.0), started)
    streams = []
    for s in list(summary.get("streams") or ())[:MAX_STREAMS]:
        stream: dict[str, Any] = {
            "direction": s["direction"],
            "ssrc": int(s["ssrc"]) & 0xFFFFFFFF,
            "kind": s["kind"],
            "clock_rate": min(max(int(s.get("clock_rate", 0)), 0), 1_000_000),
        }
        stream.update({k: _count(s.get(k)) for k in _STREAM_INTS})
        stream["jitter_ms"] = _millis(s.get("jitter_ms"))
        stream["max_gap_ms"] = _millis(s.get("max_gap_ms"))
        streams.append(stream)
    directions = {}
    for name in ("to_peer", "to_client"):
        fig = _direction((summary.get("directions") or {}).get(name))
        if fig is not None:
            directions[name] = fig
    relay = summary.get("relay") or {}
    delay = relay.get("delay_us_p99", 0)
    return {
        "token_id": token_id,
        "allocation": allocation,
        "final": bool(summary.get("final")),
        "started_at": round(started, 3),
        "at": round(at, 3),
        "streams": streams,
        "directions": directions,
        "relay": {
            "dropped": _count(relay.get("dropped")),
            "rxq_overflow": _count(relay.get("rxq_overflow")),
            "delay_us_p99": min(_count(delay), 60_000_000),
        },
    }


# ---------------------------------------------------------------------------------------
# The hand-over from workers to the supervisor's agent.


def _segments(directory: Path, index: int) -> list[tuple[int, Path]]:
    prefix = f"summaries-{index}."
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.startswith(prefix) and entry.name[len(prefix) :].isdigit():
                out.append((int(entry.name[len(prefix) :]), Path(entry.path)))
    return sorted(out)


class HandoffWriter:
    """A worker's end: appends summaries as JSON lines. Not thread-safe."""

    def __init__(self, directory: Path, index: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = directory
        self.index = index
        self.segment_bytes = segment_bytes
        found = _segments(directory, index)
        self._n = found[-1][0] if found else 0  # a restarted worker starts a new segment
        self._fd = -1
        self._size = 0
        self._open_next()

    def _open_next(self) -> None:
        self._n += 1
        path = self.dir / f"summaries-{self.index}.{self._n}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self._fd >= 0:
            os.close(self._fd)  # only once the next segment exists (the reader's cue)
        self._fd, self._size = fd, 0

    def write(self, summaries: Iterable[Mapping[str, Any]]) -> int:
        """Append ``summaries`` in one write; returns how many."""
        lines = [json.dumps(s, separators=(",", ":")).encode() + b"\n" for s in summaries]
        if not lines:
            return 0
        if self._size >= self.segment_bytes:
            self._open_next()
        view = memoryview(b"".join(lines))
        self._size += len(view)
        while view:
            view = view[os.write(self._fd, view) :]
        return len(lines)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class HandoffReader:
    """The agent's end for one worker: :meth:`poll` returns what was added since."""

    def __init__(self, directory: Path, index: int) -> None:
        self.dir = directory
        self.index = index
        self.malformed = 0
        self._n = 0  # the segment being read
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for n, path in _segments(self.dir, self.index):
            if n < self._n:  # left over from before: already read
                continue
            if n > self._n:
                self._n, self._offset, self._partial = n, 0, b""
            later = any(m > n for m, _ in _segments(self.dir, self.index))
            out += self._read(path)
            if not later:
                break
            # the writer has moved on: this segment is complete and read to its end
            if self._partial:
                self.malformed += 1  # a line its writer never finished (killed mid-write)
                self._partial = b""
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return out

    def _read(self, path: Path) -> list[dict[str, Any]]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        chunks = [self._partial]
        try:
            while chunk := os.pread(fd, _READ_CHUNK, self._offset):
                self._offset += len(chunk)
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        out = []
        for line in data[:end].splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                self.malformed += 1
                continue
            if isinstance(item, dict):
                out.append(item)
            else:
                self.malformed += 1
        return out
