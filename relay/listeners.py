"""A worker's listening sockets: UDP, TCP and TLS, in SO_REUSEPORT groups steered by client IP.

With several workers the supervisor (relay/node.py) opens every worker's sockets, in worker
order, before any worker starts, and keeps them for the node's life, so slot i of each group
is always worker i's; a lone worker opens its own, without SO_REUSEPORT.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from relay.backend import Address
from relay.config import RelayConfig, show

SOCKET_BUFFER = 4 * 1024 * 1024  # SO_RCVBUF and SO_SNDBUF asked for (rmem_max/wmem_max cap them)


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
_SKF_NET_OFF = -0x100000
# classic BPF opcodes
_BPF_LD_W_ABS = 0x20
_BPF_ALU_MOD_K = 0x94
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_BPF_RET_A = 0x16


def steer_by_client_ip(
    sock: socket.socket, workers: int, redirect: Mapping[int, int] | None = None
) -> None:
    """Make the SO_REUSEPORT group of ``sock`` pick the worker from the client's IP address
    alone (the program is the group's: attaching it to any member replaces it for all).

    The kernel's default hash uses the whole 4-tuple, so two sockets of one client (coturn's
    RTP/RTCP pair with EVEN-PORT and RESERVATION-TOKEN, or an ICE agent's candidates) could
    land on different workers, and the second could not claim the port the first reserved.
    The program loads the source address (its last 32 bits for IPv6) and takes it modulo
    the number of workers: the index of a socket in the group. ``redirect`` sends the
    clients of some of those slots to others' (a stopping node's workers that have ended).
    """
    src = 12 if sock.family == socket.AF_INET else 20  # offset in the IP header
    prog = [
        (_BPF_LD_W_ABS, 0, 0, (_SKF_NET_OFF + src) & 0xFFFFFFFF),
        (_BPF_ALU_MOD_K, 0, 0, workers),
    ]
    for slot, to in sorted((redirect or {}).items()):
        prog += [(_BPF_JEQ_K, 0, 1, slot), (_BPF_RET_K, 0, 0, to)]
    prog.append((_BPF_RET_A, 0, 0, 0))
    insns = (ctypes.c_uint8 * (8 * len(prog)))()
    for i, (code, jt, jf, k) in enumerate(prog):
        struct.pack_into("HBBI", insns, 8 * i, code, jt, jf, k)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def listening_socket(addr: Address, reuse_port: bool, workers: int = 1) -> socket.socket:
    family = family_of(addr[0])
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
        sock.setblocking(False)
        sock.bind(addr)
        if reuse_port and workers > 1:
            steer_by_client_ip(sock, workers)
    except OSError:
        sock.close()
        raise
    return sock


STREAM_BACKLOG = 1024


def stream_listening_socket(addr: Address, workers: int = 1) -> socket.socket:
    """A listening TCP socket for TURN over TCP or TLS, in the workers' SO_REUSEPORT group
    (steered by client IP like the UDP one) when there are several."""
    family = family_of(addr[0])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if workers > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(addr)
        sock.listen(STREAM_BACKLOG)
        if workers > 1:
            steer_by_client_ip(sock, workers)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Listeners:
    """One worker's listening sockets, in the configuration's order: ``udp`` for
    ``--listen``, ``tcp`` for ``--listen-tcp``, ``tls`` for ``--listen-tls``."""

    udp: list[socket.socket] = field(default_factory=list)
    tcp: list[socket.socket] = field(default_factory=list)
    tls: list[socket.socket] = field(default_factory=list)

    def all(self) -> list[socket.socket]:
        return [*self.udp, *self.tcp, *self.tls]

    def close(self) -> None:
        for sock in self.all():
            sock.close()


def open_listeners(config: RelayConfig, count: int) -> Listeners:
    """Bind one worker's listening sockets (in the SO_REUSEPORT groups when ``count`` > 1).

    Each socket joins its group at the next slot, and the steering program picks a slot by
    client IP, so with several workers the supervisor calls this once per worker, in index
    order, before any starts, and keeps them for the node's life: slot i is then worker i's,
    and a worker's restart changes no slot (closing a group's socket would move the group's
    last one into its slot and so steer another worker's clients away from it)."""
    out = Listeners()
    where = ""
    try:
        for addr in config.listen:
            where = f"--listen {show(addr)}"
            # a lone worker takes its ports alone, so no other process can join them either
            out.udp.append(listening_socket(addr, reuse_port=count > 1, workers=count))
        for flag, addrs, socks in (
            ("--listen-tcp", config.listen_tcp, out.tcp),
            ("--listen-tls", config.listen_tls, out.tls),
        ):
            for addr in addrs:
                where = f"{flag} {show(addr)}"
                socks.append(stream_listening_socket(addr, count))
    except OSError as exc:
        out.close()
        raise OSError(exc.errno, f"{where}: {exc.strerror or exc}") from exc
    return out
