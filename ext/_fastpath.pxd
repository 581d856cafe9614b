# The forwarding fast path: the engine's batch buffers, counters and batched socket I/O. Its
# tables (slots, bindings, the hash index) are those of the Tables base class, _tables.pxd.

from libc.stdint cimport int64_t, uint8_t, uint32_t
from posix.uio cimport iovec

from ext._stream cimport NTRANSPORTS, Conn, Streams
from ext._sys cimport mmsghdr, sockaddr_storage, socklen_t
from ext._tables cimport Slot, Tables

cdef enum:
    MAX_LISTENERS = 16
    MAX_MUX = 2                    # shared peer-facing sockets (--multiplex-peer): one a family

# one datagram to send: where from, where to, which bytes
cdef struct Out:
    int fd
    int sent
    void *base
    size_t length
    void *name
    socklen_t namelen


cdef class Engine(Tables):
    cdef int batch
    cdef int bufsize
    cdef uint32_t txn_counter
    cdef uint8_t txn_prefix[8]
    # listeners
    cdef int epfd
    cdef bint epoll_open
    cdef int nlisteners
    cdef int listener_fds[MAX_LISTENERS]
    cdef int listener_kind[MAX_LISTENERS]  # TR_UDP, or TR_TCP / TR_TLS: accepts connections
    cdef uint32_t listener_drops[MAX_LISTENERS]  # SO_RXQ_OVFL count last seen per listener
    # shared peer-facing sockets (--multiplex-peer), in the epoll set with MUX_MARK + index
    cdef int nmux
    cdef int mux_fds[MAX_MUX]
    cdef uint32_t mux_drops[MAX_MUX]
    # batch buffers
    cdef uint8_t *bufs
    cdef mmsghdr *rmsgs
    cdef iovec *riovs
    cdef sockaddr_storage *raddrs
    cdef mmsghdr *smsgs
    cdef iovec *siovs
    cdef Out *outs
    cdef int *spkts                # datagrams in each smsgs entry (> 1: a GSO message)
    cdef uint8_t *gcbufs           # one UDP_SEGMENT control message per smsgs entry
    cdef bint gso                  # coalesce same-destination runs with UDP_SEGMENT
    cdef uint8_t *cbufs            # one control-message buffer per receive vector
    cdef int nout                  # outs filled so far in the current relayed drain
    # counters: bytearrays exposed as memoryviews, written through the pointers
    cdef bytearray _slot_counters
    cdef object _counters          # bytearray, or the caller's shared buffer
    cdef int64_t *slot_ctr
    cdef int64_t *ctr              # all transports
    cdef int64_t *tctr[NTRANSPORTS]  # [0] = ctr, then the TCP and TLS clients' share of it
    # TCP and TLS clients (ext/_stream.pyx); None until use_streams()
    cdef readonly Streams streams
    cdef int64_t stream_now        # arrival time of what one drain_streams() reads
    cdef int nqueued               # peers' packets queued to connections in this drain
    # RTP/RTCP inspection (ext/_rtp.pyx): FLOWS_PER_SLOT rows of NFLOW int64 per slot, half
    # per direction; a latency histogram of receive-to-send per batch
    cdef bint inspecting
    cdef int64_t fake_now
    cdef int64_t batch_t0          # receive time of the oldest packet in outs[0:nout]
    cdef int64_t batch_now         # receive time of the last recvmmsg of peers' datagrams
    cdef object _flows             # cython array owning the calloc'd table
    cdef int64_t *flows
    cdef object _latency           # bytearray, or the caller's shared buffer
    cdef int64_t *lat

    cdef void _arm_recv(self) noexcept nogil
    cdef void _received(self, int start, int n, uint32_t *last_drops) noexcept nogil
    cdef int _recv_relay(self, Slot *s, int slot, int start) except? -1
    cdef int _recv_mux(self, int mux, int start) except? -1
    cdef int _recv_peers(self, int fd, int start, uint32_t *last_drops) except? -1
    cdef int _peer_packet(self, Slot *s, int slot, int i, int64_t now, int nout) noexcept
    cdef int64_t _now(self) noexcept nogil
    cdef void _latency_note(self, int64_t t0, int packets) noexcept nogil
