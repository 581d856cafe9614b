# TURN over TCP and TLS for the fast path (RFC 8656 section 12.5 framing): the connections of
# one worker, their limits and timers, the native TLS record layer, and the splitting of a byte
# stream into STUN messages and padded ChannelData. The engine (_fastpath.pyx) owns a Streams
# and forwards what it splits out; see _stream.pyx.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from ext._ssl cimport SSL, SSL_CTX
from ext._sys cimport sockaddr_storage, socklen_t
from ext._tls cimport Records
from ext._wire cimport CHANNEL_HEADER, STUN_COOKIE, STUN_HEADER, load16, load32

# client transports (the engine's counter blocks and the metrics' ``transport`` label)
cdef enum:
    TR_UDP = 0
    TR_TCP = 1
    TR_TLS = 2
    NTRANSPORTS = 3

# a connection's state
cdef enum:
    CS_FREE = 0
    CS_HANDSHAKE = 1       # TLS: accepted, handshake under way
    CS_OPEN = 2            # STUN and ChannelData flow

# what frame() found at the start of a stream
cdef enum:
    FR_NEED = 0            # not a whole message yet
    FR_STUN = 1
    FR_CHANNEL = 2
    FR_GARBAGE = -1        # neither STUN nor ChannelData: the stream cannot be resynchronised
    FR_OVERSIZE = -2       # a length beyond the configured maximum

# why a connection closed (CLOSE_REASONS in _stream.pyx, the same order)
cdef enum:
    CL_CLIENT = 0          # the client closed or reset it
    CL_SERVER = 1          # the relay closed it (its allocation ended, the worker stopped)
    CL_IDLE = 2            # no allocation and nothing received for the idle timeout
    CL_HANDSHAKE_TIMEOUT = 3
    CL_HANDSHAKE_FAILED = 4
    CL_PARTIAL_TIMEOUT = 5  # one message took longer than the partial timeout (slow-loris)
    CL_OVERSIZE = 6
    CL_MALFORMED = 7       # bytes that are neither STUN nor ChannelData
    CL_ERROR = 8           # a socket or TLS error
    NCLOSE = 9

# connection counters, one block of NSC int64 per stream transport (STREAM_COUNTER_NAMES)
cdef enum:
    SC_ACCEPTED = 0
    SC_OPEN = 1            # a gauge: connections open now
    SC_REFUSED_NODE = 2    # over the worker's share of --stream-max-connections
    SC_REFUSED_SOURCE = 3  # over --stream-max-per-source for the client's /24 or /48
    SC_REFUSED_FDS = 4     # the process ran out of file descriptors
    SC_HANDSHAKES = 5      # TLS handshakes completed
    SC_CLOSED = 6          # + CL_*: connections closed, by reason
    NSC = 15

# events handed to Python (EVENT_* in _stream.pyx)
cdef enum:
    EV_STUN = 0
    EV_OPEN = 1
    EV_CLOSED = 2

cdef enum:
    MAX_STREAM_LISTENERS = 16
    CONTROL_RESERVE = 8192  # bytes a STUN answer may use beyond the media limit


cdef struct Conn:
    int fd
    int state
    int transport
    int listener           # the engine's listener index (shared with the UDP listeners)
    int slots              # allocation slots attached (the idle timeout spares those)
    int dirty              # queued output waits for this drain's flush
    uint32_t gen           # bumped when the entry is freed: stale ids do not match
    uint32_t events        # epoll interest now
    SSL *ssl
    uint64_t source        # client /24 or /48 key (per-source limit)
    int64_t opened_ns
    int64_t last_rx_ns
    int64_t partial_ns     # when the first byte of the incomplete message arrived
    uint8_t *inbuf         # that incomplete message (allocated once, on first need)
    uint32_t inlen
    uint8_t *outbuf        # messages towards the client: [outhead, outlen)
    uint32_t outhead
    uint32_t outlen
    uint32_t outcap
    Records rec            # TLS: the records made of them, to send (ext/_tls)
    socklen_t peer_len
    sockaddr_storage peer

cdef struct SourceEntry:
    uint64_t key           # 0: empty
    int count


# A complete ChannelData frame of connection ``c`` (index ``ci``) at ``p`` (header included,
# ``n`` bytes with padding) for the engine to forward; returns 0.
ctypedef int (*channel_fn)(void *ctx, Conn *c, int ci, uint8_t *p, size_t n) noexcept
# The engine must send what it holds pointers to (the read buffer is about to be reused).
ctypedef int (*flush_fn)(void *ctx) noexcept


cdef inline int frame(const uint8_t *p, size_t n, size_t max_message,
                      size_t *length) noexcept nogil:
    """What starts at ``p[0:n]``: FR_STUN or FR_CHANNEL with its whole length (ChannelData
    padded to a multiple of 4, as RFC 8656 12.5 requires on streams) in ``length`` when all of
    it is there, FR_NEED when more must come, FR_GARBAGE or FR_OVERSIZE when the stream is
    lost. STUN lengths are multiples of 4 and a STUN header carries the magic cookie."""
    cdef size_t total
    cdef uint8_t first
    if n < 1:
        return FR_NEED
    first = p[0]
    if first >= 4 and (first < 0x40 or first > 0x7F):
        return FR_GARBAGE
    if n < 4:
        return FR_NEED
    if first < 4:
        if load16(p + 2) & 3:
            return FR_GARBAGE
        if n < 8:
            return FR_NEED  # the cookie tells garbage from a long message, whatever the cut
        if load32(p + 4) != STUN_COOKIE:
            return FR_GARBAGE
        total = STUN_HEADER + load16(p + 2)
    else:
        total = CHANNEL_HEADER + ((<size_t>load16(p + 2) + 3) & ~(<size_t>3))
    if total > max_message:
        return FR_OVERSIZE
    if n < total:
        return FR_NEED
    length[0] = total
    return FR_STUN if first < 4 else FR_CHANNEL


cdef class Streams:
    cdef Conn *conns
    cdef int capacity
    cdef int *free
    cdef int nfree
    cdef int high                  # conns[0:high] have been used
    cdef int nopen
    cdef int max_conns
    cdef int per_source
    cdef int64_t handshake_ns
    cdef int64_t idle_ns
    cdef int64_t partial_ns
    cdef size_t max_message
    cdef size_t send_buffer
    cdef int epfd
    cdef int wakefd
    cdef int reservefd
    cdef bint wake_armed
    cdef int nlisteners
    cdef int lfd[MAX_STREAM_LISTENERS]
    cdef int lindex[MAX_STREAM_LISTENERS]
    cdef int ltransport[MAX_STREAM_LISTENERS]
    cdef SSL_CTX *ctx
    cdef SourceEntry *sources
    cdef uint64_t smask
    cdef uint64_t sseed
    cdef int *dirty
    cdef int ndirty
    cdef uint8_t *scratch          # reads land here; ChannelData is forwarded from it
    cdef size_t scap
    cdef size_t scursor
    cdef int64_t *sctr             # NSC per stream transport (TCP block, then TLS)
    cdef int64_t *blocks[NTRANSPORTS]  # the engine's counter blocks: all, TCP, TLS
    cdef int i_stun                # in them: STUN messages handed up, messages cut off
    cdef int i_truncated
    cdef object _owner             # what keeps the counters' memory alive (the engine)
    cdef int64_t fake_now
    cdef list events

    cdef int64_t _now(self) noexcept nogil
    cdef Conn *get(self, int64_t cid) noexcept nogil
    cdef int64_t cid(self, int ci) noexcept nogil
    cdef int add_listener(self, int fd, int index, int transport) except -1
    cdef int drain(self, void *ctx, channel_fn on_channel, flush_fn on_flush) except -1
    cdef int queue(self, Conn *c, int ci, const uint8_t *p, size_t n, bint media) noexcept
    cdef int flush_dirty(self) except -1
    cdef int attach(self, int64_t cid, int delta) except -1
    cdef int _accept(self, int li) except -1
    cdef int _handshake(self, Conn *c, int ci) except -1
    cdef int _read(self, Conn *c, int ci, void *ctx, channel_fn on_channel,
                   flush_fn on_flush) except -1
    cdef int _split(self, Conn *c, int ci, uint8_t *buf, size_t total, void *ctx,
                    channel_fn on_channel) except -1
    cdef int _flush(self, Conn *c, int ci) except -1
    cdef int _send_records(self, Conn *c, int ci) except -1
    cdef int _want(self, Conn *c, int ci, uint32_t events) noexcept
    cdef int _close(self, Conn *c, int ci, int reason) except -1
    cdef int _wake(self) noexcept
    cdef int _source_add(self, uint64_t key, int limit) noexcept
    cdef void _source_remove(self, uint64_t key) noexcept


# The splitting of one connection's stream without a socket, for the tests (_stream.pyx).
cdef class Framer:
    cdef Streams streams
    cdef list out
    cdef object why_lost

    cdef _take_stun(self)
