"""atheris fuzz target for the fast path's classification of a client's datagram
(ext._fastpath.classify: the inline checks ext/_framing.pxd gives Engine.drain_listener),
checked against a plain-Python reading of RFC 7983 and RFC 8656 12.4; a datagram classified
as STUN then goes through both STUN codecs, which must agree, as the TURN core would.

Not collected by pytest (no test_ prefix); tests/test_fuzz.py runs it for a bounded time and
``make fuzz`` for longer. By hand:

    python tests/fuzz_classify.py -max_total_time=60 /tmp/new-inputs tests/fuzz/corpus/classify

(new inputs go to the first directory; the committed corpus is only read. See
tests/fuzz_stun.py for building the extension with the fuzzer's instrumentation.)
"""

from __future__ import annotations

import os
import struct
import sys

import atheris

sys.path[:0] = [
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    os.path.dirname(os.path.abspath(__file__)),
]

with atheris.instrument_imports():
    import stunref as ref

    from ext import _stun as cy
    from ext._fastpath import classify

STUN, CHANNEL, MALFORMED = 0, 1, 2


def reference(data: bytes) -> tuple[int, int, int]:
    """RFC 7983: a first byte of 0-3 is STUN; 64-127 ChannelData (RFC 8656 channels
    0x4000-0x4FFF, RFC 5766's up to 0x7FFF) whose length field fits in the datagram."""
    if data and data[0] < 4:
        return STUN, 0, 0
    if len(data) >= 4 and 0x40 <= data[0] <= 0x7F:
        chan, length = struct.unpack("!HH", data[:4])
        if 4 + length <= len(data):
            return CHANNEL, chan, length
    return MALFORMED, 0, 0


def _parsed(codec: object, data: bytes) -> tuple[object, ...] | None:
    try:
        msg = codec.parse(data)  # type: ignore[attr-defined]
    except codec.StunError:  # type: ignore[attr-defined]
        return None
    return (msg.method, msg.cls, msg.transaction_id, msg.attributes)


def test_one_input(data: bytes) -> None:
    got = classify(data)
    want = reference(data)
    if got != want:
        raise AssertionError(f"classify({data.hex()}) = {got}, the RFCs say {want}")
    if got[0] == STUN and _parsed(cy, data) != _parsed(ref, data):
        raise AssertionError(f"STUN codecs disagree on {data.hex()}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
