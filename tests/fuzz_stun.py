"""atheris fuzz target for ext._stun.parse, checked against the pure-Python reference.

Not collected by pytest (no test_ prefix); tests/test_fuzz.py runs it for a bounded time
from the seed corpus tests/fuzz/corpus/stun/, and ``make fuzz`` for longer. By hand:

    python tests/fuzz_stun.py -max_total_time=60 /tmp/new-inputs tests/fuzz/corpus/stun

For coverage-guided fuzzing of the C code itself, build the extension with the fuzzer's
instrumentation first, e.g. ``CC=clang CFLAGS=-fsanitize=fuzzer-no-link,address`` before
``python setup.py build_ext --inplace --cython-always``, and preload the ASan runtime as atheris'
docs describe; without it atheris still fuzzes, guided by the Python-level coverage only.

Every input must either parse or raise StunError, both codecs must agree, and a message that
parses must survive the helpers a server runs on it.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import atheris

sys.path[:0] = [
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    os.path.dirname(os.path.abspath(__file__)),
]

with atheris.instrument_imports():
    import stunref as ref

    from ext import _stun as cy

ADDRESS_TYPES = (0x0001, 0x0012, 0x0016, 0x0020, 0x8023, 0x802B, 0x802C)
XOR_TYPES = (0x0012, 0x0016, 0x0020)


def _outcome(codec: ModuleType, data: bytes) -> tuple[object, ...] | None:
    try:
        msg = codec.parse(data)
    except codec.StunError:
        return None
    return (
        msg.method,
        msg.cls,
        msg.transaction_id,
        msg.attributes,
        msg.integrity_offset,
        msg.integrity256_offset,
        msg.fingerprint_offset,
        codec.check_integrity(data, msg, b"fuzz"),
    )


def test_one_input(data: bytes) -> None:
    a = _outcome(cy, data)
    b = _outcome(ref, data)
    if a != b:
        raise AssertionError(f"codecs disagree on {data.hex()}: {a!r} != {b!r}")
    if a is None:
        return
    assert cy.is_stun(data) == (data[0] <= 3)
    msg = cy.parse(data)
    for atype, value in msg.attributes:
        try:
            if atype in XOR_TYPES:
                cy.decode_xor_address(value, msg.transaction_id)
            elif atype in ADDRESS_TYPES:
                cy.decode_address(value)
            elif atype == 0x0009:
                cy.decode_error_code(value)
        except cy.StunError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
