"""Load over TCP and TLS for the relay benchmark (Cython): TURN clients on streams, one write
(one TLS record) per ChannelData packet, replies parsed out of the streams."""

import socket
from typing import Any

from ext._loadgen import Echo, RunResult

class StreamConn:
    """One client connection, plain TCP or TLS, made non-blocking (TLS handshake at once)."""

    def __init__(self, sock: socket.socket, tls: bool = False) -> None: ...
    @property
    def tls_version(self) -> str | None: ...
    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def read_message(self, timeout: float) -> bytes:
        """The next whole STUN or ChannelData message; TimeoutError, ConnectionError."""

class StreamGenerator:
    """Paced ChannelData over StreamConns, as ``ext._loadgen.Generator`` over UDP."""

    def __init__(self, conns: list[StreamConn], payload: int, channels: list[int]) -> None: ...
    def rtts(self) -> bytes: ...
    def run(
        self,
        rate: float,
        count: int,
        max_seconds: float,
        drain_seconds: float = 0.3,
        burst: int = 16,
        echo: Echo | None = None,
    ) -> RunResult | dict[str, Any]: ...
