# cython: language_level=3, freethreading_compatible=True
"""TURN over TCP and TLS: one worker's client connections, in the fast path.

:class:`Streams` accepts connections on the worker's TCP and TLS listening sockets, keeps them
in an epoll set of its own (whose descriptor the event loop watches), does TLS natively
(libssl: its own ``SSL_CTX``, non-blocking handshakes driven by that epoll set, ``SSL_read``
and ``SSL_write`` on the connection) and splits each connection's byte stream into STUN
messages and ChannelData as RFC 8656 12.5 frames them: STUN by its length field, ChannelData
by its length rounded up to a multiple of 4 (on a stream the padding is mandatory). STUN
messages go up to Python as events, with the connections' opening and closing; ChannelData is
handed to the engine (ext/_fastpath.pyx) through a callback, which forwards it to the UDP peers
in its batched ``sendmmsg`` straight from the buffer the connection was read into.

The other direction: the engine frames what peers send (ChannelData, padded, or a Data
indication) into the connection's output buffer with :meth:`Streams.queue`, and every
connection written to in a batch is flushed once at its end: one ``send`` for all its
frames. Over TLS each message becomes a record of its own (``SSL_write`` per message into a
BIO of ours that appends the records to the connection's record buffer; some clients,
coturn's turnutils_uclient among them, take each record for one message, as coturn writes
them) and the records go out together in one ``send``. The output is bounded: media that does
not fit is refused and the engine counts it dropped (``backpressure``); STUN answers may use
a little more (CONTROL_RESERVE) so a slow reader still gets them; a connection whose records
wait for the socket gets no more encrypted until they have left.

Limits that keep a stream server alive, each counted: connections per worker and per client
/24 or /48 (closed with a reset at once when over), a file-descriptor reserve so that running
out of descriptors cannot spin the loop, TLS handshake timeout, idle timeout (connections that
hold no allocation), the longest message and how long one message may take to arrive
(slow-loris), all checked by :meth:`Streams.sweep` once a second. Memory per connection is its
entry here, the incomplete message it may have sent (allocated once, at most
``max_message``), and its output buffer (grown by doubling, at most ``send_buffer`` +
CONTROL_RESERVE); nothing is allocated per message.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove

from ext._ssl cimport (
    BIO, BIO_NOCLOSE, BIO_free, BIO_new, BIO_new_socket, BIO_set_data, ERR_clear_error, SSL_CTX,
    SSL_CTX_free, SSL_ERROR_SYSCALL, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE,
    SSL_ERROR_ZERO_RETURN, SSL_do_handshake, SSL_free, SSL_get0_alpn_selected,
    SSL_get_cipher_name, SSL_get_error, SSL_get_version, SSL_has_pending, SSL_new, SSL_read,
    SSL_set_accept_state, SSL_set_bio, SSL_shutdown, SSL_write,
)
from ext._sys cimport (
    AF_INET, EAGAIN, ECONNABORTED, ECONNRESET, EFD_CLOEXEC, EFD_NONBLOCK, EINTR,
    EMFILE, ENFILE, ENOBUFS, ENOMEM, EPIPE, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
    EPOLL_CTL_MOD, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPROTO, EWOULDBLOCK, IPPROTO_TCP,
    MSG_DONTWAIT, MSG_NOSIGNAL, O_CLOEXEC, O_RDONLY, SO_LINGER, SOCK_CLOEXEC, SOCK_NONBLOCK,
    SOL_SOCKET, TCP_NODELAY, accept4, close, epoll_create1, epoll_ctl, epoll_event, epoll_wait,
    errno, eventfd, linger, monotonic_ns, open, read, recv, send, setsockopt, sockaddr,
    sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t, write,
)
from ext._tables cimport addr_tuple
from ext._tls cimport records_method, server_context
from ext._wire cimport CHANNEL_HEADER, STUN_HEADER, load16

import os

from ext import _tls

# --- constants ----------------------------------------------------------------------------

cdef enum:
    MAX_EVENTS = 64
    ACCEPTS_PER_WAKE = 64
    READ_MIN = 16384        # room a read needs (a whole TLS record)
    READ_BUDGET = 262144    # bytes one connection may read per wake-up (then the next)
    SCRATCH = 524288
    RECORD_BATCH = 65536    # records made per turn before they must have left
    RECORD_ROOM = 262144    # a connection's record buffer at most (a batch, one message more)
    MAX_CONNECTIONS = 1 << 24

cdef uint64_t TAG_LISTENER = (<uint64_t>1) << 62
cdef uint64_t TAG_WAKE = (<uint64_t>2) << 62
cdef uint64_t TAG_MASK = (<uint64_t>3) << 62

TRANSPORTS = ("udp", "tcp", "tls")
CLOSE_REASONS = (
    "client", "server", "idle", "handshake_timeout", "handshake_failed", "partial_timeout",
    "oversize", "malformed", "error",
)
STREAM_COUNTER_NAMES = (
    "accepted", "open", "refused_node", "refused_source", "refused_descriptors", "handshakes",
    *("closed_" + r for r in CLOSE_REASONS),
)
STREAM_COUNTERS = NSC
EVENT_STUN = EV_STUN
EVENT_OPEN = EV_OPEN
EVENT_CLOSED = EV_CLOSED
TCP = TR_TCP
TLS = TR_TLS
OPENSSL_VERSION = _tls.OPENSSL_VERSION


# --- helpers -------------------------------------------------------------------------------

cdef inline bint _again(int err) noexcept nogil:
    return err == EAGAIN or err == EWOULDBLOCK


cdef inline size_t _message_length(const uint8_t *p, size_t n) noexcept nogil:
    """The length of the whole message queued at ``p`` (at most ``n``)."""
    cdef size_t total
    if n < 4:
        return n
    if p[0] < 4:
        total = STUN_HEADER + load16(p + 2)
    else:
        total = CHANNEL_HEADER + ((<size_t>load16(p + 2) + 3) & ~(<size_t>3))
    return total if total <= n else n


cdef inline uint64_t _source_key(const sockaddr_storage *sa) noexcept nogil:
    """The client's /24 (IPv4, also when mapped into IPv6) or /48 (IPv6) as a non-zero key."""
    cdef const uint8_t *a
    if sa.ss_family == AF_INET:
        a = <const uint8_t *>&(<const sockaddr_in *>sa).sin_addr
        return ((<uint64_t>4) << 56) | (<uint64_t>a[0] << 16) | (<uint64_t>a[1] << 8) | a[2]
    a = <const uint8_t *>&(<const sockaddr_in6 *>sa).sin6_addr
    if (a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9]) == 0 \
            and a[10] == 0xFF and a[11] == 0xFF:
        return ((<uint64_t>4) << 56) | (<uint64_t>a[12] << 16) | (<uint64_t>a[13] << 8) | a[14]
    return (((<uint64_t>6) << 56) | (<uint64_t>a[0] << 40) | (<uint64_t>a[1] << 32)
            | (<uint64_t>a[2] << 24) | (<uint64_t>a[3] << 16) | (<uint64_t>a[4] << 8) | a[5])


cdef inline uint64_t _hash(uint64_t key, uint64_t seed) noexcept nogil:
    key ^= seed
    key *= <uint64_t>0x9E3779B97F4A7C15
    return key ^ (key >> 31)


cdef void _reset_close(int fd) noexcept nogil:
    """Close with a reset (no TIME_WAIT left behind): for refused and abusive connections."""
    cdef linger lg
    lg.l_onoff = 1
    lg.l_linger = 0
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg))
    close(fd)


# --- the connections ----------------------------------------------------------------------

cdef class Streams:
    """The TCP and TLS client connections of one worker. Not thread-safe: one event loop.

    ``max_connections``: connections at once (this worker's share); ``per_source``: of them,
    from one client /24 or /48; the timeouts in seconds; ``max_message``: the longest STUN or
    ChannelData message (bytes, padding included); ``send_buffer``: bytes of media queued
    towards one client at most."""

    def __cinit__(self, int max_connections, int per_source=200,
                  double handshake_timeout=10.0, double idle_timeout=60.0,
                  double partial_timeout=10.0, int max_message=4096, int send_buffer=65536):
        cdef int i
        cdef uint64_t cap = 16
        cdef epoll_event ev
        self.epfd = self.wakefd = self.reservefd = -1
        if max_connections < 1 or max_connections >= MAX_CONNECTIONS:
            raise ValueError("max_connections out of range")
        if per_source < 1 or max_message < 64 or max_message > 65540 or send_buffer < 4096:
            raise ValueError("bad stream limits")
        if handshake_timeout <= 0 or idle_timeout <= 0 or partial_timeout <= 0:
            raise ValueError("stream timeouts must be positive")
        self.capacity = max_connections
        self.max_conns = max_connections
        self.per_source = per_source
        self.handshake_ns = <int64_t>(handshake_timeout * 1e9)
        self.idle_ns = <int64_t>(idle_timeout * 1e9)
        self.partial_ns = <int64_t>(partial_timeout * 1e9)
        self.max_message = max_message
        self.send_buffer = send_buffer
        self.conns = <Conn *>calloc(self.capacity, sizeof(Conn))
        self.free = <int *>calloc(self.capacity, sizeof(int))
        self.dirty = <int *>calloc(self.capacity, sizeof(int))
        while cap < <uint64_t>self.capacity * 2:
            cap *= 2
        self.sources = <SourceEntry *>calloc(cap, sizeof(SourceEntry))
        self.smask = cap - 1
        self.scap = SCRATCH + 2 * <size_t>max_message
        self.scratch = <uint8_t *>malloc(self.scap)
        if (self.conns == NULL or self.free == NULL or self.dirty == NULL
                or self.sources == NULL or self.scratch == NULL):
            raise MemoryError()
        for i in range(self.capacity):
            self.free[i] = self.capacity - 1 - i
            self.conns[i].fd = -1
        self.nfree = self.capacity
        self.sseed = int.from_bytes(os.urandom(8), "little")
        self.events = []
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, os.strerror(errno))
        self.wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wakefd < 0:
            raise OSError(errno, os.strerror(errno))
        ev.events = EPOLLIN
        ev.data.u64 = TAG_WAKE
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.wakefd, &ev) < 0:
            raise OSError(errno, os.strerror(errno))
        self.reservefd = open(b"/dev/null", O_RDONLY | O_CLOEXEC)
        # counters of its own until an engine hands it the shared ones (Engine.use_streams)
        self._owner = bytearray(8 * (NSC * 2 + 2))
        self.sctr = <int64_t *><char *>self._owner
        for i in range(NTRANSPORTS):
            self.blocks[i] = self.sctr + NSC * 2  # a scratch cell pair
        self.i_stun = 0
        self.i_truncated = 1

    def __dealloc__(self):
        cdef int i
        if self.conns != NULL:
            for i in range(self.high):
                if self.conns[i].state != CS_FREE:
                    if self.conns[i].ssl != NULL:
                        SSL_free(self.conns[i].ssl)
                    close(self.conns[i].fd)
                free(self.conns[i].inbuf)
                free(self.conns[i].outbuf)
                free(self.conns[i].rec.buf)
        if self.epfd >= 0:
            close(self.epfd)
        if self.wakefd >= 0:
            close(self.wakefd)
        if self.reservefd >= 0:
            close(self.reservefd)
        if self.ctx != NULL:
            SSL_CTX_free(self.ctx)
        free(self.conns)
        free(self.free)
        free(self.dirty)
        free(self.sources)
        free(self.scratch)

    # -- ids, clock ----------------------------------------------------------------------

    cdef int64_t _now(self) noexcept nogil:
        if self.fake_now:
            return self.fake_now
        return monotonic_ns()

    cdef int64_t cid(self, int ci) noexcept nogil:
        """A connection's id: its index and the entry's generation, so a stale id from an
        event Python has not yet seen never names the connection that reuses the entry."""
        return (<int64_t>self.conns[ci].gen << 24) | ci

    cdef Conn *get(self, int64_t cid) noexcept nogil:
        cdef int64_t ci = cid & 0xFFFFFF
        cdef Conn *c
        if cid < 0 or ci >= self.capacity:
            return NULL
        c = &self.conns[ci]
        if c.state == CS_FREE or c.gen != <uint32_t>(cid >> 24):
            return NULL
        return c

    # -- listeners and the epoll set -----------------------------------------------------

    cdef int add_listener(self, int fd, int index, int transport) except -1:
        cdef epoll_event ev
        if self.nlisteners >= MAX_STREAM_LISTENERS:
            raise ValueError("too many stream listeners")
        if transport != TR_TCP and transport != TR_TLS:
            raise ValueError("a stream listener is TCP or TLS")
        if transport == TR_TLS and self.ctx == NULL:
            raise ValueError("a TLS listener needs a certificate first (load_tls)")
        ev.events = EPOLLIN
        ev.data.u64 = TAG_LISTENER | <uint64_t>self.nlisteners
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            raise OSError(errno, os.strerror(errno))
        self.lfd[self.nlisteners] = fd
        self.lindex[self.nlisteners] = index
        self.ltransport[self.nlisteners] = transport
        self.nlisteners += 1
        return 0

    cdef int _want(self, Conn *c, int ci, uint32_t events) noexcept:
        cdef epoll_event ev
        if c.events == events:
            return 0
        ev.events = events
        ev.data.u64 = <uint64_t>self.cid(ci)
        if epoll_ctl(self.epfd, EPOLL_CTL_MOD, c.fd, &ev) < 0:
            return -1
        c.events = events
        return 0

    cdef int _wake(self) noexcept:
        """Make the event loop call the engine's drain (events wait for Python)."""
        cdef uint64_t one = 1
        if not self.wake_armed:
            self.wake_armed = True
            write(self.wakefd, &one, 8)
        return 0

    # -- the per-source table: open addressing, linear probing, backward-shift delete ----

    cdef int _source_add(self, uint64_t key, int limit) noexcept:
        cdef uint64_t i = _hash(key, self.sseed) & self.smask
        while self.sources[i].key != 0:
            if self.sources[i].key == key:
                if self.sources[i].count >= limit:
                    return -1
                self.sources[i].count += 1
                return 0
            i = (i + 1) & self.smask
        self.sources[i].key = key
        self.sources[i].count = 1
        return 0

    cdef void _source_remove(self, uint64_t key) noexcept:
        cdef uint64_t i = _hash(key, self.sseed) & self.smask
        cdef uint64_t j, k
        if key == 0:
            return
        while self.sources[i].key != key:
            if self.sources[i].key == 0:
                return
            i = (i + 1) & self.smask
        self.sources[i].count -= 1
        if self.sources[i].count > 0:
            return
        self.sources[i].key = 0
        j = i
        while True:
            j = (j + 1) & self.smask
            if self.sources[j].key == 0:
                return
            k = _hash(self.sources[j].key, self.sseed) & self.smask
            # move j back into the hole at i unless its home k lies cyclically in (i, j]
            if (i <= j and (k <= i or k > j)) or (i > j and k <= i and k > j):
                self.sources[i] = self.sources[j]
                self.sources[j].key = 0
                i = j

    # -- accepting -----------------------------------------------------------------------

    cdef int _accept(self, int li) except -1:
        cdef sockaddr_storage sa
        cdef socklen_t salen
        cdef int fd, err, ci, one = 1, tr = self.ltransport[li]
        cdef int64_t *k = self.sctr + NSC * (tr - 1)
        cdef uint64_t key
        cdef epoll_event ev
        cdef BIO *rbio
        cdef BIO *wbio
        cdef Conn *c
        cdef int64_t now = self._now()
        for _ in range(ACCEPTS_PER_WAKE):
            salen = sizeof(sa)
            with nogil:
                fd = accept4(self.lfd[li], <sockaddr *>&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC)
                err = errno
            if fd < 0:
                if err == EINTR or err == ECONNABORTED or err == EPROTO:
                    continue
                if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                    # out of descriptors: the pending connection would make epoll report
                    # the listener again at once, forever. Take it with the reserve, drop it.
                    k[SC_REFUSED_FDS] += 1
                    if self.reservefd >= 0:
                        close(self.reservefd)
                        fd = accept4(self.lfd[li], NULL, NULL, SOCK_CLOEXEC)
                        if fd >= 0:
                            _reset_close(fd)
                        self.reservefd = open(b"/dev/null", O_RDONLY | O_CLOEXEC)
                        continue
                return 0  # EAGAIN, or an error the next readiness will show again
            if self.nopen >= self.max_conns or self.nfree == 0:
                k[SC_REFUSED_NODE] += 1
                _reset_close(fd)
                continue
            key = _source_key(&sa)
            if self._source_add(key, self.per_source) < 0:
                k[SC_REFUSED_SOURCE] += 1
                _reset_close(fd)
                continue
            self.nfree -= 1
            ci = self.free[self.nfree]
            if ci >= self.high:
                self.high = ci + 1
            c = &self.conns[ci]
            c.fd = fd
            c.transport = tr
            c.listener = self.lindex[li]
            c.slots = 0
            c.events = EPOLLIN
            c.ssl = NULL
            c.source = key
            c.opened_ns = c.last_rx_ns = c.partial_ns = now
            c.inbuf = c.outbuf = c.rec.buf = NULL
            c.inlen = c.outhead = c.outlen = c.outcap = 0
            c.rec.head = c.rec.len = c.rec.cap = 0
            c.rec.max = RECORD_ROOM
            c.peer_len = salen
            memcpy(&c.peer, &sa, sizeof(sa))
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
            c.state = CS_HANDSHAKE if tr == TR_TLS else CS_OPEN
            ev.events = EPOLLIN
            ev.data.u64 = <uint64_t>self.cid(ci)
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
                err = errno
                c.state = CS_FREE
                self._source_remove(key)
                self.free[self.nfree] = ci
                self.nfree += 1
                _reset_close(fd)
                raise OSError(err, os.strerror(err))
            self.nopen += 1
            k[SC_ACCEPTED] += 1
            k[SC_OPEN] += 1
            if tr == TR_TLS:
                # reads straight from the socket; records appended to c.rec (ext/_tls)
                c.ssl = SSL_new(self.ctx)
                rbio = BIO_new_socket(fd, BIO_NOCLOSE)
                wbio = BIO_new(records_method())
                if c.ssl == NULL or rbio == NULL or wbio == NULL:
                    if rbio != NULL:
                        BIO_free(rbio)
                    if wbio != NULL:
                        BIO_free(wbio)
                    ERR_clear_error()
                    self._close(c, ci, CL_ERROR)
                    continue
                BIO_set_data(wbio, &c.rec)
                SSL_set_bio(c.ssl, rbio, wbio)
                SSL_set_accept_state(c.ssl)
            else:
                self.events.append((EV_OPEN, self.cid(ci), (c.listener, addr_tuple(&c.peer))))
        return 0

    cdef int _handshake(self, Conn *c, int ci) except -1:
        """Drive a TLS handshake; returns 1 once it is done (the connection is then open)."""
        cdef int r, e
        cdef uint32_t pending
        ERR_clear_error()
        with nogil:
            r = SSL_do_handshake(c.ssl)
            e = SSL_get_error(c.ssl, r)
        if c.rec.len > c.rec.head and self._send_records(c, ci) < 0:  # its flight of messages
            return 0
        # what is left of the flight waits for EPOLLOUT
        pending = EPOLLOUT if c.rec.len > c.rec.head else 0
        if r == 1:
            c.state = CS_OPEN
            c.last_rx_ns = self._now()
            self.sctr[NSC * (c.transport - 1) + SC_HANDSHAKES] += 1
            self._want(c, ci, EPOLLIN | pending)
            self.events.append((EV_OPEN, self.cid(ci), (c.listener, addr_tuple(&c.peer))))
            return 1
        if e == SSL_ERROR_WANT_READ:
            self._want(c, ci, EPOLLIN | pending)
        elif e == SSL_ERROR_WANT_WRITE:
            self._want(c, ci, EPOLLIN | EPOLLOUT)
        else:
            ERR_clear_error()
            self._close(c, ci, CL_HANDSHAKE_FAILED)
        return 0

    # -- reading and splitting -----------------------------------------------------------

    cdef int drain(self, void *ctx, channel_fn on_channel, flush_fn on_flush) except -1:
        """Serve what the epoll set reports ready: accept, handshake, read and split, flush.
        ChannelData goes to ``on_channel``; ``on_flush`` is called whenever the read buffer
        is about to be reused, and once at the end."""
        cdef epoll_event evs[MAX_EVENTS]
        cdef int n, i, err, ci
        cdef uint64_t tag, kind, value
        cdef uint32_t gen
        cdef Conn *c
        for _ in range(16):
            with nogil:
                n = epoll_wait(self.epfd, evs, MAX_EVENTS, 0)
                err = errno
            if n < 0:
                if err == EINTR:
                    continue
                raise OSError(err, os.strerror(err))
            for i in range(n):
                tag = evs[i].data.u64
                kind = tag & TAG_MASK
                if kind == TAG_WAKE:
                    read(self.wakefd, &value, 8)
                    self.wake_armed = False
                    continue
                if kind == TAG_LISTENER:
                    self._accept(<int>(tag & 0xFF))
                    continue
                c = self.get(<int64_t>tag)
                if c == NULL:
                    continue
                ci = <int>(tag & 0xFFFFFF)
                gen = c.gen
                if c.state == CS_HANDSHAKE:
                    # once done, read: the client's first data may have come with Finished
                    if self._handshake(c, ci):
                        self._read(c, ci, ctx, on_channel, on_flush)
                    continue
                if evs[i].events & EPOLLOUT:
                    if c.outlen > c.outhead or c.rec.len > c.rec.head:
                        self._flush(c, ci)
                    else:
                        self._want(c, ci, EPOLLIN)
                    if c.state == CS_FREE or c.gen != gen:
                        continue
                    if c.ssl != NULL:  # a TLS read that had to write first goes on
                        self._read(c, ci, ctx, on_channel, on_flush)
                        continue
                if evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP):
                    self._read(c, ci, ctx, on_channel, on_flush)
            if n < MAX_EVENTS:
                break
        on_flush(ctx)
        self.scursor = 0
        return 0

    cdef int _read(self, Conn *c, int ci, void *ctx, channel_fn on_channel,
                   flush_fn on_flush) except -1:
        """Read what the connection has (up to READ_BUDGET, then the next one gets a turn;
        level-triggered epoll brings it back) and split it."""
        cdef uint32_t gen = c.gen
        cdef size_t plen, room, budget = READ_BUDGET
        cdef ssize_t r
        cdef uint8_t *buf
        cdef int e, err
        while True:
            plen = c.inlen
            if self.scap - self.scursor < plen + READ_MIN:
                on_flush(ctx)
                self.scursor = 0
            buf = self.scratch + self.scursor
            room = self.scap - self.scursor - plen
            if plen:
                memcpy(buf, c.inbuf, plen)
            if c.ssl == NULL:
                with nogil:
                    r = recv(c.fd, buf + plen, room, MSG_DONTWAIT)
                    err = errno
                if r == 0:
                    self._close(c, ci, CL_CLIENT)
                    return 0
                if r < 0:
                    if err == EINTR:
                        continue
                    if not _again(err):
                        self._close(c, ci, CL_CLIENT if err == ECONNRESET else CL_ERROR)
                    return 0
            else:
                ERR_clear_error()
                with nogil:
                    r = SSL_read(c.ssl, buf + plen, <int>room if room < 0x7FFFFFFF else 0x7FFFFFFF)
                    e = SSL_get_error(c.ssl, <int>r)
                    err = errno
                if c.rec.len > c.rec.head and self._send_records(c, ci) < 0:  # alerts, tickets
                    return 0
                if r <= 0:
                    if e == SSL_ERROR_WANT_READ:
                        return 0
                    if e == SSL_ERROR_WANT_WRITE:
                        self._want(c, ci, EPOLLIN | EPOLLOUT)
                        return 0
                    ERR_clear_error()
                    if e == SSL_ERROR_ZERO_RETURN or (
                            e == SSL_ERROR_SYSCALL and (err == 0 or err == ECONNRESET
                                                        or err == EPIPE)):
                        self._close(c, ci, CL_CLIENT)
                    else:
                        self._close(c, ci, CL_ERROR)
                    return 0
            c.last_rx_ns = self._now()
            self._split(c, ci, buf, plen + <size_t>r, ctx, on_channel)
            if c.state == CS_FREE or c.gen != gen:
                return 0
            self.scursor += (plen + <size_t>r + 7) & ~(<size_t>7)
            if <size_t>r >= budget:
                if c.ssl == NULL or not SSL_has_pending(c.ssl):
                    return 0
                budget = READ_MIN  # what OpenSSL already holds must be read now
            else:
                budget -= <size_t>r
            if c.ssl == NULL and <size_t>r < room:
                return 0  # the socket is empty

    cdef int _split(self, Conn *c, int ci, uint8_t *buf, size_t total, void *ctx,
                    channel_fn on_channel) except -1:
        """Split ``buf[0:total]`` (the connection's incomplete message, then what it sent
        now): STUN to Python, ChannelData to ``on_channel``, what is left kept for next time.
        A stream that is lost (garbage, a length beyond the maximum) is closed."""
        cdef size_t off = 0, length = 0, left
        cdef int k
        cdef int64_t *bl = self.blocks[c.transport]
        while True:
            k = frame(buf + off, total - off, self.max_message, &length)
            if k == FR_NEED:
                break
            if k == FR_GARBAGE:
                self._close(c, ci, CL_MALFORMED)
                return 0
            if k == FR_OVERSIZE:
                self._close(c, ci, CL_OVERSIZE)
                return 0
            if k == FR_STUN:
                self.blocks[0][self.i_stun] += 1
                bl[self.i_stun] += 1
                self.events.append(
                    (EV_STUN, self.cid(ci), PyBytes_FromStringAndSize(<char *>buf + off, length)))
            else:
                on_channel(ctx, c, ci, buf + off, length)
            off += length
        left = total - off
        if left:
            if off or not c.inlen:
                c.partial_ns = self._now()  # a new message began
            if c.inbuf == NULL:
                c.inbuf = <uint8_t *>malloc(self.max_message + 8)
                if c.inbuf == NULL:
                    self._close(c, ci, CL_ERROR)
                    raise MemoryError()
            memcpy(c.inbuf, buf + off, left)
        c.inlen = <uint32_t>left
        return 0

    # -- writing -------------------------------------------------------------------------

    cdef int queue(self, Conn *c, int ci, const uint8_t *p, size_t n, bint media) noexcept:
        """Append a frame to the connection's output (flushed at the end of the batch);
        -1 when it does not fit: media past ``send_buffer``, an answer past that and
        CONTROL_RESERVE more, or no memory."""
        cdef size_t used = c.outlen - c.outhead
        cdef size_t limit = self.send_buffer + (0 if media else CONTROL_RESERVE)
        cdef size_t cap
        cdef uint8_t *nb
        if used + n > limit:
            return -1
        if c.outlen + n > c.outcap:
            if c.outhead:
                memmove(c.outbuf, c.outbuf + c.outhead, used)
                c.outlen = <uint32_t>used
                c.outhead = 0
            if used + n > c.outcap:
                cap = c.outcap * 2 if c.outcap else 4096
                while cap < used + n:
                    cap *= 2
                if cap > self.send_buffer + CONTROL_RESERVE:
                    cap = self.send_buffer + CONTROL_RESERVE
                nb = <uint8_t *>realloc(c.outbuf, cap)
                if nb == NULL:
                    return -1
                c.outbuf = nb
                c.outcap = <uint32_t>cap
        memcpy(c.outbuf + c.outlen, p, n)
        c.outlen += <uint32_t>n
        if not c.dirty:
            c.dirty = 1
            self.dirty[self.ndirty] = ci
            self.ndirty += 1
        return 0

    cdef int flush_dirty(self) except -1:
        """Write out every connection queued to since the last call."""
        cdef int i, ci
        cdef Conn *c
        for i in range(self.ndirty):
            ci = self.dirty[i]
            c = &self.conns[ci]
            c.dirty = 0
            if c.state == CS_OPEN and c.outlen > c.outhead:
                self._flush(c, ci)
        self.ndirty = 0
        return 0

    cdef int _flush(self, Conn *c, int ci) except -1:
        """Write what the connection's buffer holds; what the kernel cannot take now waits
        for EPOLLOUT. Over TLS: a record per message, made only once the last ones left."""
        cdef ssize_t r
        cdef size_t n
        cdef int err
        if c.ssl != NULL:
            while True:
                if c.rec.len > c.rec.head:
                    if self._send_records(c, ci) < 0:
                        return -1
                    if c.rec.len > c.rec.head:
                        return 0  # the socket is full: the messages wait (media is capped)
                if c.outhead >= c.outlen:
                    break
                while c.outhead < c.outlen and c.rec.len - c.rec.head < RECORD_BATCH:
                    n = _message_length(c.outbuf + c.outhead, c.outlen - c.outhead)
                    ERR_clear_error()
                    with nogil:
                        r = SSL_write(c.ssl, c.outbuf + c.outhead, <int>n)
                    if r <= 0:
                        ERR_clear_error()
                        self._close(c, ci, CL_ERROR)
                        return -1
                    c.outhead += <uint32_t>r
        else:
            while c.outhead < c.outlen:
                n = c.outlen - c.outhead
                with nogil:
                    r = send(c.fd, c.outbuf + c.outhead, n, MSG_DONTWAIT | MSG_NOSIGNAL)
                    err = errno
                if r < 0:
                    if err == EINTR:
                        continue
                    if _again(err):
                        self._want(c, ci, EPOLLIN | EPOLLOUT)
                        return 0
                    self._close(c, ci, CL_CLIENT if err == EPIPE or err == ECONNRESET
                                else CL_ERROR)
                    return -1
                c.outhead += <uint32_t>r
        c.outhead = c.outlen = 0
        if c.events & EPOLLOUT:
            self._want(c, ci, EPOLLIN)
        return 0

    cdef int _send_records(self, Conn *c, int ci) except -1:
        """Send the TLS records waiting in the connection's record buffer, in one call when
        the socket takes them; -1 when that closed the connection."""
        cdef ssize_t r
        cdef int err
        while c.rec.head < c.rec.len:
            with nogil:
                r = send(c.fd, c.rec.buf + c.rec.head, c.rec.len - c.rec.head,
                         MSG_DONTWAIT | MSG_NOSIGNAL)
                err = errno
            if r < 0:
                if err == EINTR:
                    continue
                if _again(err):
                    self._want(c, ci, EPOLLIN | EPOLLOUT)
                    return 0
                self._close(c, ci, CL_CLIENT if err == EPIPE or err == ECONNRESET else CL_ERROR)
                return -1
            c.rec.head += <uint32_t>r
        c.rec.head = c.rec.len = 0
        return 0

    # -- closing -------------------------------------------------------------------------

    cdef int _close(self, Conn *c, int ci, int reason) except -1:
        cdef epoll_event ev
        cdef int64_t cid = self.cid(ci)
        cdef int64_t *k = self.sctr + NSC * (c.transport - 1)
        if c.state == CS_FREE:
            return 0
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, c.fd, &ev)
        if c.ssl != NULL:
            if reason == CL_SERVER and c.state == CS_OPEN:
                SSL_shutdown(c.ssl)  # best effort close_notify
                if c.rec.len > c.rec.head:
                    send(c.fd, c.rec.buf + c.rec.head, c.rec.len - c.rec.head,
                         MSG_DONTWAIT | MSG_NOSIGNAL)
            SSL_free(c.ssl)  # and its two BIOs
            c.ssl = NULL
            ERR_clear_error()
        if reason == CL_SERVER or reason == CL_CLIENT:
            close(c.fd)
        else:
            _reset_close(c.fd)
        c.fd = -1
        if c.inlen:  # a message cut off
            self.blocks[0][self.i_truncated] += 1
            self.blocks[c.transport][self.i_truncated] += 1
        free(c.inbuf)
        free(c.outbuf)
        free(c.rec.buf)
        c.inbuf = c.outbuf = c.rec.buf = NULL
        c.inlen = c.outhead = c.outlen = c.outcap = 0
        c.rec.head = c.rec.len = c.rec.cap = 0
        self._source_remove(c.source)
        k[SC_CLOSED + reason] += 1
        k[SC_OPEN] -= 1
        self.nopen -= 1
        c.state = CS_FREE
        c.gen += 1
        self.free[self.nfree] = ci
        self.nfree += 1
        self.events.append((EV_CLOSED, cid, CLOSE_REASONS[reason]))
        self._wake()
        return 0

    cdef int attach(self, int64_t cid, int delta) except -1:
        """An allocation slot was (``delta`` 1) or no longer is (-1) the connection's."""
        cdef Conn *c = self.get(cid)
        if c == NULL:
            return 0
        c.slots += delta
        if c.slots <= 0:
            c.slots = 0
            c.last_rx_ns = self._now()  # the idle timeout counts from here
        return 0

    # -- Python-facing -------------------------------------------------------------------

    @property
    def fileno(self):
        """The epoll descriptor to watch: readable when a connection or listener is."""
        return self.epfd

    @property
    def connections(self):
        """Connections open now (TLS handshakes under way included)."""
        return self.nopen

    @property
    def fake_clock_ns(self):
        """Tests only: when non-zero, the time the timers use instead of the clock."""
        return self.fake_now

    @fake_clock_ns.setter
    def fake_clock_ns(self, int64_t ns):
        self.fake_now = ns

    def load_tls(self, str cert, key=None):
        """(Re)load the certificate chain and key (PEM files; ``key`` defaults to the cert
        file). New handshakes use them; connections already open keep theirs. Raises
        ValueError with OpenSSL's reason, and keeps the old ones, when they do not load."""
        cdef SSL_CTX *new = server_context(os.fsencode(cert), os.fsencode(key or cert))
        cdef SSL_CTX *old = self.ctx
        self.ctx = new
        if old != NULL:
            SSL_CTX_free(old)  # reference-counted: open connections keep it alive

    def send(self, int64_t cid, const unsigned char[:] data):
        """Queue a STUN message for the connection and write it out; False when the
        connection is gone or its buffer is full."""
        cdef Conn *c = self.get(cid)
        cdef int ci = <int>(cid & 0xFFFFFF)
        cdef size_t n = data.shape[0]
        if c == NULL or c.state != CS_OPEN or n == 0:
            return False
        if self.queue(c, ci, &data[0], n, False) < 0:
            return False
        self.flush_dirty()
        return True

    def close(self, int64_t cid):
        """Close the connection (an event says so, as for every close)."""
        cdef Conn *c = self.get(cid)
        if c != NULL:
            self._close(c, <int>(cid & 0xFFFFFF), CL_SERVER)

    def close_all(self):
        cdef int i
        for i in range(self.high):
            if self.conns[i].state != CS_FREE:
                self._close(&self.conns[i], i, CL_SERVER)

    def sweep(self):
        """Close what overstayed a timer: a TLS handshake, an incomplete message, a
        connection with no allocation that went quiet. Returns the pending events."""
        cdef int ci
        cdef Conn *c
        cdef int64_t now = self._now()
        for ci in range(self.high):
            c = &self.conns[ci]
            if c.state == CS_FREE:
                continue
            if c.state == CS_HANDSHAKE:
                if now - c.opened_ns > self.handshake_ns:
                    self._close(c, ci, CL_HANDSHAKE_TIMEOUT)
            elif c.inlen and now - c.partial_ns > self.partial_ns:
                self._close(c, ci, CL_PARTIAL_TIMEOUT)
            elif c.slots == 0 and now - c.last_rx_ns > self.idle_ns:
                self._close(c, ci, CL_IDLE)
        return self.take_events()

    def take_events(self):
        """Events since the last call, oldest first: ``(EVENT_OPEN, id, (listener, (host,
        port)))``, ``(EVENT_STUN, id, message)``, ``(EVENT_CLOSED, id, reason)``."""
        cdef list out = self.events
        self.events = []
        return out

    def info(self, int64_t cid):
        """What is known of a connection (tests, logs): None once it is gone."""
        cdef Conn *c = self.get(cid)
        cdef const unsigned char *alpn = NULL
        cdef unsigned int alen = 0
        if c == NULL:
            return None
        out = {
            "transport": TRANSPORTS[c.transport],
            "open": c.state == CS_OPEN,
            "listener": c.listener,
            "peer": addr_tuple(&c.peer),
            "slots": c.slots,
            "partial": c.inlen,
            "queued": c.outlen - c.outhead,
            "records": c.rec.len - c.rec.head,
        }
        if c.ssl != NULL and c.state == CS_OPEN:
            SSL_get0_alpn_selected(c.ssl, &alpn, &alen)
            out["tls_version"] = SSL_get_version(c.ssl).decode()
            out["cipher"] = SSL_get_cipher_name(c.ssl).decode()
            out["alpn"] = (<const char *>alpn)[:alen].decode() if alen else None
        return out


# --- a framer for tests ----------------------------------------------------------------------

cdef int _collect(void *ctx, Conn *c, int ci, uint8_t *p, size_t n) noexcept:
    cdef Framer f = <Framer>ctx
    f._take_stun()
    f.out.append(("channel", PyBytes_FromStringAndSize(<char *>p, n)))
    return 0


cdef class Framer:
    """The splitting of one connection's stream, without a socket: :meth:`feed` takes bytes
    as they might arrive and returns the whole messages they complete (the same code as a
    connection's reads: the incomplete message is kept and put in front of the next bytes)."""

    def __cinit__(self, int max_message=4096):
        self.streams = Streams(1, max_message=max_message)
        self.streams.conns[0].state = CS_OPEN
        self.streams.conns[0].transport = TR_TCP
        self.streams.nfree = 0
        self.streams.high = 1
        self.streams.nopen = 1
        self.out = []

    cdef _take_stun(self):
        for kind, _, value in self.streams.take_events():
            if kind == EV_STUN:
                self.out.append(("stun", value))
            elif kind == EV_CLOSED:
                self.why_lost = value

    def feed(self, const unsigned char[:] data):
        """``[("stun" | "channel", message)]`` completed by ``data``, in stream order (those
        before the point where the stream was lost included); once it is lost (:attr:`lost`
        says why), the next feed raises ValueError with the reason."""
        cdef Conn *c = &self.streams.conns[0]
        cdef size_t n = data.shape[0], plen = c.inlen
        if self.why_lost is not None:
            raise ValueError(self.why_lost)
        if plen + n > self.streams.scap:
            raise ValueError("feed at most the read buffer's size at once")
        if plen:
            memcpy(self.streams.scratch, c.inbuf, plen)
        if n:
            memcpy(self.streams.scratch + plen, &data[0], n)
        self.streams._split(c, 0, self.streams.scratch, plen + n, <void *>self, _collect)
        self._take_stun()
        out, self.out = self.out, []
        return out

    @property
    def lost(self):
        """None while the stream is whole, else why it was lost ("malformed", "oversize")."""
        return self.why_lost

    @property
    def pending(self):
        """Bytes of an incomplete message held for the next feed."""
        return self.streams.conns[0].inlen
