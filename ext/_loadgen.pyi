"""Batched load generator and echo peer for the relay benchmark (sendmmsg/recvmmsg, GIL released).

Every packet is ChannelData: a 4-byte header (channel number, length) and a payload that starts
with (flow index u32, sequence u64, CLOCK_MONOTONIC send time u64), native byte order.
"""

from collections.abc import Sequence
from typing import TypedDict

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
    def __init__(self, fd: int, batch: int = 64) -> None: ...
    def run(self, max_seconds: float) -> int:
        """Echo on this thread (GIL released) until stop() or ``max_seconds``; packets echoed."""
    def stop(self) -> None: ...
    def reset(self) -> None: ...

class Generator:
    """Paced ChannelData flows over connected UDP sockets (one per flow)."""

    def __init__(
        self, fds: Sequence[int], payload: int, channels: Sequence[int] | None = None, batch: int = 64
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
