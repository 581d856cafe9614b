# cython: language_level=3, freethreading_compatible=True
"""Passive call quality: RTP/RTCP header inspection for the forwarding fast path.

Every packet the relay accepts for an allocation (ChannelData payload, Send indication DATA,
datagram on a relayed socket) is looked at for the RTP/RTCP header that SRTP/SRTCP leave in
the clear (RFC 3711). Version 2 is required; second byte 192-223 is RTCP (RFC 5761 section 4 /
RFC 7983 demux: SR 200 .. PSFB 206 live there), anything else RTP. Per (slot, direction, SSRC)
the engine keeps one row of int64 in a table it owns (``flows``, FLOW_FIELDS order):
FLOWS_PER_SLOT rows per slot, half per direction, probed open-addressing style from a hash of
the SSRC; an SSRC that finds its direction's rows full is reported (SEEN_OVERFLOW) and not
tracked. Sequence numbers are tracked as in RFC 3550 appendix A.1 (extended highest sequence
with cycles, MAX_DROPOUT / MAX_MISORDER, resync after two packets of a new sequence), with a
64-packet bitmap below the highest sequence to tell duplicates from late (reordered)
packets. Interarrival jitter is RFC 3550 A.8 in integer form (``jitter16`` is J * 16, in
timestamp units), once the clock rate is known: inferred, whatever the payload type, from the
RTP timestamp advance over at least CLOCK_WINDOW of arrival time, snapped to 8000, 16000,
48000 or 90000 Hz. Arrival times are the engine's, one CLOCK_MONOTONIC read per batch.

:func:`inspect` is a C function the engine cimports: nothing here is called from Python.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

from ext._wire cimport RTCP_TYPE_MIN, RTP_HEADER, is_rtcp, load16, load32

cdef enum:
    MAX_DROPOUT = 3000     # RFC 3550 A.1
    MAX_MISORDER = 100

# durations past an int: typed 64-bit constants
cdef extern from *:
    """
    #define CLICKACALL_CLOCK_WINDOW_NS 400000000LL
    #define CLICKACALL_JITTER_MAX_GAP_NS 10000000000LL
    """
    # ns of arrival time before the clock rate is inferred
    const int64_t CLOCK_WINDOW "CLICKACALL_CLOCK_WINDOW_NS"
    # ns: a longer pause does not feed the jitter estimate
    const int64_t JITTER_MAX_GAP "CLICKACALL_JITTER_MAX_GAP_NS"

# flow row fields (FLOW_FIELDS below is the same order)
cdef enum:
    F_KEY = 0              # (1 << 32) | SSRC while the row is used, 0 when free
    F_SLOT = 1
    F_DIR = 2              # 0 client -> peer ("to_peer"), 1 peer -> client ("to_client")
    F_PT = 3               # payload type of the last RTP packet, -1 before any
    F_PACKETS = 4          # RTP packets, duplicates included
    F_BYTES = 5            # their UDP payload bytes (RTP header included)
    F_RTCP_PACKETS = 6
    F_RTCP_BYTES = 7
    F_RTCP_TYPES = 8       # bit (pt - 192) for each RTCP packet type seen (first in compound)
    F_MARKERS = 9          # RTP packets with the marker bit (video: frames)
    F_BASE = 10            # extended sequence of the first packet (moved on resync)
    F_EXT_MAX = 11         # highest extended sequence (cycles << 16 | seq, from 0x10000)
    F_BAD_SEQ = 12         # 0x10000 | the sequence a restart would continue with, else 0
    F_WINDOW = 13          # bit k: ext_max - k was received
    F_REORDERED = 14       # arrived below the highest sequence, not a duplicate
    F_DUPLICATES = 15
    F_STRAY = 16           # packets of a sequence jump that was never confirmed
    F_RESYNCS = 17
    F_CLOCK = 18           # inferred RTP clock rate in Hz, 0 until known
    F_JITTER16 = 19        # RFC 3550 A.8 interarrival jitter * 16, timestamp units
    F_LAST_TS = 20         # RTP timestamp and arrival (ns) of the last packet
    F_LAST_NS = 21
    F_MAX_GAP_NS = 22      # longest time between two packets of the flow
    F_FIRST_NS = 23        # arrival of the first RTP packet
    F_REF_TS = 24          # clock inference: timestamp and arrival it is measured from
    F_REF_NS = 25

FLOW_FIELDS = (
    "key", "slot", "direction", "payload_type", "packets", "bytes", "rtcp_packets",
    "rtcp_bytes", "rtcp_types", "markers", "base_seq", "max_seq", "bad_seq", "window",
    "reordered", "duplicates", "stray", "resyncs", "clock_rate", "jitter16", "last_ts",
    "last_ns", "max_gap_ns", "first_ns", "ref_ts", "ref_ns",
)
CLOCK_RATES = (8000, 16000, 48000, 90000)


cdef inline int64_t _snap_clock(int64_t hz) noexcept nogil:
    """The RTP clock rate nearest (geometrically) to a measured one; 0 when implausible."""
    if hz < 4000 or hz > 180000:
        return 0
    if hz < 11314:     # sqrt(8000 * 16000)
        return 8000
    if hz < 27713:     # sqrt(16000 * 48000)
        return 16000
    if hz < 65727:     # sqrt(48000 * 90000)
        return 48000
    return 90000


cdef int inspect(int64_t *flows, int slot, int d, const uint8_t *p, unsigned int n,
                 int64_t now) noexcept nogil:
    """Account one packet of ``slot`` in direction ``d`` (0 to the peer, 1 to the client)
    to its SSRC's row of ``flows``; returns what the packet was (SEEN_*). Reads at most the
    first 12 + 4 * CC bytes, after checking the length."""
    cdef uint8_t b1
    cdef uint16_t seq, udelta
    cdef uint32_t ssrc, ts
    cdef int64_t key, maxs, ext, gap, dts, diff, clock, el
    cdef uint32_t uts
    cdef int64_t *base
    cdef int64_t *row = NULL
    cdef uint64_t win, bit
    cdef int i, h, off
    cdef bint rtcp
    if n < 8 or (p[0] & 0xC0) != 0x80:
        return SEEN_OTHER
    b1 = p[1]
    rtcp = is_rtcp(b1)
    if rtcp:
        ssrc = load32(p + 4)  # sender SSRC of the first packet of the compound
    else:
        if n < RTP_HEADER + 4 * <unsigned int>(p[0] & 0x0F):
            return SEEN_OTHER
        ssrc = load32(p + 8)
    key = (<int64_t>1 << 32) | ssrc
    base = flows + (<int64_t>slot * FLOWS_PER_SLOT + d * FLOWS_PER_DIR) * NFLOW
    h = <int>((ssrc * <uint32_t>0x9E3779B1) >> 29)  # top 3 bits: 0 .. FLOWS_PER_DIR-1
    for i in range(FLOWS_PER_DIR):
        row = base + ((h + i) & (FLOWS_PER_DIR - 1)) * NFLOW
        if row[F_KEY] == key:
            break
        if row[F_KEY] == 0:
            memset(row, 0, NFLOW * 8)
            row[F_KEY] = key
            row[F_SLOT] = slot
            row[F_DIR] = d
            row[F_PT] = -1
            break
        row = NULL
    if row == NULL:
        return SEEN_OVERFLOW
    if rtcp:
        row[F_RTCP_PACKETS] += 1
        row[F_RTCP_BYTES] += n
        row[F_RTCP_TYPES] |= <int64_t>1 << (b1 - RTCP_TYPE_MIN)
        return SEEN_RTCP
    seq = load16(p + 2)
    ts = load32(p + 4)
    row[F_PT] = b1 & 0x7F
    if b1 & 0x80:
        row[F_MARKERS] += 1
    row[F_BYTES] += n
    row[F_PACKETS] += 1
    if row[F_PACKETS] == 1:
        row[F_BASE] = row[F_EXT_MAX] = 0x10000 + seq
        row[F_WINDOW] = 1
        row[F_LAST_TS] = row[F_REF_TS] = ts
        row[F_LAST_NS] = row[F_FIRST_NS] = row[F_REF_NS] = now
        return SEEN_RTP
    gap = now - row[F_LAST_NS]
    if gap > row[F_MAX_GAP_NS]:
        row[F_MAX_GAP_NS] = gap
    # -- sequence: RFC 3550 A.1, plus a bitmap for duplicates
    maxs = row[F_EXT_MAX]
    udelta = <uint16_t>(seq - <uint16_t>maxs)
    if udelta == 0:
        row[F_DUPLICATES] += 1
        return SEEN_RTP
    if udelta < MAX_DROPOUT:  # in order, with a permissible gap
        win = <uint64_t>row[F_WINDOW]
        row[F_WINDOW] = <int64_t>(((win << udelta) | 1) if udelta < 64 else 1)
        row[F_EXT_MAX] = maxs + udelta
        row[F_BAD_SEQ] = 0
    elif udelta <= 0x10000 - MAX_MISORDER:  # a jump: restart after two in a row
        if row[F_BAD_SEQ] == (0x10000 | seq):
            ext = maxs - (maxs & 0xFFFF) + 0x10000 + seq
            row[F_BASE] += ext - maxs - 2  # both packets of the new run are expected
            row[F_EXT_MAX] = ext
            row[F_WINDOW] = 3
            row[F_STRAY] -= 1
            row[F_RESYNCS] += 1
            row[F_BAD_SEQ] = 0
        else:
            row[F_BAD_SEQ] = 0x10000 | <uint16_t>(seq + 1)
            row[F_STRAY] += 1
            return SEEN_RTP
    else:  # late: below the highest sequence
        off = 0x10000 - udelta
        if off < 64:
            bit = <uint64_t>1 << off
            win = <uint64_t>row[F_WINDOW]
            if win & bit:
                row[F_DUPLICATES] += 1
                return SEEN_RTP
            row[F_WINDOW] = <int64_t>(win | bit)
        row[F_REORDERED] += 1
    # -- clock rate, then RFC 3550 A.8 interarrival jitter
    clock = row[F_CLOCK]
    if clock == 0:
        el = now - row[F_REF_NS]
        if el >= CLOCK_WINDOW:
            uts = ts - <uint32_t>row[F_REF_TS]
            if uts < <uint32_t>0x80000000:
                clock = _snap_clock(<int64_t>uts * 1000000000 // el)
            if clock:
                row[F_CLOCK] = clock
            else:  # implausible (a paused or restarted sender): measure afresh
                row[F_REF_TS] = ts
                row[F_REF_NS] = now
    else:
        if gap <= JITTER_MAX_GAP:
            dts = <int32_t>(ts - <uint32_t>row[F_LAST_TS])
            diff = gap * clock // 1000000000 - dts
            if diff < 0:
                diff = -diff
            row[F_JITTER16] += diff - ((row[F_JITTER16] + 8) >> 4)
    row[F_LAST_TS] = ts
    row[F_LAST_NS] = now
    return SEEN_RTP
