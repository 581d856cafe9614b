"""The relay's forwarding fast path (Cython): tables, batched recvmmsg/sendmmsg, counters."""

from typing import Final, TypeAlias

from ext._stream import Event, Streams
from ext._tables import Tables

Buffer: TypeAlias = bytes | bytearray | memoryview

COUNTER_NAMES: Final[tuple[str, ...]]  # order of Engine.counters
DROP_REASONS: Final[dict[str, int]]  # reason -> index into Engine.counters
SLOT_COUNTER_NAMES: Final[tuple[str, ...]]  # order of a row of Engine.slot_counters
SLOT_COUNTERS: Final[int]
FLOW_FIELDS: Final[tuple[str, ...]]  # order of a row of Engine.flows
FLOWS_PER_SLOT_: Final[int]  # rows of Engine.flows per slot: first half to_peer, then to_client
LATENCY_BUCKETS: Final[int]  # log2 microsecond buckets at the start of Engine.latency
LATENCY_CELLS: Final[int]  # len(Engine.latency): buckets, sum of delays (ns), packets, batches
CLOCK_RATES: Final[tuple[int, ...]]  # what inferred RTP clock rates snap to
NCOUNTERS: Final[int]  # int64 cells of the counters' memory: 3 blocks, then the streams'
COUNTER_BLOCK: Final[int]  # = len(COUNTER_NAMES): totals, then TCP's share, then TLS's
TRANSPORTS: Final[tuple[str, ...]]
STREAM_COUNTER_NAMES: Final[tuple[str, ...]]
HEADROOM_BYTES: Final[int]
SLOW_NS: Final[int]  # ns every relayed packet waits: 0 but in the gate test's slowed build

def classify(data: Buffer) -> tuple[int, int, int]:
    """How the fast path classifies a client's datagram: ``(0, 0, 0)`` STUN, ``(1, channel,
    payload length)`` ChannelData, ``(2, 0, 0)`` malformed (for tests and fuzzing)."""

def gso_supported() -> bool:
    """Whether the kernel takes UDP_SEGMENT (Linux 4.18 and later)."""

class Engine(Tables):
    """One worker's tables and batch buffers. Drive it from one event loop thread.
    Permissions, channels and rates are set through the methods of ``Tables``."""

    def __init__(
        self,
        max_slots: int,
        batch: int = 64,
        bufsize: int = 4096,
        counters: Buffer | None = None,
        quality: bool = True,
        latency: Buffer | None = None,
        gso: bool = True,
    ) -> None: ...
    def add_listener(self, fd: int) -> int: ...
    def use_streams(self, streams: Streams) -> None: ...
    def add_stream_listener(self, fd: int, transport: int) -> int: ...
    def drain_streams(self) -> list[Event]: ...
    def attach_stream(self, slot: int, conn: int) -> None: ...
    @property
    def streams(self) -> Streams | None: ...
    def drain_listener(
        self, index: int, max_batches: int = 64
    ) -> list[tuple[bytes, tuple[str, int]]]:
        """Forward ChannelData; return STUN datagrams as (data, (host, port))."""
    def open_slot(
        self, relay_fd: int, listener: int, client_host: str, client_port: int, mux: int = -1
    ) -> int:
        """``mux``: relay from that shared socket (:meth:`add_mux`), ``relay_fd`` ignored."""
    def add_mux(self, fd: int) -> int:
        """Register a shared peer-facing UDP socket (--multiplex-peer); returns its index.
        Its datagrams go to the slot that :meth:`Tables.mux_claim` made their source's
        owner; others are dropped (``drop_unknown_peer``)."""
    def remove_mux(self, mux: int) -> None: ...
    def close_slot(self, slot: int) -> None: ...
    def drain_relay(self, slot: int, max_batches: int = 64) -> int: ...
    def drain_relays(self, max_rounds: int = 16) -> int: ...
    def send_to_peer(self, slot: int, data: Buffer, peer_host: str, peer_port: int) -> bool: ...
    def coalesce_wait(self, us: int) -> None: ...
    def coalesce_idle(self) -> None: ...
    def count_drop(self, reason: str, n: int = 1) -> None: ...
    @property
    def epoll_fd(self) -> int: ...
    @property
    def counters(self) -> memoryview: ...
    @property
    def transport_counters(self) -> memoryview:
        """(3, COUNTER_BLOCK) int64: all clients, TCP clients' share, TLS clients'."""
    @property
    def stream_counters(self) -> memoryview:
        """(2, len(STREAM_COUNTER_NAMES)) int64: TCP, TLS."""
    @property
    def slot_counters(self) -> memoryview: ...
    @property
    def flows(self) -> memoryview:
        """(capacity * FLOWS_PER_SLOT_, len(FLOW_FIELDS)) int64, live."""
    @property
    def latency(self) -> memoryview: ...
    @property
    def gso(self) -> bool:
        """Whether sends to one destination are coalesced with UDP_SEGMENT."""
    @property
    def quality(self) -> bool: ...
    @quality.setter
    def quality(self, on: bool) -> None: ...
    @property
    def fake_clock_ns(self) -> int: ...
    @fake_clock_ns.setter
    def fake_clock_ns(self, ns: int) -> None: ...
