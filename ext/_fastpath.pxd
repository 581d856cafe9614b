# The forwarding fast path: tables and batched socket I/O for the relay node.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from posix.uio cimport iovec

from ext._sys cimport mmsghdr, sockaddr_storage, socklen_t

cdef enum:
    MAX_LISTENERS = 16


# Hash-table key: what a packet is looked up by. ``kind`` tells the three tables apart.
cdef struct Key:
    uint32_t owner      # listener index (channel by client) or slot (permission, channel by peer)
    uint16_t port       # network order; 0 for permissions
    uint16_t chan
    uint8_t kind
    uint8_t family
    uint8_t pad0
    uint8_t pad1
    uint8_t addr[16]

cdef struct Entry:
    Key key
    int32_t value
    int32_t state       # 0 empty, 1 used, 2 deleted

cdef struct Slot:
    int active
    int relay_fd
    int listener
    int family
    uint32_t rxq_drops    # the relayed socket's SO_RXQ_OVFL count last seen
    socklen_t client_len
    sockaddr_storage client
    int64_t rate          # bytes per second per direction, 0 = no cap
    double tokens[2]      # token buckets: [client->peer, peer->client]
    int64_t last_ns[2]

cdef struct Binding:
    int slot            # -1 when free
    uint16_t chan
    socklen_t peer_len
    sockaddr_storage peer

cdef struct Out:
    int fd
    int sent
    void *base
    size_t length
    void *name
    socklen_t namelen


cdef class Engine:
    cdef int max_slots
    cdef int batch
    cdef int bufsize
    cdef Slot *slots
    cdef int *free_slots
    cdef int nfree_slots
    cdef Binding *bindings
    cdef int nbindings
    cdef int *free_bindings
    cdef int nfree_bindings
    cdef Entry *table
    cdef uint64_t table_mask
    cdef uint64_t table_used       # used + deleted entries
    cdef uint64_t table_live
    cdef uint64_t seed
    cdef uint32_t txn_counter
    cdef uint8_t txn_prefix[8]
    # listeners
    cdef int epfd
    cdef int nlisteners
    cdef int listener_fds[MAX_LISTENERS]
    cdef uint32_t listener_drops[MAX_LISTENERS]  # SO_RXQ_OVFL count last seen per listener
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
    cdef int64_t *ctr
    # RTP/RTCP inspection (ext/_fastpath.pyx, "quality"): FLOWS_PER_SLOT rows of NFLOW int64
    # per slot, half per direction; a latency histogram of receive-to-send per batch
    cdef bint inspecting
    cdef int64_t fake_now
    cdef int64_t batch_t0          # receive time of the oldest packet in outs[0:nout]
    cdef object _flows             # cython array owning the calloc'd table
    cdef int64_t *flows
    cdef object _latency           # bytearray, or the caller's shared buffer
    cdef int64_t *lat

    cdef int _lookup(self, Key *key) noexcept nogil
    cdef int _insert(self, Key *key, int32_t value) except -1
    cdef int _remove(self, Key *key) noexcept nogil
    cdef int _grow(self) except -1
    cdef int _grow_bindings(self) except -1
    cdef bint _allow(self, Slot *s, int direction, size_t nbytes, int64_t now) noexcept nogil
    cdef int _flush(self, int n) except -1
    cdef int _send_apart(self, int fd, mmsghdr *m) noexcept nogil
    cdef void _prepare_recv(self, int start, int n) noexcept nogil
    cdef Slot *_slot(self, int slot) except NULL
    cdef int _recv_relay(self, Slot *s, int slot, int start) except? -1
    cdef int64_t _now(self) noexcept nogil
    cdef uint32_t _rxq(self, int start, int n) noexcept nogil
    cdef void _latency_note(self, int64_t t0, int packets) noexcept nogil
