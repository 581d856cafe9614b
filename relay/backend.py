"""The narrow interface between the sans-I/O TURN core and whatever carries packets.

The TURN state machine (:mod:`relay.turn`) decides; a :class:`Backend` does. The real
backend (:mod:`relay.server`) binds relayed UDP sockets and writes the Cython fast path's
channel and permission tables; tests use a fake that records calls. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# (host, port) as the socket module gives them; host is a plain textual address.
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Relayed:
    """A relayed transport address opened for one allocation."""

    handle: int  # the backend's slot number for this allocation
    address: Address  # relayed address (relay-ip, port)
    reservation: bytes | None = None  # 8-byte RESERVATION-TOKEN when the next port was kept


class Backend(Protocol):
    """What the TURN core asks of the data plane. Every method is synchronous and cheap."""

    def open_relay(
        self,
        listener: int,
        client: Address,
        family: int,
        *,
        even_port: bool = False,
        reserve_next: bool = False,
        reservation: bytes | None = None,
    ) -> Relayed | None:
        """Bind a relayed UDP socket for a new allocation of ``client`` (who reached us on
        listener index ``listener``), family ``socket.AF_INET`` or ``AF_INET6``.

        ``even_port`` asks for an even port; with ``reserve_next`` the port above it is held
        and a token returned. ``reservation`` claims a port held earlier. Returns None when no
        port is free (the core answers 508) or the token is unknown (the core answers 508).
        """
        ...

    def close_relay(self, handle: int) -> None:
        """Free the allocation's socket, its table entries and counters slot."""
        ...

    def release_reservation(self, token: bytes) -> None:
        """Free a port held by ``open_relay(..., reserve_next=True)`` that nobody claimed
        (the core calls this when the 30 s hold runs out). Unknown tokens are ignored."""
        ...

    def add_permission(self, handle: int, peer_ip: str) -> None: ...

    def remove_permission(self, handle: int, peer_ip: str) -> None: ...

    def bind_channel(self, handle: int, channel: int, peer: Address) -> None:
        """Install (or refresh) channel ``channel`` <-> ``peer`` for the allocation."""
        ...

    def unbind_channel(self, handle: int, channel: int, peer: Address) -> None: ...

    def claim_peer(self, handle: int, peer: Address) -> bool:
        """The allocation is about to talk to ``peer`` (ChannelBind, Send). With one shared
        relayed socket (--multiplex-peer) the peer's datagrams are told apart by its address
        and port, so it becomes this allocation's, until the allocation ends or it has
        neither a permission nor a channel for it; False when another allocation has it (or
        it is the shared socket itself). Always True with a relayed socket per allocation."""
        ...

    def set_bandwidth(self, handle: int, bytes_per_second: int) -> None:
        """Cap the allocation's relayed bytes per second in each direction (0: no cap)."""
        ...

    def send_to_peer(self, handle: int, peer: Address, data: bytes) -> None:
        """Send ``data`` from the allocation's relayed address to ``peer`` (Send indication)."""
        ...

    def count_drop(self, reason: str) -> None:
        """Count a packet dropped by a decision of the core (e.g. a Send indication to a
        denied peer) under the data plane's drop ``reason`` (``denied_peer``)."""
        ...
