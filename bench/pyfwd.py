"""Bare uvloop UDP forwarder: the benchmark's "plain Python" baseline.

    python -m bench.pyfwd LISTEN_PORT ECHO_PORT

Same shape as cfwd.c: datagrams from clients go to the echo peer through a second socket, and
what comes back goes to the last client address. No parsing. Prints "ready" once bound.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop


class _Back(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.front: asyncio.DatagramTransport | None = None
        self.client: tuple[str, int] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.front is not None and self.client is not None:
            self.front.sendto(data, self.client)


class _Front(asyncio.DatagramProtocol):
    def __init__(self, back: _Back, back_transport: asyncio.DatagramTransport) -> None:
        self.back = back
        self.out = back_transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.back.client = addr
        self.out.sendto(data)


def _udp(buffer: int = 4 << 20) -> socket.socket:
    # same socket buffers as cfwd.c
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    sock.setblocking(False)
    return sock


async def _main(listen_port: int, echo_port: int) -> None:
    loop = asyncio.get_running_loop()
    back_sock, front_sock = _udp(), _udp()
    back_sock.connect(("127.0.0.1", echo_port))
    front_sock.bind(("127.0.0.1", listen_port))
    back_t, back = await loop.create_datagram_endpoint(_Back, sock=back_sock)
    front_t, _ = await loop.create_datagram_endpoint(lambda: _Front(back, back_t), sock=front_sock)
    back.front = front_t
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.pyfwd LISTEN_PORT ECHO_PORT")
    uvloop.run(_main(int(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()
