# The fast path's tables: allocation slots, channel bindings and the open-addressing hash index
# that finds them from a packet's addresses. Python writes them through Tables (the TURN core
# decides); the engine reads them per packet with the inline helpers below.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from ext._sys cimport AF_INET, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t

# what a key looks up: the three tables of the index
cdef enum:
    KIND_CHAN_BY_CLIENT = 1    # (listener, client address and port, channel) -> binding
    KIND_PERMISSION = 2        # (slot, peer address) -> 1
    KIND_CHAN_BY_PEER = 3      # (slot, peer address and port) -> binding
    KIND_MUX = 4               # (shared socket, peer address and port) -> slot (--multiplex-peer)


# Hash-table key: what a packet is looked up by. ``kind`` tells the four tables apart.
# ``owner``: the listener index (channel by client), the slot (permission, channel by peer)
# or the shared socket's index (multiplexed peer).
cdef struct Key:
    uint32_t owner
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

cdef struct Index:
    Entry *entries
    uint64_t mask       # capacity - 1, capacity a power of two
    uint64_t used       # used + deleted entries
    uint64_t live
    uint64_t seed

cdef struct Slot:
    int active
    int relay_fd
    int mux               # -1: relay_fd is the slot's own; else the shared socket's index
    int listener
    int family
    int transport         # the client's: 0 UDP, else a TCP or TLS connection (ext/_stream)
    int64_t conn          # that connection's id (-1: none, or it closed)
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


cdef inline uint64_t _mix(uint64_t h, uint32_t w) noexcept nogil:
    h ^= w
    h *= <uint64_t>0x9E3779B97F4A7C15
    h ^= h >> 29
    return h


cdef inline uint64_t key_hash(const Key *k, uint64_t seed) noexcept nogil:
    cdef const uint32_t *w = <const uint32_t *>k
    cdef uint64_t h = seed
    cdef size_t i
    for i in range(sizeof(Key) // 4):
        h = _mix(h, w[i])
    return h ^ (h >> 32)


cdef inline void key_init(Key *k, uint8_t kind, uint32_t owner, uint16_t chan) noexcept nogil:
    memset(k, 0, sizeof(Key))
    k.kind = kind
    k.owner = owner
    k.chan = chan


cdef inline void key_addr(Key *k, const sockaddr_storage *sa, bint with_port) noexcept nogil:
    """Put the address (and, when asked, the port) of ``sa`` into the key."""
    cdef const sockaddr_in *a4
    cdef const sockaddr_in6 *a6
    if sa.ss_family == AF_INET:
        a4 = <const sockaddr_in *>sa
        k.family = 4
        memcpy(k.addr, &a4.sin_addr, 4)
        if with_port:
            k.port = a4.sin_port
    else:
        a6 = <const sockaddr_in6 *>sa
        k.family = 6
        memcpy(k.addr, &a6.sin6_addr, 16)
        if with_port:
            k.port = a6.sin6_port


cdef inline int index_lookup(const Index *t, const Key *key) noexcept nogil:
    """The value stored under ``key``, or -1."""
    cdef uint64_t i = key_hash(key, t.seed) & t.mask
    cdef const Entry *e
    while True:
        e = &t.entries[i]
        if e.state == 0:
            return -1
        if e.state == 1 and memcmp(&e.key, key, sizeof(Key)) == 0:
            return e.value
        i = (i + 1) & t.mask


cdef inline bint allow(Slot *s, int direction, size_t nbytes, int64_t now) noexcept nogil:
    """The slot's token bucket for ``direction``: whether ``nbytes`` may pass at ``now``."""
    cdef double burst
    if s.rate <= 0:
        return True
    burst = <double>s.rate if s.rate > 65536 else 65536.0
    s.tokens[direction] += <double>(now - s.last_ns[direction]) * <double>s.rate / 1e9
    s.last_ns[direction] = now
    if s.tokens[direction] > burst:
        s.tokens[direction] = burst
    if s.tokens[direction] < <double>nbytes:
        return False
    s.tokens[direction] -= <double>nbytes
    return True


# text <-> socket addresses, for the Python-facing methods (not per packet)
cdef int parse_addr(str host, int port, sockaddr_storage *out, socklen_t *outlen) except -1
cdef object addr_tuple(const sockaddr_storage *sa)


cdef class Tables:
    cdef int max_slots
    cdef Slot *slots
    cdef int *free_slots
    cdef int nfree_slots
    cdef Binding *bindings
    cdef int nbindings
    cdef int *free_bindings
    cdef int nfree_bindings
    cdef Index index

    cdef Slot *_slot(self, int slot) except NULL
    cdef int _take_slot(self, int relay_fd, int listener, str client_host,
                        int client_port) except -1
    cdef void _free_slot(self, int slot) noexcept
    cdef int _grow_bindings(self) except -1
