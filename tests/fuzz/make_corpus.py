"""Write the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from real messages:
STUN Binding and TURN requests and answers as clients and the relay send them, ChannelData
carrying RTP and RTCP, a TURN-over-TCP stream, a TLS ClientHello and junk that must be
dropped. Deterministic but for the ClientHello's random fields; run it again after changing
it and commit what it writes:

    python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import ssl
import struct
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]

from ext import _stun as c  # noqa: E402
from tests import stunref as ref  # noqa: E402

HERE = Path(__file__).resolve().parent / "corpus"
RNG = random.Random(14)
KEY = hashlib.md5(b"1700000000:tok:example:secret").digest()  # a long-term key's shape


def tid() -> bytes:
    return RNG.randbytes(12)


def rtp(seq: int, pt: int = 111, size: int = 80) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 960, 0x1111) + RNG.randbytes(size)


def rtcp_sr() -> bytes:
    # sender report: V=2, RC=0, PT=200, length 6 words
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x1111, 1, 2, 3, 4, 5)


def channel(chan: int, payload: bytes, pad: bool = False) -> bytes:
    frame = struct.pack("!HH", chan, len(payload)) + payload
    return frame + b"\0" * (-len(frame) % 4 if pad else 0)


def client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="relay.example")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def stun_messages() -> list[bytes]:
    user = b"1700000000:tok"
    auth = [
        (c.USERNAME, user),
        (c.REALM, b"example"),
        (c.NONCE, b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
    ]
    peer = ref.encode_xor_address("192.0.2.15", 40000, b"\0" * 12)
    t = tid()
    out = [
        # the smallest Binding request, and with FINGERPRINT; the relay's answers
        ref.encode(c.BINDING, c.REQUEST, tid(), [], fingerprint=False),
        ref.encode(c.BINDING, c.REQUEST, tid(), []),
        ref.encode(
            c.BINDING,
            c.SUCCESS,
            t,
            [(c.XOR_MAPPED_ADDRESS, ref.encode_xor_address("198.51.100.7", 51000, t))],
        ),
        ref.encode(
            c.BINDING,
            c.SUCCESS,
            t,
            [(c.XOR_MAPPED_ADDRESS, ref.encode_xor_address("2001:db8::7", 51000, t))],
        ),
        # Allocate: first without credentials, the 401, then authenticated
        ref.encode(c.ALLOCATE, c.REQUEST, tid(), [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0")]),
        ref.encode(
            c.ALLOCATE,
            c.ERROR,
            tid(),
            [(c.ERROR_CODE, ref.encode_error_code(401, "Unauthorized")), *auth[1:]],
        ),
        ref.encode(
            c.ALLOCATE,
            c.REQUEST,
            tid(),
            [(c.REQUESTED_TRANSPORT, b"\x11\0\0\0"), (c.LIFETIME, b"\0\0\x02\x58"), *auth],
            KEY,
        ),
        ref.encode(
            c.ALLOCATE,
            c.REQUEST,
            tid(),
            [
                (c.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                (c.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0"),
                (c.EVEN_PORT, b"\x80"),
                *auth,
            ],
            KEY,
            sha256=True,
        ),
        ref.encode(c.REFRESH, c.REQUEST, tid(), [(c.LIFETIME, b"\0\0\0\0"), *auth], KEY),
        ref.encode(c.CREATE_PERMISSION, c.REQUEST, tid(), [(c.XOR_PEER_ADDRESS, peer), *auth], KEY),
        ref.encode(
            c.CHANNEL_BIND,
            c.REQUEST,
            tid(),
            [(c.CHANNEL_NUMBER, b"\x40\x00\0\0"), (c.XOR_PEER_ADDRESS, peer), *auth],
            KEY,
        ),
        ref.encode(
            c.SEND,
            c.INDICATION,
            tid(),
            [(c.XOR_PEER_ADDRESS, peer), (c.DATA_ATTR, rtp(1))],
            fingerprint=False,
        ),
        ref.encode(
            c.DATA, c.INDICATION, tid(), [(c.XOR_PEER_ADDRESS, peer), (c.DATA_ATTR, rtp(2))]
        ),
        ref.encode(
            c.ALLOCATE,
            c.ERROR,
            tid(),
            [
                (c.ERROR_CODE, ref.encode_error_code(420, "Unknown Attribute")),
                (c.UNKNOWN_ATTRIBUTES, b"\x00\x31\x00\x32"),
            ],
        ),
        # an ICE connectivity check, as browsers send them
        ref.encode(
            c.BINDING,
            c.REQUEST,
            tid(),
            [
                (c.USERNAME, b"evtj:h6vY"),
                (c.PRIORITY, b"\x6e\0\x01\xff"),
                (c.ICE_CONTROLLED, RNG.randbytes(8)),
            ],
            b"VOkJxbRl1RmTxUk/WvJxBt",
        ),
    ]
    return out


def datagrams() -> list[bytes]:
    return [
        channel(0x4000, rtp(1)),
        channel(0x4001, rtp(2, size=160), pad=True),
        channel(0x4FFF, rtcp_sr()),
        channel(0x7FFF, b""),
        channel(0x4000, b"\0" * 3)[:6],  # length past the end: malformed
        rtp(3),  # bare RTP (first byte 0x80): dropped
        rtcp_sr(),
        client_hello(),
        bytes([0x16, 0xFE, 0xFD]) + b"\0" * 10,  # a DTLS record header
        b"\x00",  # (libFuzzer tries the empty input by itself)
        b"\x40\x00",
        b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n",
    ]


def write(target: str, seeds: list[bytes]) -> None:
    folder = HERE / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def main() -> None:
    stun = stun_messages()
    dgrams = datagrams()
    write("stun", stun + [m[: len(m) // 2] for m in stun[:4]])
    write("classify", stun + dgrams)
    # fuzz_stream: the first byte picks where the stream is cut in two feeds
    streams = [
        b"".join(stun[:3]),
        b"".join(channel(0x4000 + i, rtp(i), pad=True) for i in range(4)),
        stun[6] + channel(0x4000, rtcp_sr(), pad=True) + stun[8],
        client_hello(),
        b"GET / HTTP/1.1\r\n\r\n",
    ]
    write("stream", [bytes([cut]) + s for cut in (0, 77, 200) for s in streams])
    print(
        f"wrote {len(os.listdir(HERE / 'stun'))}, {len(os.listdir(HERE / 'classify'))},"  # noqa: T201
        f" {len(os.listdir(HERE / 'stream'))} seeds under {HERE}"
    )


if __name__ == "__main__":
    main()
