"""atheris fuzz target for the TCP/TLS stream framer (ext._stream.Framer), checked against the
plain-Python reading of RFC 8656 12.5 in tests/test_stream.py.

Not collected by pytest (no test_ prefix); tests/test_fuzz.py runs it for a bounded time
from the seed corpus tests/fuzz/corpus/stream/, and ``make fuzz`` for longer. By hand:

    python tests/fuzz_stream.py -max_total_time=60 /tmp/new-inputs tests/fuzz/corpus/stream

(See tests/fuzz_stun.py for building the extension with the fuzzer's instrumentation.)
The input's first byte chooses where the stream is cut in two feeds; whatever the bytes, the
framer must give the reference's messages in order and lose the stream for the same reason.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

with atheris.instrument_imports():
    from ext import _stream

# outside the block: instrumenting everything tests/test_stream.py imports (pytest,
# hypothesis, ...) took most of a short run; the reference itself is instrumented
from tests.test_stream import reference_split  # noqa: E402

reference_split = atheris.instrument_func(reference_split)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    cut, stream = data[0] * len(data) // 256, data[1:]
    want, lost = reference_split(stream)
    framer = _stream.Framer()
    got = framer.feed(stream[:cut])
    if framer.lost is None:
        got += framer.feed(stream[cut:])
    if got != want or (framer.lost or "") != lost:
        raise AssertionError(f"framer and reference disagree on {data.hex()}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
