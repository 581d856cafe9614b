"""RTP/RTCP header inspection for the forwarding fast path (Cython). The inspection itself is a
C function the engine cimports; Python sees only the flow table's layout."""

from typing import Final

FLOW_FIELDS: Final[tuple[str, ...]]  # order of a row of _fastpath.Engine.flows
CLOCK_RATES: Final[tuple[int, ...]]  # what inferred RTP clock rates snap to
