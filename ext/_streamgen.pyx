# cython: language_level=3, freethreading_compatible=True
"""Load over TCP and TLS for the relay benchmark: TURN clients on streams.

A :class:`StreamConn` is one client connection (plain TCP, or TLS through OpenSSL's client
side, made non-blocking); Python makes the allocation and binds the channel over it
(bench/turnclient.py reads and writes whole messages with :meth:`StreamConn.read_message` and
:meth:`StreamConn.write`). :class:`StreamGenerator` then sends paced ChannelData on every
connection, one write per packet (one TLS record each) as a browser's TURN client does, with
the same payload as ``ext._loadgen.Generator`` (an RTP header, then the sequence number and
the send time), and parses what comes back out of the streams (ChannelData padded to 4 bytes,
RFC 8656 12.5) to count loss and round-trip times. The echo peer is served from the same loop.
Everything per packet runs with the GIL released, on preallocated buffers.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc cimport errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove, memset

from ext._loadgen cimport Echo, POLLIN, STAMP_LEN, pollfd, ppoll
from ext._ssl cimport (
    ERR_clear_error, SSL_CTX, SSL_CTX_new, SSL_CTX_set_min_proto_version, SSL_ERROR_WANT_READ,
    SSL_ERROR_WANT_WRITE, SSL_connect, SSL_free, SSL_get_error, SSL_get_version,
    SSL_has_pending, SSL_new, SSL_read, SSL_set_fd, SSL_write, TLS1_2_VERSION, TLS_client_method,
)
from ext._sys cimport MSG_DONTWAIT, MSG_NOSIGNAL, recv, send
from ext._wire cimport CHANNEL_HEADER, CHANNEL_MAX, CHANNEL_MIN, STUN_HEADER, load16
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from "<poll.h>" nogil:
    short POLLOUT
    int poll(pollfd *fds, unsigned long nfds, int timeout)

cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5)
    int PR_SET_TIMERSLACK

cdef enum:
    RBUF = 262144
    FRAME_MAX = 2048
    MAX_PER_WAKE = 1024

cdef SSL_CTX *CLIENT = NULL


cdef inline uint64_t _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline void _set_timeout(timespec *ts, uint64_t ns) noexcept nogil:
    ts.tv_sec = <long>(ns // 1000000000ULL)
    ts.tv_nsec = <long>(ns % 1000000000ULL)


cdef inline void _rtp(uint8_t *p, uint16_t seq, uint64_t ns, uint32_t flow) noexcept nogil:
    """The RTP header ext._loadgen's generator writes: V=2, PT 111, a 48 kHz timestamp,
    SSRC 0x10000 + flow (the relay's RTP inspection does its real work)."""
    cdef uint32_t ts = <uint32_t>(ns // 20834)
    cdef uint32_t ssrc = 0x10000 + flow
    p[0] = 0x80
    p[1] = 111
    p[2] = <uint8_t>(seq >> 8)
    p[3] = <uint8_t>seq
    p[4] = <uint8_t>(ts >> 24)
    p[5] = <uint8_t>(ts >> 16)
    p[6] = <uint8_t>(ts >> 8)
    p[7] = <uint8_t>ts
    p[8] = <uint8_t>(ssrc >> 24)
    p[9] = <uint8_t>(ssrc >> 16)
    p[10] = <uint8_t>(ssrc >> 8)
    p[11] = <uint8_t>ssrc


cdef SSL_CTX *_client() except NULL:
    """The benchmark's TLS client context: TLS 1.2 or later, OpenSSL's default suites (a
    browser's choice: TLS 1.3 with AES-128-GCM here); the relay's certificate is not checked
    (a loopback benchmark against a throwaway certificate)."""
    global CLIENT
    if CLIENT == NULL:
        CLIENT = SSL_CTX_new(TLS_client_method())
        if CLIENT == NULL or not SSL_CTX_set_min_proto_version(CLIENT, TLS1_2_VERSION):
            raise MemoryError("cannot make a TLS client context")
    return CLIENT


cdef long _flow_read(Flow *f) noexcept nogil:
    """Read into ``f.rbuf``: bytes read, 0 when nothing is there now, -1 at the end or on an
    error (errno or the TLS error set)."""
    cdef long r
    cdef int e
    if f.rlen >= f.rcap:
        return 0
    if f.ssl == NULL:
        r = recv(f.fd, f.rbuf + f.rlen, f.rcap - f.rlen, MSG_DONTWAIT)
        if r > 0:
            f.rlen += r
            return r
        if r < 0 and (errno.errno == errno.EAGAIN or errno.errno == errno.EINTR):
            return 0
        return -1
    ERR_clear_error()
    r = SSL_read(f.ssl, f.rbuf + f.rlen, <int>(f.rcap - f.rlen))
    if r > 0:
        f.rlen += r
        return r
    e = SSL_get_error(f.ssl, <int>r)
    if e == SSL_ERROR_WANT_READ or e == SSL_ERROR_WANT_WRITE:
        return 0
    return -1


cdef int _flow_write(Flow *f, const uint8_t *p, size_t n) noexcept nogil:
    """Write all of ``p[0:n]`` (waiting in poll while the socket is full: the relay reads
    at least as fast as the generator offers, so this is rare); 0 or an errno."""
    cdef long r
    cdef int e
    cdef pollfd pfd
    pfd.fd = f.fd
    while n:
        if f.ssl == NULL:
            r = send(f.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)
            if r > 0:
                p += r
                n -= r
                continue
            if r < 0 and errno.errno == errno.EINTR:
                continue
            if r < 0 and errno.errno != errno.EAGAIN:
                return errno.errno
            pfd.events = POLLOUT
        else:
            ERR_clear_error()
            r = SSL_write(f.ssl, p, <int>n)  # a retry passes the same bytes, as it must
            if r > 0:
                p += r
                n -= r
                continue
            e = SSL_get_error(f.ssl, <int>r)
            if e == SSL_ERROR_WANT_WRITE:
                pfd.events = POLLOUT
            elif e == SSL_ERROR_WANT_READ:
                pfd.events = POLLIN
            else:
                return errno.EPIPE
        pfd.revents = 0
        if poll(&pfd, 1, 1000) == 0:
            return errno.ETIMEDOUT
    return 0


cdef inline size_t _frame_length(const uint8_t *p, size_t n) noexcept nogil:
    """The whole length of the message at ``p`` (0: not all there yet)."""
    cdef size_t total
    if n < 4:
        return 0
    if p[0] < 4:
        total = STUN_HEADER + load16(p + 2)
    else:
        total = CHANNEL_HEADER + ((<size_t>load16(p + 2) + 3) & ~(<size_t>3))
    return total if total <= n else 0


cdef class StreamConn:
    def __cinit__(self, sock, bint tls=False):
        """``sock``: a connected TCP socket object, made non-blocking here; with ``tls``,
        the TLS handshake is made at once (ValueError when it fails)."""
        cdef int r, e
        cdef pollfd pfd
        self.owner = sock
        sock.setblocking(False)
        self.f.fd = sock.fileno()
        self.f.ssl = NULL
        self.f.rlen = 0
        self.f.rcap = RBUF
        self.f.rbuf = <uint8_t *>malloc(RBUF)
        if self.f.rbuf == NULL:
            raise MemoryError()
        if not tls:
            return
        self.f.ssl = SSL_new(_client())
        if self.f.ssl == NULL or SSL_set_fd(self.f.ssl, self.f.fd) != 1:
            raise MemoryError("cannot make a TLS connection")
        pfd.fd = self.f.fd
        while True:
            ERR_clear_error()
            with nogil:
                r = SSL_connect(self.f.ssl)
                e = SSL_get_error(self.f.ssl, r)
            if r == 1:
                return
            if e == SSL_ERROR_WANT_READ:
                pfd.events = POLLIN
            elif e == SSL_ERROR_WANT_WRITE:
                pfd.events = POLLOUT
            else:
                raise ValueError("the TLS handshake failed")
            pfd.revents = 0
            with nogil:
                r = poll(&pfd, 1, 5000)
            if r == 0:
                raise TimeoutError("the TLS handshake timed out")

    def __dealloc__(self):
        if self.f.ssl != NULL:
            SSL_free(self.f.ssl)
        free(self.f.rbuf)

    @property
    def tls_version(self):
        return SSL_get_version(self.f.ssl).decode() if self.f.ssl != NULL else None

    def write(self, const unsigned char[:] data):
        """Write a whole message (blocking until the kernel took it)."""
        cdef int err
        cdef size_t n = data.shape[0]
        cdef const unsigned char *p
        if n == 0:
            return
        p = &data[0]  # bounds-checked here, with the GIL, not inside nogil
        with nogil:
            err = _flow_write(&self.f, p, n)
        if err:
            raise OSError(err, "stream write failed")

    def read_message(self, double timeout):
        """The next whole message (STUN or ChannelData, padding included); TimeoutError,
        or ConnectionError at the end of the stream."""
        cdef size_t n
        cdef long r
        cdef pollfd pfd
        cdef uint64_t deadline = _now() + <uint64_t>(timeout * 1e9)
        cdef uint64_t now
        pfd.fd = self.f.fd
        pfd.events = POLLIN
        while True:
            n = _frame_length(self.f.rbuf, self.f.rlen)
            if n:
                out = PyBytes_FromStringAndSize(<char *>self.f.rbuf, n)
                memmove(self.f.rbuf, self.f.rbuf + n, self.f.rlen - n)
                self.f.rlen -= n
                return out
            with nogil:
                r = _flow_read(&self.f)
            if r < 0:
                raise ConnectionError("the relay closed the connection")
            if r > 0:
                continue
            now = _now()
            if now >= deadline:
                raise TimeoutError("no whole message")
            pfd.revents = 0
            with nogil:
                poll(&pfd, 1, <int>((deadline - now) // 1000000 + 1))


cdef class StreamGenerator:
    def __cinit__(self, conns, int payload, channels):
        cdef int i
        cdef StreamConn conn
        self.nflows = len(conns)
        if self.nflows < 1 or self.nflows > MAX_STREAM_FLOWS:
            raise ValueError(f"need 1..{MAX_STREAM_FLOWS} flows")
        if payload < STAMP_LEN or payload > FRAME_MAX - CHANNEL_HEADER - 3:
            raise ValueError(f"payload must be {STAMP_LEN}..{FRAME_MAX - CHANNEL_HEADER - 3} bytes")
        if len(channels) != self.nflows:
            raise ValueError("one channel number per flow")
        self.conns = list(conns)
        for i in range(self.nflows):
            conn = self.conns[i]
            self.flows[i] = &conn.f
            if not CHANNEL_MIN <= channels[i] <= CHANNEL_MAX:
                raise ValueError("channel numbers are 0x4000..0x4FFF")
            self.channels[i] = channels[i]
        self.payload = payload
        self.rtt_buf = NULL
        self.seen = NULL
        self.capacity = 0
        self.nrtts = 0

    def __dealloc__(self):
        PyMem_Free(self.rtt_buf)
        PyMem_Free(self.seen)

    cdef int _reserve(self, uint64_t count) except -1:
        if count > self.capacity:
            PyMem_Free(self.rtt_buf)
            PyMem_Free(self.seen)
            self.capacity = 0
            self.rtt_buf = <uint32_t *>PyMem_Malloc(count * sizeof(uint32_t))
            self.seen = <uint8_t *>PyMem_Malloc(count)
            if self.rtt_buf == NULL or self.seen == NULL:
                raise MemoryError()
            self.capacity = count
        memset(self.seen, 0, count)
        self.nrtts = 0
        return 0

    def rtts(self):
        """Round-trip times (ns, native uint32, saturated) of the last run, in arrival order."""
        return PyBytes_FromStringAndSize(<char *>self.rtt_buf, self.nrtts * sizeof(uint32_t))

    def run(self, double rate, unsigned long long count, double max_seconds,
            double drain_seconds=0.3, int burst=16, Echo echo=None):
        """As ``ext._loadgen.Generator.run``: ``count`` packets at ``rate`` packets/s in bursts
        of ``burst``, round-robin over the flows, then up to ``drain_seconds`` for stragglers;
        ``echo`` is served from this loop. Returns the same counters."""
        if rate <= 0 or max_seconds <= 0 or drain_seconds < 0 or burst < 1:
            raise ValueError("rate, max_seconds and burst must be positive")
        if count < 1 or count > 100_000_000:
            raise ValueError("count must be 1..1e8")
        self._reserve(count)
        cdef pollfd pfds[MAX_STREAM_FLOWS + 1]
        cdef timespec tmo
        cdef double ns_per_pkt = 1e9 / rate
        cdef uint64_t t0, now, due, wake, send_deadline, drain_deadline = 0, t_send_end = 0
        cdef uint64_t sent = 0, received = 0, dups = 0, other = 0, send_errors = 0
        cdef uint64_t recv_errors = 0, late, late_max = 0, seq, ts, rtt, todo
        cdef uint64_t asked, oversleep_max = 0
        cdef uint16_t rtpseq[MAX_STREAM_FLOWS]
        cdef uint8_t frame[FRAME_MAX]
        cdef int chunk = max(1, burst // self.nflows)
        cdef int f = 0, i, j, n, r, err = 0
        cdef int wire = (CHANNEL_HEADER + self.payload + 3) & ~3
        cdef size_t off, length
        cdef long got
        cdef Flow *fl
        cdef uint8_t *p
        cdef int npfds = self.nflows
        memset(frame, 0, sizeof(frame))
        for i in range(self.nflows):
            pfds[i].fd = self.flows[i].fd
            pfds[i].events = POLLIN
            self.flows[i].rlen = 0
        if echo is not None:
            pfds[npfds].fd = echo.fd
            pfds[npfds].events = POLLIN
            npfds += 1
        for i in range(MAX_STREAM_FLOWS):
            rtpseq[i] = <uint16_t>(i * 7919)
        with nogil:
            prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
            t0 = _now()
            send_deadline = t0 + <uint64_t>(max_seconds * 1e9)
            while True:
                now = _now()
                if t_send_end == 0:
                    if sent >= count or now >= send_deadline:
                        t_send_end = now
                        drain_deadline = now + <uint64_t>(drain_seconds * 1e9)
                    else:
                        due = <uint64_t>(<double>(now - t0) / ns_per_pkt) + 1
                        if due > count:
                            due = count
                        if due - sent >= min(<uint64_t>burst, count - sent) and due > sent:
                            late = now - t0
                            todo = <uint64_t>(<double>sent * ns_per_pkt)
                            late = late - todo if late > todo else 0
                            if late > late_max:
                                late_max = late
                            if due - sent > MAX_PER_WAKE:
                                due = sent + MAX_PER_WAKE
                            while sent < due:
                                n = <int>min(<uint64_t>chunk, due - sent)
                                frame[0] = <uint8_t>(self.channels[f] >> 8)
                                frame[1] = <uint8_t>self.channels[f]
                                frame[2] = <uint8_t>(self.payload >> 8)
                                frame[3] = <uint8_t>self.payload
                                for j in range(n):
                                    seq = sent + j
                                    ts = _now()
                                    _rtp(frame + 4, rtpseq[f], ts, <uint32_t>f)
                                    rtpseq[f] += 1
                                    memcpy(frame + 16, &seq, 8)
                                    memcpy(frame + 24, &ts, 8)
                                    if _flow_write(self.flows[f], frame, wire):
                                        send_errors += 1
                                sent += n
                                f = (f + 1) % self.nflows
                else:
                    if received + send_errors >= sent or now >= drain_deadline:
                        break
                if t_send_end == 0:
                    wake = t0 + <uint64_t>(<double>(sent + min(<uint64_t>burst, count - sent) - 1)
                                           * ns_per_pkt)
                else:
                    wake = drain_deadline
                now = _now()
                asked = min(wake - now, <uint64_t>2000000) if wake > now else 0
                _set_timeout(&tmo, asked)
                for i in range(self.nflows):  # what TLS already decrypted: no poll needed
                    if self.flows[i].ssl != NULL and SSL_has_pending(self.flows[i].ssl):
                        asked = 0
                        _set_timeout(&tmo, 0)
                        break
                r = ppoll(pfds, npfds, &tmo, NULL)
                late = _now() - now
                if late > asked and late - asked > oversleep_max:
                    oversleep_max = late - asked
                if r < 0:
                    if errno.errno == errno.EINTR:
                        continue
                    err = errno.errno
                    break
                if npfds > self.nflows and pfds[self.nflows].revents & POLLIN:
                    err = echo.service()
                    if err:
                        break
                for i in range(self.nflows):
                    fl = self.flows[i]
                    if not (pfds[i].revents & POLLIN) and not (
                            fl.ssl != NULL and SSL_has_pending(fl.ssl)):
                        continue
                    while True:
                        got = _flow_read(fl)
                        if got < 0:
                            recv_errors += 1
                            pfds[i].events = 0  # the connection is gone
                            break
                        if got == 0:
                            break
                        now = _now()
                        off = 0
                        while True:
                            length = _frame_length(fl.rbuf + off, fl.rlen - off)
                            if length == 0:
                                break
                            p = fl.rbuf + off
                            off += length
                            if p[0] < 0x40 or length < CHANNEL_HEADER + STAMP_LEN:
                                other += 1
                                continue
                            memcpy(&seq, p + 16, 8)
                            memcpy(&ts, p + 24, 8)
                            if seq >= sent or ts > now:
                                other += 1
                                continue
                            if self.seen[seq]:
                                dups += 1
                                continue
                            self.seen[seq] = 1
                            received += 1
                            rtt = now - ts
                            if rtt > 0xFFFFFFFFULL:
                                rtt = 0xFFFFFFFFULL
                            self.rtt_buf[self.nrtts] = <uint32_t>rtt
                            self.nrtts += 1
                        if off:
                            memmove(fl.rbuf, fl.rbuf + off, fl.rlen - off)
                            fl.rlen -= off
                        if fl.rlen >= fl.rcap:
                            other += 1
                            fl.rlen = 0  # not a stream of ours: start again
            if t_send_end == 0:
                t_send_end = _now()
        if err:
            errno.errno = err
            raise OSError(err, "stream generator failed")
        return {
            "sent": sent,
            "received": received,
            "duplicates": dups,
            "other": other,
            "send_errors": send_errors,
            "recv_errors": recv_errors,
            "send_seconds": (t_send_end - t0) / 1e9,
            "total_seconds": (_now() - t0) / 1e9,
            "late_max_seconds": late_max / 1e9,
            "oversleep_max_seconds": oversleep_max / 1e9,
        }
