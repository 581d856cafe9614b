# cython: language_level=3, freethreading_compatible=True
"""The forwarding fast path's tables: allocation slots, channel bindings, and one
open-addressing hash index over them with four kinds of key (channel by client, permission
by peer address, channel by peer, and, for allocations sharing one peer-facing socket
(``--multiplex-peer``), the slot that owns a peer address and port; see ``Key`` in
_tables.pxd).

All writes come from Python, through the methods of :class:`Tables` (the TURN core decides,
the engine only forwards). The engine, a subclass, reads the tables per packet with the
inline look-ups of _tables.pxd, so nothing here runs per relayed packet. The index grows to
keep at most half its entries used (tombstones included) and is rebuilt in place when mostly
tombstones; the binding array doubles when it runs out. The hash is seeded per instance.
"""

from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memset

from ext._sys cimport (
    AF_INET, AF_INET6, htons, inet_ntop, inet_pton, monotonic_ns, ntohs, sockaddr_in,
    sockaddr_in6, sockaddr_storage, socklen_t,
)
from ext._wire cimport CHANNEL_MAX_RFC5766, CHANNEL_MIN

import os


# --- addresses -----------------------------------------------------------------------------

cdef int parse_addr(str host, int port, sockaddr_storage *out, socklen_t *outlen) except -1:
    """Fill a sockaddr from a textual address and port; ValueError when it is not one."""
    cdef bytes h = host.encode("ascii")
    cdef sockaddr_in *a4 = <sockaddr_in *>out
    cdef sockaddr_in6 *a6 = <sockaddr_in6 *>out
    if port < 0 or port > 65535:
        raise ValueError(f"bad port {port}")
    memset(out, 0, sizeof(sockaddr_storage))
    if ":" in host:
        a6.sin6_family = AF_INET6
        a6.sin6_port = htons(<uint16_t>port)
        if inet_pton(AF_INET6, h, &a6.sin6_addr) != 1:
            raise ValueError(f"not an IPv6 address: {host!r}")
        outlen[0] = sizeof(sockaddr_in6)
    else:
        a4.sin_family = AF_INET
        a4.sin_port = htons(<uint16_t>port)
        if inet_pton(AF_INET, h, &a4.sin_addr) != 1:
            raise ValueError(f"not an IPv4 address: {host!r}")
        outlen[0] = sizeof(sockaddr_in)
    return 0


cdef object addr_tuple(const sockaddr_storage *sa):
    """``(host, port)`` of an IPv4 or IPv6 socket address; None for another family."""
    cdef char text[64]
    cdef const sockaddr_in *a4
    cdef const sockaddr_in6 *a6
    if sa.ss_family == AF_INET:
        a4 = <const sockaddr_in *>sa
        inet_ntop(AF_INET, &a4.sin_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(a4.sin_port))
    if sa.ss_family == AF_INET6:
        a6 = <const sockaddr_in6 *>sa
        inet_ntop(AF_INET6, &a6.sin6_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(a6.sin6_port))
    return None


# --- the hash index (the look-up itself is inline, in _tables.pxd) -------------------------

cdef int _index_insert(Index *t, const Key *key, int32_t value) except -1:
    cdef uint64_t i
    cdef Entry *e
    cdef Entry *spot = NULL
    if (t.used + 1) * 2 > t.mask + 1:
        _index_grow(t)
    i = key_hash(key, t.seed) & t.mask
    while True:
        e = &t.entries[i]
        if e.state == 0:
            break
        if e.state == 1 and memcmp(&e.key, key, sizeof(Key)) == 0:
            e.value = value
            return 0
        if e.state == 2 and spot == NULL:
            spot = e
        i = (i + 1) & t.mask
    if spot == NULL:
        spot = e
        t.used += 1
    spot.key = key[0]
    spot.value = value
    spot.state = 1
    t.live += 1
    return 0


cdef int _index_remove(Index *t, const Key *key) noexcept nogil:
    """1 when ``key`` was there (its entry becomes a tombstone), else 0."""
    cdef uint64_t i = key_hash(key, t.seed) & t.mask
    cdef Entry *e
    while True:
        e = &t.entries[i]
        if e.state == 0:
            return 0
        if e.state == 1 and memcmp(&e.key, key, sizeof(Key)) == 0:
            e.state = 2
            t.live -= 1
            return 1
        i = (i + 1) & t.mask


cdef int _index_grow(Index *t) except -1:
    cdef uint64_t oldcap = t.mask + 1
    cdef uint64_t newcap = oldcap
    cdef Entry *old = t.entries
    cdef Entry *new
    cdef uint64_t i, j
    # double when mostly live, rebuild at the same size when mostly tombstones
    if t.live * 4 >= oldcap:
        newcap = oldcap * 2
    new = <Entry *>calloc(newcap, sizeof(Entry))
    if new == NULL:
        raise MemoryError()
    for i in range(oldcap):
        if old[i].state == 1:
            j = key_hash(&old[i].key, t.seed) & (newcap - 1)
            while new[j].state != 0:
                j = (j + 1) & (newcap - 1)
            new[j] = old[i]
    free(old)
    t.entries = new
    t.mask = newcap - 1
    t.used = t.live
    return 0


# --- the tables ----------------------------------------------------------------------------

cdef class Tables:
    """Allocation slots, channel bindings and permissions of one worker. Not thread-safe."""

    def __cinit__(self, int max_slots, *args, **kwargs):
        """``max_slots`` allocations at most; a subclass's other arguments are its own."""
        cdef int i
        if max_slots < 1:
            raise ValueError("bad engine size")
        self.max_slots = max_slots
        self.slots = <Slot *>calloc(max_slots, sizeof(Slot))
        self.free_slots = <int *>calloc(max_slots, sizeof(int))
        self.nbindings = max_slots + 16  # grows when allocations bind many channels
        self.bindings = <Binding *>calloc(self.nbindings, sizeof(Binding))
        self.free_bindings = <int *>calloc(self.nbindings, sizeof(int))
        self.index.mask = 1023
        self.index.entries = <Entry *>calloc(self.index.mask + 1, sizeof(Entry))
        if (self.slots == NULL or self.free_slots == NULL or self.bindings == NULL
                or self.free_bindings == NULL or self.index.entries == NULL):
            raise MemoryError()
        for i in range(max_slots):
            self.free_slots[i] = max_slots - 1 - i
        self.nfree_slots = max_slots
        for i in range(self.nbindings):
            self.bindings[i].slot = -1
            self.free_bindings[i] = self.nbindings - 1 - i
        self.nfree_bindings = self.nbindings
        self.index.seed = int.from_bytes(os.urandom(8), "little")

    def __dealloc__(self):
        free(self.slots)
        free(self.free_slots)
        free(self.bindings)
        free(self.free_bindings)
        free(self.index.entries)

    # -- slots: taken and given back by the engine, which owns the relayed sockets -------

    cdef Slot *_slot(self, int slot) except NULL:
        if slot < 0 or slot >= self.max_slots or not self.slots[slot].active:
            raise KeyError(slot)
        return &self.slots[slot]

    cdef int _take_slot(self, int relay_fd, int listener, str client_host,
                        int client_port) except -1:
        """Take a free slot for an allocation of that client; returns its index."""
        cdef int slot
        cdef Slot *s
        if self.nfree_slots == 0:
            raise OverflowError("no free allocation slot")
        slot = self.free_slots[self.nfree_slots - 1]
        s = &self.slots[slot]
        memset(s, 0, sizeof(Slot))
        parse_addr(client_host, client_port, &s.client, &s.client_len)
        self.nfree_slots -= 1
        s.active = 1
        s.conn = -1
        s.mux = -1
        s.relay_fd = relay_fd
        s.listener = listener
        s.family = 6 if s.client.ss_family == AF_INET6 else 4
        return slot

    cdef void _free_slot(self, int slot) noexcept:
        """Give a taken slot back. Its channels and permissions must have been removed."""
        self.slots[slot].active = 0
        self.slots[slot].relay_fd = -1
        self.free_slots[self.nfree_slots] = slot
        self.nfree_slots += 1

    def set_rate(self, int slot, int64_t bytes_per_second):
        cdef Slot *s = self._slot(slot)
        s.rate = bytes_per_second if bytes_per_second > 0 else 0
        s.tokens[0] = s.tokens[1] = <double>s.rate
        s.last_ns[0] = s.last_ns[1] = monotonic_ns()

    # -- permissions ---------------------------------------------------------------------

    def add_permission(self, int slot, str peer_ip):
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef Key key
        self._slot(slot)
        parse_addr(peer_ip, 0, &sa, &salen)
        key_init(&key, KIND_PERMISSION, <uint32_t>slot, 0)
        key_addr(&key, &sa, False)
        _index_insert(&self.index, &key, 1)

    def remove_permission(self, int slot, str peer_ip):
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef Key key
        parse_addr(peer_ip, 0, &sa, &salen)
        key_init(&key, KIND_PERMISSION, <uint32_t>slot, 0)
        key_addr(&key, &sa, False)
        return bool(_index_remove(&self.index, &key))

    # -- channels ------------------------------------------------------------------------

    def bind_channel(self, int slot, int chan, str peer_host, int peer_port):
        """Install channel ``chan`` <-> peer for the slot (both look-up directions)."""
        cdef Slot *s = self._slot(slot)
        cdef Key ck, pk
        cdef int b
        cdef Binding *bd
        if chan < CHANNEL_MIN or chan > CHANNEL_MAX_RFC5766:
            raise ValueError("channel number out of range")
        key_init(&ck, KIND_CHAN_BY_CLIENT, <uint32_t>s.listener, <uint16_t>chan)
        key_addr(&ck, &s.client, True)
        b = index_lookup(&self.index, &ck)
        if b < 0:
            if self.nfree_bindings == 0:
                self._grow_bindings()
            b = self.free_bindings[self.nfree_bindings - 1]
            self.nfree_bindings -= 1
        bd = &self.bindings[b]
        bd.slot = slot
        bd.chan = <uint16_t>chan
        parse_addr(peer_host, peer_port, &bd.peer, &bd.peer_len)
        key_init(&pk, KIND_CHAN_BY_PEER, <uint32_t>slot, 0)
        key_addr(&pk, &bd.peer, True)
        _index_insert(&self.index, &ck, b)
        _index_insert(&self.index, &pk, b)

    cdef int _grow_bindings(self) except -1:
        """Double the binding array. Safe between drains: only a drain keeps pointers."""
        cdef int i, old = self.nbindings, new = self.nbindings * 2
        cdef Binding *b = <Binding *>realloc(self.bindings, new * sizeof(Binding))
        if b == NULL:
            raise MemoryError()
        self.bindings = b
        cdef int *f = <int *>realloc(self.free_bindings, new * sizeof(int))
        if f == NULL:
            raise MemoryError()
        self.free_bindings = f
        for i in range(old, new):
            self.bindings[i].slot = -1
        for i in range(new - old):
            self.free_bindings[self.nfree_bindings + i] = new - 1 - i
        self.nfree_bindings += new - old
        self.nbindings = new
        return 0

    def unbind_channel(self, int slot, int chan, str peer_host, int peer_port):
        cdef Slot *s = self._slot(slot)
        cdef Key ck, pk
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef int b
        key_init(&ck, KIND_CHAN_BY_CLIENT, <uint32_t>s.listener, <uint16_t>chan)
        key_addr(&ck, &s.client, True)
        b = index_lookup(&self.index, &ck)
        parse_addr(peer_host, peer_port, &sa, &salen)
        key_init(&pk, KIND_CHAN_BY_PEER, <uint32_t>slot, 0)
        key_addr(&pk, &sa, True)
        _index_remove(&self.index, &ck)
        _index_remove(&self.index, &pk)
        if b >= 0:
            self.bindings[b].slot = -1
            self.free_bindings[self.nfree_bindings] = b
            self.nfree_bindings += 1
        return b >= 0

    # -- peers of allocations sharing one peer-facing socket (--multiplex-peer) ------------

    def mux_claim(self, int mux, int slot, str peer_host, int peer_port):
        """Make ``slot`` the owner of what the peer at ``peer_host:peer_port`` sends to shared
        socket ``mux``, unless another slot owns it. Returns the owner after the call: ``slot``
        when claimed (or already its own), else the other slot."""
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef Key key
        cdef int owner
        self._slot(slot)
        parse_addr(peer_host, peer_port, &sa, &salen)
        key_init(&key, KIND_MUX, <uint32_t>mux, 0)
        key_addr(&key, &sa, True)
        owner = index_lookup(&self.index, &key)
        if owner >= 0 and owner != slot and self.slots[owner].active:
            return owner
        _index_insert(&self.index, &key, slot)
        return slot

    def mux_release(self, int mux, int slot, str peer_host, int peer_port):
        """Forget the peer's owner on shared socket ``mux`` when it is ``slot``."""
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef Key key
        parse_addr(peer_host, peer_port, &sa, &salen)
        key_init(&key, KIND_MUX, <uint32_t>mux, 0)
        key_addr(&key, &sa, True)
        if index_lookup(&self.index, &key) != slot:
            return False
        return bool(_index_remove(&self.index, &key))

    def mux_owner(self, int mux, str peer_host, int peer_port):
        """The slot owning that peer on shared socket ``mux``, or -1."""
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef Key key
        parse_addr(peer_host, peer_port, &sa, &salen)
        key_init(&key, KIND_MUX, <uint32_t>mux, 0)
        key_addr(&key, &sa, True)
        return index_lookup(&self.index, &key)

    # -- sizes ---------------------------------------------------------------------------

    @property
    def capacity(self):
        return self.max_slots

    @property
    def active_slots(self):
        return self.max_slots - self.nfree_slots

    @property
    def table_entries(self):
        return self.index.live
