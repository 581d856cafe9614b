"""Batched load generator and echo peer for the relay benchmark (sendmmsg/recvmmsg, GIL released).

Every packet is ChannelData: a 4-byte header (channel number, length) and a payload. For
``Generator`` the payload starts with an RTP header then (sequence u64, CLOCK_MONOTONIC send time
u64), native byte order; ``Replay`` sends a schedule of prepared packets (real SRTP) instead and
matches replies by (SSRC, RTP sequence number).
"""

from collections.abc import Sequence
from typing import Any, TypedDict

class RunResult(TypedDict):
    sent: int  # packets offered (including send_errors)
    received: int  # distinct packets back (by sequence number)
    duplicates: int
    other: int  # datagrams that were not one of ours
    send_errors: int  # packets the kernel refused (EAGAIN, ENOBUFS, ECONNREFUSED)
    recv_errors: int  # ECONNREFUSED reported on receive (ICMP port unreachable)
    send_seconds: float  # first to last send
    total_seconds: float  # including the drain
    late_max_seconds: float  # worst lag of a burst behind its schedule
    oversleep_max_seconds: float  # worst ppoll overrun (the thread was kept off the CPU)

class Echo:
    """Sends every datagram received on ``fd`` back to its source, in batches."""

    packets: int  # echoed since the last reset()
    bytes: int
    def __init__(self, fd: int, batch: int = 64, epoll: bool = False) -> None:
        """``epoll``: ``fd`` is an epoll set of sockets (data = each socket's fd), all echoed."""
    def run(self, max_seconds: float) -> int:
        """Echo on this thread (GIL released) until stop() or ``max_seconds``; packets echoed."""
    def stop(self) -> None: ...
    def reset(self) -> None: ...

class Generator:
    """Paced ChannelData flows over connected UDP sockets (one per flow)."""

    def __init__(
        self,
        fds: Sequence[int],
        payload: int,
        channels: Sequence[int] | None = None,
        batch: int = 64,
    ) -> None: ...
    def run(
        self,
        rate: float,
        count: int,
        max_seconds: float,
        drain_seconds: float = 0.3,
        burst: int = 16,
        echo: Echo | None = None,
    ) -> RunResult:
        """Send ``count`` packets at ``rate``/s in bursts of ``burst`` on a fixed schedule, round
        robin over the flows, for at most ``max_seconds``; then wait up to ``drain_seconds`` for
        the rest. With ``echo``, that echo is served from this same loop. GIL released."""
    def rtts(self) -> bytes:
        """Round-trip times of the last run, ns, native uint32 (saturated), arrival order."""

class ReplayResult(TypedDict):
    sent: int  # packets offered (RTP + RTCP, including send_errors)
    sent_rtp: int
    sent_rtcp: int
    bytes_sent: int  # including the 4-byte ChannelData headers
    received: int  # distinct RTP packets back, matched by (SSRC, sequence number)
    received_rtcp: int
    duplicates: int
    other: int  # datagrams that were not one of this run's packets
    send_errors: int
    recv_errors: int
    send_seconds: float
    total_seconds: float
    late_max_seconds: float  # worst lag of a packet behind its send time
    oversleep_max_seconds: float

class Replay:
    """Plays a prepared packet schedule (bench/workloads.py) over connected UDP sockets, one per
    flow: packet i (``data[offsets[i]:offsets[i] + lengths[i]]``) goes as ChannelData on flow
    ``flows[i]``'s channel at ``times[i]`` ns after the start. RTP packets come back matched by
    stream ``ssrc - ssrc_base``, its k-th packet here having sequence ``seq0 + k`` and index
    ``order[start + k]``. The arrays are numpy arrays of the dtypes in Schedule."""

    packets: int
    schedule_seconds: float
    def __init__(
        self,
        fds: Sequence[int],
        channels: Sequence[int],
        data: bytes,
        offsets: Any,
        lengths: Any,
        flows: Any,
        times: Any,
        ssrc_base: int,
        seq0: Any,
        start: Any,
        count: Any,
        order: Any,
        batch: int = 64,
    ) -> None: ...
    def run(
        self,
        max_seconds: float,
        drain_seconds: float = 0.3,
        echo: Echo | None = None,
        slack_us: float = 50.0,
    ) -> ReplayResult:
        """Send every packet at its time (those due within ``slack_us`` in one wake-up), for at
        most ``max_seconds``; then wait up to ``drain_seconds`` for the rest. GIL released."""
    def rtts(self) -> bytes:
        """Round-trip times of the last run's RTP packets, ns, native uint32, arrival order."""
