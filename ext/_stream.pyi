"""TURN over TCP and TLS in the fast path (Cython): connections, limits, native TLS, and the
splitting of a byte stream into STUN messages and padded ChannelData (RFC 8656 12.5)."""

from typing import Any, Final, TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview
Event: TypeAlias = tuple[int, int, Any]  # (EVENT_*, connection id, what: see take_events)

TRANSPORTS: Final[tuple[str, ...]]  # "udp", "tcp", "tls": the metrics' transport label
CLOSE_REASONS: Final[tuple[str, ...]]  # why a connection closed (EVENT_CLOSED's value)
STREAM_COUNTER_NAMES: Final[tuple[str, ...]]  # a row of Engine.stream_counters
STREAM_COUNTERS: Final[int]
EVENT_STUN: Final[int]
EVENT_OPEN: Final[int]
EVENT_CLOSED: Final[int]
TCP: Final[int]  # Engine.add_stream_listener's transports
TLS: Final[int]
OPENSSL_VERSION: Final[str]

class Streams:
    """The TCP and TLS client connections of one worker; the engine drains them
    (Engine.use_streams, Engine.drain_streams). Not thread-safe."""

    def __init__(
        self,
        max_connections: int,
        per_source: int = 200,
        handshake_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        partial_timeout: float = 10.0,
        max_message: int = 4096,
        send_buffer: int = 65536,
    ) -> None: ...
    @property
    def fileno(self) -> int:
        """The epoll descriptor to watch."""
    @property
    def connections(self) -> int: ...
    @property
    def fake_clock_ns(self) -> int: ...
    @fake_clock_ns.setter
    def fake_clock_ns(self, ns: int) -> None: ...
    def load_tls(self, cert: str, key: str | None = None) -> None:
        """(Re)load the PEM certificate chain and key; ValueError when they do not load."""
    def send(self, cid: int, data: Buffer) -> bool: ...
    def close(self, cid: int) -> None: ...
    def close_all(self) -> None: ...
    def sweep(self) -> list[Event]:
        """Close what overstayed a timer; returns the pending events."""
    def take_events(self) -> list[Event]:
        """``(EVENT_OPEN, id, (listener, (host, port)))``, ``(EVENT_STUN, id, message)``,
        ``(EVENT_CLOSED, id, reason)``, oldest first."""
    def info(self, cid: int) -> dict[str, Any] | None: ...

class Framer:
    """One stream's splitting without a socket (tests)."""

    def __init__(self, max_message: int = 4096) -> None: ...
    def feed(self, data: Buffer) -> list[tuple[str, bytes]]:
        """``[("stun" | "channel", message)]`` completed by ``data``, in order; once the
        stream is lost, the next feed raises ValueError ("malformed", "oversize")."""
    @property
    def lost(self) -> str | None: ...
    @property
    def pending(self) -> int: ...
