# cython: language_level=3, freethreading_compatible=True
"""The relay node's forwarding fast path: the engine and its batched socket loop.

ChannelData from clients and datagrams arriving on relayed sockets are read in batches with
``recvmmsg``, looked up in the tables (ext/_tables: channel by client, channel by peer,
permission by peer address), reframed in place (ext/_framing: 4-byte ChannelData header or a
Data indication written into the headroom in front of the payload) and written out in batches
with ``sendmmsg``. No Python object is made per relayed packet; counters live in two
``bytearray``s that Python reads as int64 memoryviews (``numpy.frombuffer`` gives views).

Passive call quality ("inspection", on unless ``quality=False``): every packet the relay
accepts for an allocation (ChannelData payload, Send indication DATA, datagram on a relayed
socket) goes through ext/_rtp's RTP/RTCP header inspection into the engine's per-SSRC flow
table (``flows``, FLOW_FIELDS order), with one CLOCK_MONOTONIC read per received batch as the
arrival time; the engine counts what it was (``rtp_packets``, ``rtcp_packets``,
``non_rtp_packets``, ``ssrc_overflow``: an SSRC its direction's FLOWS_PER_SLOT // 2 rows
had no room for).

Relay-added damage is kept apart from upstream damage: SO_RXQ_OVFL is enabled on every
socket the engine reads, and the kernel's drop count, read from the recvmmsg control
message, is added to ``rxq_overflow``; each batch's receive-to-send time (after recvmmsg to
after sendmmsg) lands in a log2 histogram (``latency``), weighted by the packets it carried.

Only STUN messages (first byte 0-3, RFC 7983) reaching a listening socket go up to Python.
All table writes come from Python, through the methods Engine inherits from ext._tables.Tables
(the TURN core decides, the engine only forwards).

TCP and TLS clients (:meth:`Engine.use_streams`, ext/_stream.pyx): :meth:`Engine.drain_streams`
forwards the ChannelData split out of their streams in the same batched ``sendmmsg``; peers'
packets for them are framed into their connections' bounded output buffers. The counters keep
TCP's and TLS's share of the totals (``transport_counters``).

The engine's system calls never block (``MSG_DONTWAIT``, a zero ``epoll_wait`` timeout), so
they keep the GIL: releasing and taking it back around each cost more than the call waits,
which is never. Receive vectors are armed once; after a receive only the lengths of those it
filled are given back (a call's socket has a datagram or two per wake-up, not a batch).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.time cimport nanosleep, timespec

from cython.view cimport array as cvarray

from ext._framing cimport (
    MAX_INDICATION_HEADER, channel_data, channel_header, data_indication, is_stun,
)
from ext._rtp cimport FLOWS_PER_SLOT, NFLOW, SEEN_OTHER, SEEN_RTCP, SEEN_RTP, inspect
from ext._stream cimport CS_OPEN, NSC, TR_TCP, TR_TLS, TR_UDP, Conn, Streams
from ext._sys cimport (
    CMSG_DATA, CMSG_FIRSTHDR, CMSG_NXTHDR, ECONNREFUSED, EAGAIN, EINTR, EWOULDBLOCK,
    MSG_DONTWAIT, MSG_TRUNC, SO_RXQ_OVFL, SOL_SOCKET, cmsghdr, errno, CMSG_LEN, CMSG_SPACE,
    EINVAL, EIO, EMSGSIZE, SOL_UDP, UDP_SEGMENT, monotonic_ns, msghdr, sendmsg, mmsghdr,
    recvmmsg, sendmmsg, sendto, setsockopt, sockaddr, sockaddr_storage, socklen_t,
    EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLIN, close, epoll_create1, epoll_ctl,
    epoll_event, epoll_wait,
)
from ext._tables cimport (
    Binding, KIND_CHAN_BY_CLIENT, KIND_CHAN_BY_PEER, KIND_MUX, KIND_PERMISSION, Key, Slot,
    addr_tuple,
    allow, index_lookup, key_addr, key_init, parse_addr,
)
from ext._wire cimport CHANNEL_HEADER, load16

import os
import socket

from ext import _rtp, _stream

# --- constants ----------------------------------------------------------------------------

cdef enum:
    HEADROOM = MAX_INDICATION_HEADER  # before each payload: the largest Data indication header
    NSLOT = 8              # int64 counters per slot
    NLAT = 32              # int64 cells of the latency histogram
    NLAT_BUCKETS = 24      # bucket b: [2^(b-1), 2^b) microseconds (bucket 0: < 1 us)
    CBUF = 32              # control-message room per received datagram (one uint32 cmsg)
    MAX_EVENTS = 64        # epoll events per epoll_wait
    GSO_MAX_SEG = 1232     # IPv6 minimum MTU 1280 - 40 - 8: fits every path
    GSO_MAX_SEGS = 64      # the kernel's UDP_MAX_SEGMENTS (64 before Linux 6.2)
    GSO_MAX_BYTES = 65000  # one IP datagram's worth
    GCBUF = 32             # room for one cmsg carrying a uint16_t

# epoll data of a shared peer-facing socket: MUX_MARK + its index (a slot's is the slot)
cdef uint64_t MUX_MARK = <uint64_t>1 << 32

# global counter indexes (COUNTER_NAMES below is the same order)
cdef enum:
    C_STUN_IN = 0
    C_CLIENT_PKTS = 1
    C_CLIENT_BYTES = 2
    C_PEER_PKTS = 3
    C_PEER_BYTES = 4
    C_DATA_INDICATIONS = 5
    C_RECV_CALLS = 6
    C_SEND_CALLS = 7
    D_MALFORMED = 8
    D_NO_CHANNEL = 9
    D_NO_PERMISSION = 10
    D_OVER_BANDWIDTH = 11
    D_DENIED_PEER = 12
    D_SEND_FAILED = 13
    D_TRUNCATED = 14
    D_NO_ALLOCATION = 15
    C_RECV_ERRORS = 16
    C_RTP_PKTS = 17
    C_RTCP_PKTS = 18
    C_NON_RTP = 19
    C_SSRC_OVERFLOW = 20
    C_RXQ_OVERFLOW = 21
    C_GSO_MESSAGES = 22
    C_GSO_FALLBACKS = 23
    D_BACKPRESSURE = 24    # media for a TCP or TLS client whose output buffer is full
    D_UNKNOWN_PEER = 25    # a datagram on a shared peer-facing socket from a peer no slot owns
    D_PEER_TAKEN = 26      # a Send to a peer another allocation owns (shared socket; Python)
    G_MUX_SLOTS = 27       # gauge: live slots on a shared peer-facing socket
    C_COALESCE_WAITS = 28  # --coalesce-us waits after a wake-up that relayed packets
    C_COALESCE_IDLE = 29   # of them, waits after which no socket had anything
    NCTR = 30

# per-slot counter indexes
cdef enum:
    S_CLIENT_PKTS = 0      # client -> peer
    S_CLIENT_BYTES = 1
    S_PEER_PKTS = 2        # peer -> client
    S_PEER_BYTES = 3
    S_DROPPED_PKTS = 4
    S_DROPPED_BYTES = 5
    S_NON_RTP = 6          # packets that were neither RTP nor RTCP (STUN, DTLS, junk)
    S_SSRC_OVERFLOW = 7    # RTP/RTCP packets of SSRCs beyond FLOWS_PER_DIR

COUNTER_NAMES = (
    "stun_in", "client_packets", "client_bytes", "peer_packets", "peer_bytes",
    "data_indications", "recv_calls", "send_calls",
    "drop_malformed", "drop_no_channel", "drop_no_permission", "drop_over_bandwidth",
    "drop_denied_peer", "drop_send_failed", "drop_truncated", "drop_no_allocation",
    "recv_errors", "rtp_packets", "rtcp_packets", "non_rtp_packets", "ssrc_overflow",
    "rxq_overflow", "gso_messages", "gso_fallbacks", "drop_backpressure",
    "drop_unknown_peer", "drop_peer_taken", "mux_allocations",
    "coalesce_waits", "coalesce_idle",
)
DROP_REASONS = {
    "malformed": D_MALFORMED, "no_channel": D_NO_CHANNEL, "no_permission": D_NO_PERMISSION,
    "over_bandwidth": D_OVER_BANDWIDTH, "denied_peer": D_DENIED_PEER,
    "send_failed": D_SEND_FAILED, "truncated": D_TRUNCATED, "no_allocation": D_NO_ALLOCATION,
    "backpressure": D_BACKPRESSURE,
    "unknown_peer": D_UNKNOWN_PEER, "peer_taken": D_PEER_TAKEN,
}
SLOT_COUNTER_NAMES = (
    "client_packets", "client_bytes", "peer_packets", "peer_bytes",
    "dropped_packets", "dropped_bytes", "non_rtp_packets", "ssrc_overflow",
)
FLOW_FIELDS = _rtp.FLOW_FIELDS
CLOCK_RATES = _rtp.CLOCK_RATES
FLOWS_PER_SLOT_ = FLOWS_PER_SLOT
LATENCY_BUCKETS = NLAT_BUCKETS
LATENCY_CELLS = NLAT
SLOT_COUNTERS = NSLOT
HEADROOM_BYTES = HEADROOM
# the counters' memory: the totals, the TCP clients' and the TLS clients' share of them
# (COUNTER_NAMES each), then the connection counters of TCP and of TLS (STREAM_COUNTER_NAMES)
COUNTER_BLOCK = NCTR
NCOUNTERS = NCTR * 3 + NSC * 2
TRANSPORTS = _stream.TRANSPORTS
STREAM_COUNTER_NAMES = _stream.STREAM_COUNTER_NAMES

cdef extern from *:
    int __builtin_clzll(unsigned long long x) nogil


# --- small helpers -------------------------------------------------------------------------

cdef extern from *:
    """
    #ifndef CLICKACALL_SLOW_NS
    #define CLICKACALL_SLOW_NS 0
    #endif
    """
    const int64_t CLICKACALL_SLOW_NS


SLOW_NS = CLICKACALL_SLOW_NS  # 0 but in the gate test's deliberately slowed build


cdef inline void _slowed() noexcept nogil:
    """A deliberately slower engine for the performance gate's own test: built with
    CLICKACALL_SLOW_NS > 0 (setup.py --slow-ns), every relayed packet waits that many
    nanoseconds, a regression of known size on any workload. Every other build has 0, and
    the C compiler drops the wait."""
    cdef int64_t until
    if CLICKACALL_SLOW_NS > 0:
        until = monotonic_ns() + CLICKACALL_SLOW_NS
        while monotonic_ns() < until:
            pass


cdef inline bint _want_retry(int err) noexcept nogil:
    return err == EINTR or err == ECONNREFUSED


cdef int _enable_rxq_ovfl(int fd) except -1:
    """Ask the kernel to report the socket's receive-queue drop count with each datagram."""
    cdef int one = 1
    if setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one)) < 0:
        raise OSError(errno, os.strerror(errno))
    return 0


def classify(const unsigned char[:] data not None):
    """What :meth:`Engine.drain_listener` makes of one datagram from a client, through the
    same inline checks (ext/_framing.pxd): ``(0, 0, 0)`` STUN for the TURN core,
    ``(1, channel, payload length)`` ChannelData to look up, ``(2, 0, 0)`` dropped as
    malformed. For the tests and the fuzz target (tests/fuzz_classify.py)."""
    cdef unsigned int n = <unsigned int>data.shape[0]
    cdef const uint8_t *p = &data[0] if n > 0 else NULL
    cdef uint16_t chan = 0, dlen = 0
    if is_stun(p, n):
        return (0, 0, 0)
    if channel_data(p, n, &chan, &dlen):
        return (1, chan, dlen)
    return (2, 0, 0)


def gso_supported():
    """Whether this kernel takes UDP_SEGMENT (Linux 4.18 and later)."""
    cdef int zero = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        return setsockopt(probe.fileno(), SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) == 0


cdef inline void _inspect(Engine e, int slot, int d, const uint8_t *p, unsigned int n,
                          int64_t now) noexcept nogil:
    """Inspect one packet of ``slot`` in direction ``d`` (ext/_rtp) and count what it was."""
    cdef int seen = inspect(e.flows, slot, d, p, n, now)
    if seen == SEEN_RTP:
        e.ctr[C_RTP_PKTS] += 1
    elif seen == SEEN_RTCP:
        e.ctr[C_RTCP_PKTS] += 1
    elif seen == SEEN_OTHER:
        e.ctr[C_NON_RTP] += 1
        e.slot_ctr[slot * NSLOT + S_NON_RTP] += 1
    else:
        e.ctr[C_SSRC_OVERFLOW] += 1
        e.slot_ctr[slot * NSLOT + S_SSRC_OVERFLOW] += 1


include "_fastpath_send.pxi"
include "_fastpath_streams.pxi"


cdef int _stream_channel(void *ctx, Conn *c, int ci, uint8_t *p, size_t n) noexcept:
    return _from_stream(<Engine>ctx, c, p)


cdef int _stream_flush(void *ctx) noexcept:
    return _flush_streams(<Engine>ctx)


# --- the engine ----------------------------------------------------------------------------

cdef class Engine(Tables):
    """Tables and batch buffers of one worker. Not thread-safe: drive it from one loop."""

    def __cinit__(self, int max_slots, int batch=64, int bufsize=4096, counters=None,
                  bint quality=True, latency=None, bint gso=True):
        """``counters``, when given, is a writable buffer of at least NCOUNTERS * 8 bytes
        (shared memory, say) that the engine writes its global counters into, so that
        another process can read them live; ``latency`` likewise, LATENCY_CELLS * 8 bytes,
        for the receive-to-send histogram. ``quality`` switches RTP/RTCP inspection; ``gso``
        lets sends to one destination share a UDP_SEGMENT message where the kernel has it."""
        cdef unsigned char[::1] ext_counters
        cdef unsigned char[::1] ext_latency
        cdef cvarray table
        cdef bytes prefix
        # Tables.__cinit__ has run (max_slots checked, the tables allocated)
        if batch < 1 or batch > 1024 or bufsize < 576 or bufsize > 65536:
            raise ValueError("bad engine size")
        self.batch = batch
        self.bufsize = bufsize
        self.bufs = <uint8_t *>calloc(batch, HEADROOM + bufsize + 4)
        self.rmsgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.riovs = <iovec *>calloc(batch, sizeof(iovec))
        self.raddrs = <sockaddr_storage *>calloc(batch, sizeof(sockaddr_storage))
        self.smsgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.siovs = <iovec *>calloc(batch, sizeof(iovec))
        self.outs = <Out *>calloc(batch, sizeof(Out))
        self.cbufs = <uint8_t *>calloc(batch, CBUF)
        self.spkts = <int *>calloc(batch, sizeof(int))
        self.gcbufs = <uint8_t *>calloc(batch, GCBUF)
        if (self.cbufs == NULL or self.bufs == NULL
                or self.rmsgs == NULL or self.riovs == NULL or self.raddrs == NULL
                or self.smsgs == NULL or self.siovs == NULL or self.outs == NULL
                or self.spkts == NULL or self.gcbufs == NULL):
            raise MemoryError()
        self._arm_recv()
        prefix = os.urandom(8)  # of the Data indications' transaction ids
        memcpy(self.txn_prefix, <const char *>prefix, 8)
        self._slot_counters = bytearray(max_slots * NSLOT * 8)
        self.slot_ctr = <int64_t *>PyByteArray_AS_STRING(self._slot_counters)
        if counters is None:
            self._counters = bytearray(NCOUNTERS * 8)
            self.ctr = <int64_t *>PyByteArray_AS_STRING(self._counters)
        else:
            ext_counters = counters
            if ext_counters.shape[0] < NCOUNTERS * 8 or (<size_t>&ext_counters[0]) % 8:
                raise ValueError("counters buffer too small or not 8-byte aligned")
            self._counters = ext_counters
            self.ctr = <int64_t *>&ext_counters[0]
            memset(self.ctr, 0, NCOUNTERS * 8)
        self.tctr[TR_UDP] = self.ctr
        self.tctr[TR_TCP] = self.ctr + NCTR
        self.tctr[TR_TLS] = self.ctr + 2 * NCTR
        if latency is None:
            self._latency = bytearray(NLAT * 8)
            self.lat = <int64_t *>PyByteArray_AS_STRING(self._latency)
        else:
            ext_latency = latency
            if ext_latency.shape[0] < NLAT * 8 or (<size_t>&ext_latency[0]) % 8:
                raise ValueError("latency buffer too small or not 8-byte aligned")
            self._latency = ext_latency
            self.lat = <int64_t *>&ext_latency[0]
            memset(self.lat, 0, NLAT * 8)
        # the flow table: calloc'd (pages become resident only as slots use them), owned by
        # a cython array so that views handed to Python keep it alive
        table = cvarray(shape=(max_slots * FLOWS_PER_SLOT, NFLOW), itemsize=8, format="q",
                        mode="c", allocate_buffer=False)
        self.flows = <int64_t *>calloc(<size_t>max_slots * FLOWS_PER_SLOT, NFLOW * 8)
        if self.flows == NULL:
            raise MemoryError()
        table.data = <char *>self.flows
        table.callback_free_data = free
        self._flows = table
        self.inspecting = quality
        self.gso = gso and gso_supported()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, os.strerror(errno))
        self.epoll_open = True

    def __dealloc__(self):
        # runs even when a __cinit__ raised, with epfd 0 (never opened): check the flag
        if self.epoll_open:
            close(self.epfd)
        free(self.bufs)
        free(self.rmsgs)
        free(self.riovs)
        free(self.raddrs)
        free(self.smsgs)
        free(self.siovs)
        free(self.outs)
        free(self.cbufs)
        free(self.spkts)
        free(self.gcbufs)

    # -- quality: arrival times, receive-queue drops, relay-added delay ------------------

    cdef int64_t _now(self) noexcept nogil:
        """Arrival time of a batch: CLOCK_MONOTONIC ns, or the tests' fake clock."""
        if self.fake_now:
            return self.fake_now
        return monotonic_ns()

    cdef void _received(self, int start, int n, uint32_t *last_drops) noexcept nogil:
        """A recvmmsg filled vectors [start, start + n) from one socket: add what the kernel
        dropped on it since ``last_drops`` (SO_RXQ_OVFL, cumulative for the socket, so the
        newest count carried is the one) to ``rxq_overflow``, and give the vectors back the
        address and control lengths the kernel shortened, for the next receive (all else in
        them was armed once, by :meth:`_arm_recv`)."""
        cdef int i = start + n - 1
        cdef uint32_t v = last_drops[0]
        cdef bint found = False
        cdef cmsghdr *c
        while i >= start and not found:  # the newest first
            if self.rmsgs[i].msg_hdr.msg_controllen != 0:
                c = CMSG_FIRSTHDR(&self.rmsgs[i].msg_hdr)
                while c != NULL:
                    if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SO_RXQ_OVFL:
                        memcpy(&v, CMSG_DATA(c), 4)
                        found = True
                        break
                    c = CMSG_NXTHDR(&self.rmsgs[i].msg_hdr, c)
            i -= 1
        if v - last_drops[0] < <uint32_t>0x80000000:
            self.ctr[C_RXQ_OVERFLOW] += v - last_drops[0]
            last_drops[0] = v
        for i in range(start, start + n):
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self.rmsgs[i].msg_hdr.msg_controllen = CBUF

    cdef void _latency_note(self, int64_t t0, int packets) noexcept nogil:
        """One batch of ``packets`` was received at ``t0`` and has just been sent."""
        cdef int64_t d = self._now() - t0
        cdef int b = 0
        if d < 0:
            d = 0
        if d >= 1000:
            b = 64 - __builtin_clzll(<unsigned long long>(d // 1000))
            if b >= NLAT_BUCKETS:
                b = NLAT_BUCKETS - 1
        self.lat[b] += packets
        self.lat[NLAT_BUCKETS] += d * packets      # sum of per-packet delays, ns
        self.lat[NLAT_BUCKETS + 1] += packets
        self.lat[NLAT_BUCKETS + 2] += 1            # batches

    # -- batched output ------------------------------------------------------------------

    # -- listeners -----------------------------------------------------------------------

    def add_listener(self, int fd):
        """Register a bound, non-blocking listening UDP socket; returns its index."""
        if self.nlisteners >= MAX_LISTENERS:
            raise ValueError("too many listening sockets")
        _enable_rxq_ovfl(fd)
        self.listener_fds[self.nlisteners] = fd
        self.listener_kind[self.nlisteners] = TR_UDP
        self.listener_drops[self.nlisteners] = 0
        self.nlisteners += 1
        return self.nlisteners - 1

    # -- TCP and TLS clients (ext/_stream.pyx) -------------------------------------------

    def use_streams(self, Streams streams not None):
        """Serve TCP and TLS clients through ``streams`` (its counters then live in ours)."""
        cdef int t
        if self.streams is not None:
            raise ValueError("the engine already has its streams")
        streams.sctr = self.ctr + 3 * NCTR
        memset(streams.sctr, 0, NSC * 2 * 8)
        for t in range(3):
            streams.blocks[t] = self.tctr[t]
        streams.i_stun = C_STUN_IN
        streams.i_truncated = D_TRUNCATED
        streams._owner = self._counters
        self.streams = streams

    def add_stream_listener(self, int fd, int transport):
        """Register a bound, listening, non-blocking TCP socket whose connections speak
        TURN in the clear (``_stream.TCP``) or over TLS (``_stream.TLS``); returns its
        listener index (the same numbering as add_listener's)."""
        if self.streams is None:
            raise ValueError("use_streams() first")
        if self.nlisteners >= MAX_LISTENERS:
            raise ValueError("too many listening sockets")
        self.streams.add_listener(fd, self.nlisteners, transport)
        self.listener_fds[self.nlisteners] = fd
        self.listener_kind[self.nlisteners] = transport
        self.listener_drops[self.nlisteners] = 0
        self.nlisteners += 1
        return self.nlisteners - 1

    def drain_streams(self):
        """Serve the connections and listeners the streams' epoll set says are ready:
        ChannelData is forwarded here; returns the events for Python (STUN messages,
        connections opened and closed: ``Streams.take_events``)."""
        if self.streams is None:
            return []
        self.nout = 0
        self.stream_now = self._now()
        self.streams.drain(<void *>self, _stream_channel, _stream_flush)
        return self.streams.take_events()

    def attach_stream(self, int slot, int64_t conn):
        """The slot's client is the TCP or TLS connection ``conn`` (peers' packets go there)."""
        cdef Slot *s = self._slot(slot)
        cdef Conn *c = self.streams.get(conn) if self.streams is not None else NULL
        if c == NULL:
            raise KeyError(conn)
        s.conn = conn
        s.transport = c.transport
        self.streams.attach(conn, 1)

    cdef void _arm_recv(self) noexcept nogil:
        """Point every receive vector at its preallocated buffer, address and control
        buffer (once: the kernel changes only their lengths and flags, and
        :meth:`_received` gives the lengths back)."""
        cdef int i
        for i in range(self.batch):
            self.riovs[i].iov_base = self.bufs + i * (HEADROOM + self.bufsize + 4) + HEADROOM
            self.riovs[i].iov_len = self.bufsize
            memset(&self.rmsgs[i], 0, sizeof(mmsghdr))
            self.rmsgs[i].msg_hdr.msg_name = &self.raddrs[i]
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self.rmsgs[i].msg_hdr.msg_iov = &self.riovs[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
            self.rmsgs[i].msg_hdr.msg_control = self.cbufs + i * CBUF
            self.rmsgs[i].msg_hdr.msg_controllen = CBUF

    def drain_listener(self, int index, int max_batches=64):
        """Read what a listening socket has. ChannelData is forwarded here; STUN messages
        are returned as a list of ``(bytes, (host, port))`` for the TURN core."""
        cdef int fd, n, i, nout, b, err, perm
        cdef uint8_t *p
        cdef unsigned int length
        cdef uint16_t chan, dlen
        cdef Key key
        cdef Binding *bd
        cdef Slot *s
        cdef int64_t now
        cdef list stun = []
        if index < 0 or index >= self.nlisteners or self.listener_kind[index] != TR_UDP:
            raise ValueError("no such UDP listener")
        fd = self.listener_fds[index]
        for _ in range(max_batches):
            n = recvmmsg(fd, self.rmsgs, self.batch, MSG_DONTWAIT, NULL)
            err = errno
            self.ctr[C_RECV_CALLS] += 1
            if n < 0:
                if err == EAGAIN or err == EWOULDBLOCK:
                    break
                if _want_retry(err):
                    continue
                raise OSError(err, os.strerror(err))
            now = self._now()
            self._received(0, n, &self.listener_drops[index])
            nout = 0
            for i in range(n):
                p = <uint8_t *>self.riovs[i].iov_base
                length = self.rmsgs[i].msg_len
                if self.rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC:
                    self.ctr[D_TRUNCATED] += 1
                    continue
                if is_stun(p, length):
                    self.ctr[C_STUN_IN] += 1
                    stun.append((PyBytes_FromStringAndSize(<char *>p, length),
                                 addr_tuple(&self.raddrs[i])))
                    continue
                if not channel_data(p, length, &chan, &dlen):
                    self.ctr[D_MALFORMED] += 1
                    continue
                key_init(&key, KIND_CHAN_BY_CLIENT, <uint32_t>index, chan)
                key_addr(&key, &self.raddrs[i], True)
                b = index_lookup(&self.index, &key)
                if b < 0:
                    self.ctr[D_NO_CHANNEL] += 1
                    continue
                bd = &self.bindings[b]
                s = &self.slots[bd.slot]
                key_init(&key, KIND_PERMISSION, <uint32_t>bd.slot, 0)
                key_addr(&key, &bd.peer, False)
                perm = index_lookup(&self.index, &key)
                if perm < 0:
                    self.ctr[D_NO_PERMISSION] += 1
                    self.slot_ctr[bd.slot * NSLOT + S_DROPPED_PKTS] += 1
                    continue
                if self.inspecting:
                    _inspect(self, bd.slot, 0, p + CHANNEL_HEADER, dlen, now)
                if not allow(s, 0, dlen, now):
                    self.ctr[D_OVER_BANDWIDTH] += 1
                    self.slot_ctr[bd.slot * NSLOT + S_DROPPED_PKTS] += 1
                    self.slot_ctr[bd.slot * NSLOT + S_DROPPED_BYTES] += dlen
                    continue
                _slowed()
                self.ctr[C_CLIENT_PKTS] += 1
                self.ctr[C_CLIENT_BYTES] += dlen
                self.slot_ctr[bd.slot * NSLOT + S_CLIENT_PKTS] += 1
                self.slot_ctr[bd.slot * NSLOT + S_CLIENT_BYTES] += dlen
                self.outs[nout].fd = s.relay_fd
                self.outs[nout].base = p + CHANNEL_HEADER
                self.outs[nout].length = dlen
                self.outs[nout].name = &bd.peer
                self.outs[nout].namelen = bd.peer_len
                nout += 1
            if nout:
                _flush(self, nout)
                self._latency_note(now, nout)
            if n < self.batch:
                break
        return stun

    # -- allocations (their permissions and channels: ext._tables.Tables) ----------------

    def open_slot(self, int relay_fd, int listener, str client_host, int client_port,
                  int mux=-1):
        """Take a slot for a new allocation whose relayed socket is ``relay_fd``; with
        ``mux`` (an index from :meth:`add_mux`) it is that shared peer-facing socket instead,
        and ``relay_fd`` is ignored."""
        cdef int slot, err
        cdef epoll_event ev
        if listener < 0 or listener >= self.nlisteners:
            raise ValueError("no such listener")
        if mux >= self.nmux:
            raise ValueError("no such shared socket")
        if mux >= 0:
            relay_fd = self.mux_fds[mux]
        slot = self._take_slot(relay_fd, listener, client_host, client_port)
        memset(&self.slot_ctr[slot * NSLOT], 0, NSLOT * 8)
        memset(self.flows + <int64_t>slot * FLOWS_PER_SLOT * NFLOW, 0,
               FLOWS_PER_SLOT * NFLOW * 8)
        if mux >= 0:
            self.slots[slot].mux = mux
            self.ctr[G_MUX_SLOTS] += 1
        elif relay_fd >= 0:
            try:
                _enable_rxq_ovfl(relay_fd)
            except OSError:
                self._free_slot(slot)
                raise
            ev.events = EPOLLIN
            ev.data.u64 = <uint64_t>slot
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, relay_fd, &ev) < 0:
                err = errno
                self._free_slot(slot)
                raise OSError(err, os.strerror(err))
        return slot

    def close_slot(self, int slot):
        """Free a slot. Its channels and permissions must have been removed first."""
        cdef Slot *s = self._slot(slot)
        cdef epoll_event ev
        if s.conn >= 0 and self.streams is not None:
            self.streams.attach(s.conn, -1)
        if s.mux >= 0:
            self.ctr[G_MUX_SLOTS] -= 1  # the shared socket stays; its peers: Python's
        elif s.relay_fd >= 0:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, s.relay_fd, &ev)
        self._free_slot(slot)

    # -- relayed sockets -----------------------------------------------------------------

    def drain_relay(self, int slot, int max_batches=64):
        """Read what peers sent to the slot's relayed socket and deliver it to the client
        as ChannelData (when a channel is bound to that peer) or a Data indication.
        Returns the number of packets delivered. A slot on a shared socket (``mux``) drains
        that socket, whose datagrams go to whichever slots own their peers."""
        cdef Slot *s = self._slot(slot)
        cdef int n, total = 0
        self.nqueued = 0
        for _ in range(max_batches):
            self.nout = 0
            n = self._recv_relay(s, slot, 0) if s.mux < 0 else self._recv_mux(s.mux, 0)
            if n < 0:
                raise OSError(-n, os.strerror(-n))
            if self.nout:
                _flush(self, self.nout)
                self._latency_note(self.batch_t0, self.nout)
                total += self.nout
            if self.streams is not None and self.streams.ndirty:
                self.streams.flush_dirty()
            if n < self.batch:
                break
        return total + self.nqueued

    def drain_relays(self, int max_rounds=16):
        """Drain every relayed socket the kernel says is readable (the engine's own epoll
        set, whose descriptor :attr:`epoll_fd` the event loop watches). What several
        sockets read is gathered into one batch, and so into one ``sendmmsg`` towards the
        clients. Read errors of one socket are counted and do not stop the others.
        Returns packets delivered."""
        cdef epoll_event evs[MAX_EVENTS]
        cdef int n, i, r, slot, mux, err, room, used = 0, total = 0
        self.nout = 0
        self.nqueued = 0
        for _ in range(max_rounds):
            n = epoll_wait(self.epfd, evs, MAX_EVENTS, 0)
            err = errno
            if n < 0:
                if err == EINTR:
                    continue
                raise OSError(err, os.strerror(err))
            for i in range(n):
                mux = -1
                if evs[i].data.u64 >= MUX_MARK:  # a shared socket: up to 16 batches
                    mux = <int>(evs[i].data.u64 - MUX_MARK)
                    if mux >= self.nmux:
                        continue
                    slot = -1
                else:
                    slot = <int>evs[i].data.u64
                    if slot < 0 or slot >= self.max_slots or not self.slots[slot].active:
                        continue
                for _ in range(4 if mux < 0 else 16):  # a busy socket gets a few batches
                    if used == self.batch:
                        total += self.nout
                        if self.nout:
                            _flush(self, self.nout)
                            self._latency_note(self.batch_t0, self.nout)
                        used = self.nout = 0
                    room = self.batch - used
                    if mux >= 0:
                        r = self._recv_mux(mux, used)
                    else:
                        r = self._recv_relay(&self.slots[slot], slot, used)
                    if r < 0:
                        self.ctr[C_RECV_ERRORS] += 1
                        break
                    used += r
                    if r < room:
                        break
            if n < MAX_EVENTS:
                break
        if self.nout:
            total += self.nout
            _flush(self, self.nout)
            self._latency_note(self.batch_t0, self.nout)
        self.nout = 0
        if self.streams is not None and self.streams.ndirty:
            self.streams.flush_dirty()
        return total + self.nqueued

    @property
    def epoll_fd(self):
        return self.epfd

    cdef int _recv_relay(self, Slot *s, int slot, int start) except? -1:
        """One recvmmsg on the slot's relayed socket into buffers [start, batch); what is
        to be delivered is appended to ``outs[nout:]``. Returns datagrams read (0 when the
        socket had none) or -errno."""
        cdef int n = self._recv_peers(s.relay_fd, start, &s.rxq_drops)
        cdef int i
        cdef int nout = self.nout
        cdef int64_t now = self.batch_now
        for i in range(start, start + n):
            nout = self._peer_packet(s, slot, i, now, nout)
        self.nout = nout
        return n

    cdef int _recv_peers(self, int fd, int start, uint32_t *last_drops) except? -1:
        """One recvmmsg of peers' datagrams on ``fd`` into buffers [start, batch), with the
        receive time (``batch_now``; ``batch_t0`` too when nothing is queued yet) and the
        socket's kernel drops (SO_RXQ_OVFL, against ``last_drops``) noted. Returns datagrams
        read (0 when the socket had none) or -errno."""
        cdef int n, err
        while True:
            n = recvmmsg(fd, self.rmsgs + start, self.batch - start, MSG_DONTWAIT, NULL)
            err = errno
            self.ctr[C_RECV_CALLS] += 1
            if n >= 0:
                break
            if err == EAGAIN or err == EWOULDBLOCK:
                return 0
            if not _want_retry(err):
                return -err
        self.batch_now = self._now()
        if self.nout == 0:
            self.batch_t0 = self.batch_now
        self._received(start, n, last_drops)
        return n

    cdef int _recv_mux(self, int mux, int start) except? -1:
        """One recvmmsg on shared peer-facing socket ``mux`` into buffers [start, batch);
        each datagram goes to the slot that owns its source address and port (KIND_MUX),
        then on as :meth:`_recv_relay`'s do. A source no slot owns is dropped and counted
        (``drop_unknown_peer``). Returns datagrams read (0 when none) or -errno."""
        cdef int n = self._recv_peers(self.mux_fds[mux], start, &self.mux_drops[mux])
        cdef int i, slot
        cdef int nout = self.nout
        cdef int64_t now = self.batch_now
        cdef Key key
        for i in range(start, start + n):
            key_init(&key, KIND_MUX, <uint32_t>mux, 0)
            key_addr(&key, &self.raddrs[i], True)
            slot = index_lookup(&self.index, &key)
            if slot < 0 or not self.slots[slot].active or self.slots[slot].mux != mux:
                self.ctr[D_UNKNOWN_PEER] += 1
                continue
            nout = self._peer_packet(&self.slots[slot], slot, i, now, nout)
        self.nout = nout
        return n

    cdef int _peer_packet(self, Slot *s, int slot, int i, int64_t now, int nout) noexcept:
        """Received datagram ``i``, from a peer of ``slot``: check the permission and the
        rate, inspect it, frame it for the client (ChannelData when the peer has a channel,
        else a Data indication) into ``outs[nout]``, or into a TCP or TLS client's
        connection. Returns the new ``nout``."""
        cdef uint8_t *p = <uint8_t *>self.riovs[i].iov_base
        cdef unsigned int length = self.rmsgs[i].msg_len
        cdef unsigned int total
        cdef int b
        cdef Key key
        if self.rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC or length > 0xFFFF - 64:
            self.ctr[D_TRUNCATED] += 1
            return nout
        key_init(&key, KIND_PERMISSION, <uint32_t>slot, 0)
        key_addr(&key, &self.raddrs[i], False)
        if index_lookup(&self.index, &key) < 0:
            self.ctr[D_NO_PERMISSION] += 1
            if s.transport:
                self.tctr[s.transport][D_NO_PERMISSION] += 1
            self.slot_ctr[slot * NSLOT + S_DROPPED_PKTS] += 1
            return nout
        if self.inspecting:
            _inspect(self, slot, 1, p, length, now)
        if not allow(s, 1, length, now):
            self.ctr[D_OVER_BANDWIDTH] += 1
            if s.transport:
                self.tctr[s.transport][D_OVER_BANDWIDTH] += 1
            self.slot_ctr[slot * NSLOT + S_DROPPED_PKTS] += 1
            self.slot_ctr[slot * NSLOT + S_DROPPED_BYTES] += length
            return nout
        _slowed()
        key.kind = KIND_CHAN_BY_PEER
        key_addr(&key, &self.raddrs[i], True)
        b = index_lookup(&self.index, &key)
        if s.transport:  # a TCP or TLS client: into its connection's output buffer
            if _to_stream(self, s, slot, p, length, b, &self.raddrs[i]) == 0:
                self.nqueued += 1
            return nout
        if b >= 0:
            self.outs[nout].base = channel_header(p, self.bindings[b].chan, length)
            self.outs[nout].length = length + CHANNEL_HEADER
        else:
            self.txn_counter += 1
            self.outs[nout].base = data_indication(p, length, &self.raddrs[i],
                                                   self.txn_prefix, self.txn_counter, &total)
            self.outs[nout].length = total
            self.ctr[C_DATA_INDICATIONS] += 1
        self.outs[nout].fd = self.listener_fds[s.listener]
        self.outs[nout].name = &s.client
        self.outs[nout].namelen = s.client_len
        self.ctr[C_PEER_PKTS] += 1
        self.ctr[C_PEER_BYTES] += length
        self.slot_ctr[slot * NSLOT + S_PEER_PKTS] += 1
        self.slot_ctr[slot * NSLOT + S_PEER_BYTES] += length
        return nout + 1

    def add_mux(self, int fd):
        """Register a bound, non-blocking UDP socket that allocations opened with
        ``open_slot(..., mux=index)`` share as their relayed socket (--multiplex-peer);
        returns its index. Its datagrams reach slots through :meth:`mux_claim`."""
        cdef epoll_event ev
        cdef int err
        if self.nmux >= MAX_MUX:
            raise ValueError("too many shared peer-facing sockets")
        _enable_rxq_ovfl(fd)
        ev.events = EPOLLIN
        ev.data.u64 = MUX_MARK + <uint64_t>self.nmux
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            err = errno
            raise OSError(err, os.strerror(err))
        self.mux_fds[self.nmux] = fd
        self.mux_drops[self.nmux] = 0
        self.nmux += 1
        return self.nmux - 1

    def remove_mux(self, int mux):
        """Take shared socket ``mux`` out of the epoll set (before it is closed); the
        slots on it must have been closed."""
        cdef epoll_event ev
        if 0 <= mux < self.nmux and self.mux_fds[mux] >= 0:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.mux_fds[mux], &ev)
            self.mux_fds[mux] = -1

    def send_to_peer(self, int slot, const unsigned char[:] data, str peer_host, int peer_port):
        """Send one datagram from the slot's relayed socket (a Send indication's DATA).
        Returns False when the kernel refused it (counted as a failed send)."""
        cdef Slot *s = self._slot(slot)
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef ssize_t r
        cdef size_t n = data.shape[0]
        cdef const unsigned char *ptr = &data[0] if n > 0 else NULL
        cdef int64_t now = self._now()
        parse_addr(peer_host, peer_port, &sa, &salen)
        if self.inspecting:
            _inspect(self, slot, 0, ptr, n, now)
        if not allow(s, 0, n, now):
            self.ctr[D_OVER_BANDWIDTH] += 1
            self.slot_ctr[slot * NSLOT + S_DROPPED_PKTS] += 1
            return False
        r = sendto(s.relay_fd, ptr, n, MSG_DONTWAIT, <sockaddr *>&sa, salen)
        if r < 0:
            self.ctr[D_SEND_FAILED] += 1
            return False
        self.ctr[C_CLIENT_PKTS] += 1
        self.ctr[C_CLIENT_BYTES] += n
        if s.transport:
            self.tctr[s.transport][C_CLIENT_PKTS] += 1
            self.tctr[s.transport][C_CLIENT_BYTES] += n
        self.slot_ctr[slot * NSLOT + S_CLIENT_PKTS] += 1
        self.slot_ctr[slot * NSLOT + S_CLIENT_BYTES] += n
        return True

    def coalesce_wait(self, int us):
        """Sleep ``us`` microseconds without the GIL (--coalesce-us: the worker's sockets
        fill meanwhile and are read again after), counted in ``coalesce_waits``."""
        cdef timespec ts
        ts.tv_sec = us // 1000000
        ts.tv_nsec = (us % 1000000) * 1000
        self.ctr[C_COALESCE_WAITS] += 1
        with nogil:
            nanosleep(&ts, NULL)

    def coalesce_idle(self):
        """Count a --coalesce-us wait after which nothing had come (``coalesce_idle``)."""
        self.ctr[C_COALESCE_IDLE] += 1

    def count_drop(self, str reason, int n=1):
        """Count drops decided in Python (e.g. a Send indication to a denied peer)."""
        self.ctr[DROP_REASONS[reason]] += n

    # -- bulk reads ----------------------------------------------------------------------

    @property
    def counters(self):
        """Global counters as an int64 memoryview, in COUNTER_NAMES order (a live view)."""
        return memoryview(self._counters).cast("B")[:NCTR * 8].cast("q")

    @property
    def transport_counters(self):
        """The counters per client transport, int64 memoryview of shape (3, NCTR) in
        COUNTER_NAMES order, live: row 0 all clients (``counters``), row 1 what TCP
        clients' allocations account for, row 2 TLS clients'."""
        return memoryview(self._counters).cast("B")[:3 * NCTR * 8].cast("q", (3, NCTR))

    @property
    def stream_counters(self):
        """Connection counters, int64 memoryview of shape (2, len(STREAM_COUNTER_NAMES)):
        row 0 TCP, row 1 TLS (``open`` is a gauge), live."""
        return memoryview(self._counters).cast("B")[3 * NCTR * 8:NCOUNTERS * 8].cast(
            "q", (2, NSC))

    @property
    def slot_counters(self):
        """Per-slot counters, int64 memoryview of shape (max_slots, SLOT_COUNTERS), live."""
        return memoryview(self._slot_counters).cast("q", (self.max_slots, NSLOT))

    @property
    def flows(self):
        """The flow table, int64 memoryview of shape (capacity * FLOWS_PER_SLOT, len(FLOW_FIELDS)),
        live: rows [slot * FLOWS_PER_SLOT, (slot + 1) * FLOWS_PER_SLOT) are the slot's, the
        first half to the peer, the second to the client; a row is used when ``key`` != 0.
        A slot's rows are cleared when the slot is next opened, not when it closes."""
        return memoryview(self._flows)

    @property
    def latency(self):
        """Receive-to-send delay, int64 memoryview of LATENCY_CELLS (live): packets per log2
        bucket ([0, LATENCY_BUCKETS): bucket b holds delays in [2^(b-1), 2^b) us, bucket 0
        under 1 us, the last one everything above), then the sum of the delays in ns, the
        packets and the batches."""
        return memoryview(self._latency).cast("B")[:NLAT * 8].cast("q")

    @property
    def gso(self):
        """Whether same-destination sends are coalesced with UDP_SEGMENT (off after a route
        refused it with EIO)."""
        return bool(self.gso)

    @property
    def quality(self):
        """Whether RTP/RTCP inspection runs (settable)."""
        return bool(self.inspecting)

    @quality.setter
    def quality(self, bint on):
        self.inspecting = on

    @property
    def fake_clock_ns(self):
        """Tests only: when non-zero, the arrival time every batch gets instead of the clock."""
        return self.fake_now

    @fake_clock_ns.setter
    def fake_clock_ns(self, int64_t ns):
        self.fake_now = ns
