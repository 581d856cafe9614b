# cython: language_level=3, freethreading_compatible=True
"""Batched load generator and echo peer for the relay benchmark.

Both loops run with the GIL released, on preallocated recvmmsg/sendmmsg vectors, and create no
Python object per packet. After its 4-byte ChannelData header every packet carries an RTP
header (its flow as the SSRC), then (sequence, send time), so the generator counts loss and
round-trip time on its own.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc cimport errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from ext._sys cimport MSG_DONTWAIT, recvmmsg, sendmmsg
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
              unsigned long arg5)
    int PR_SET_TIMERSLACK

cdef extern from "<errno.h>" nogil:
    int ENOBUFS
    int ECONNREFUSED
    int EINTR
    int EWOULDBLOCK

cdef enum:
    HEADER = 4
    RX_SIZE = 2048
    MAX_PER_WAKE = 1024
    ECHO_TICK_NS = 50000000  # echo re-checks its stop flag this often


cdef inline uint64_t _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline void _set_timeout(timespec *ts, uint64_t ns) noexcept nogil:
    ts.tv_sec = <long>(ns // 1000000000ULL)
    ts.tv_nsec = <long>(ns % 1000000000ULL)


cdef inline bint _transient(int err) noexcept nogil:
    # what a UDP socket may say under load or while the far end is not (yet) there
    return err == errno.EAGAIN or err == EWOULDBLOCK or err == ENOBUFS \
        or err == ECONNREFUSED or err == EINTR


cdef inline void _rtp_header(uint8_t *p, uint16_t seq, uint64_t ns, uint32_t flow) noexcept nogil:
    cdef uint32_t ts = <uint32_t>(ns // 20834)  # ~48 kHz
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


cdef int _raise_errno(int err) except -1:
    errno.errno = err
    PyErr_SetFromErrno(OSError)
    return -1


cdef class _Batch:
    def __cinit__(self, int count, int size, bint with_names):
        if count <= 0 or size <= 0:
            raise ValueError("batch count and size must be positive")
        self.count = count
        self.size = size
        self.msgs = <mmsghdr *>calloc(count, sizeof(mmsghdr))
        self.iovs = <iovec *>calloc(count, sizeof(iovec))
        self.bufs = <char *>calloc(count, size)
        self.names = NULL
        if with_names:
            self.names = <sockaddr_storage *>calloc(count, sizeof(sockaddr_storage))
        if self.msgs == NULL or self.iovs == NULL or self.bufs == NULL or (
                with_names and self.names == NULL):
            raise MemoryError()
        cdef int i
        for i in range(count):
            self.iovs[i].iov_base = self.bufs + <size_t>i * size
            self.msgs[i].msg_hdr.msg_iov = &self.iovs[i]
            self.msgs[i].msg_hdr.msg_iovlen = 1
        self.rearm()

    def __dealloc__(self):
        free(self.msgs)
        free(self.iovs)
        free(self.bufs)
        free(self.names)

    cdef void rearm(self) noexcept nogil:
        cdef int i
        for i in range(self.count):
            self.iovs[i].iov_len = self.size
            self.msgs[i].msg_len = 0
            self.msgs[i].msg_hdr.msg_flags = 0
            if self.names != NULL:
                self.msgs[i].msg_hdr.msg_name = &self.names[i]
                self.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)


cdef class Echo:
    def __cinit__(self, int fd, int batch=64):
        if fd < 0:
            raise ValueError("bad file descriptor")
        self.fd = fd
        self.batch = _Batch(batch, RX_SIZE, True)
        self.stopping = 0
        self.packets = 0
        self.bytes = 0

    def stop(self):
        self.stopping = 1

    def reset(self):
        self.packets = 0
        self.bytes = 0

    cdef int service(self) noexcept nogil:
        """Echo everything queued on the socket; 0 or the errno of a fatal error."""
        cdef int n, i, r, done
        while True:
            self.batch.rearm()
            n = recvmmsg(self.fd, self.batch.msgs, self.batch.count, MSG_DONTWAIT, NULL)
            if n < 0:
                return 0 if _transient(errno.errno) else errno.errno
            for i in range(n):
                self.batch.iovs[i].iov_len = self.batch.msgs[i].msg_len
                self.bytes += self.batch.msgs[i].msg_len
            done = 0
            while done < n:
                r = sendmmsg(self.fd, self.batch.msgs + done, n - done, MSG_DONTWAIT)
                if r < 0:
                    if not _transient(errno.errno):
                        return errno.errno
                    break  # the rest of the batch is dropped, as a router would
                done += r
            self.packets += done
            if n < self.batch.count:
                return 0

    def run(self, double max_seconds):
        """Echo until stop() or ``max_seconds``; returns the packets echoed in this call."""
        cdef pollfd pfd
        cdef timespec tmo
        cdef uint64_t deadline, now, start_packets = self.packets
        cdef int r, err = 0
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.stopping = 0
        pfd.fd = self.fd
        pfd.events = POLLIN
        with nogil:
            deadline = _now() + <uint64_t>(max_seconds * 1e9)
            while not self.stopping:
                now = _now()
                if now >= deadline:
                    break
                _set_timeout(&tmo, min(<uint64_t>ECHO_TICK_NS, deadline - now))
                pfd.revents = 0
                r = ppoll(&pfd, 1, &tmo, NULL)
                if r < 0:
                    if errno.errno == EINTR:
                        continue
                    err = errno.errno
                    break
                if r == 0:
                    continue
                err = self.service()
                if err:
                    break
        if err:
            _raise_errno(err)
        return self.packets - start_packets


cdef class Generator:
    def __cinit__(self, fds, int payload, channels=None, int batch=64):
        cdef int i
        self.nflows = len(fds)
        if self.nflows < 1 or self.nflows > MAX_FLOWS:
            raise ValueError(f"need 1..{MAX_FLOWS} flows")
        if payload < STAMP_LEN or payload > RX_SIZE - HEADER:
            raise ValueError(f"payload must be {STAMP_LEN}..{RX_SIZE - HEADER} bytes")
        if channels is None:
            channels = [0x4000 + i for i in range(self.nflows)]
        if len(channels) != self.nflows:
            raise ValueError("one channel number per flow")
        for i in range(self.nflows):
            self.fds[i] = fds[i]
            if not 0x4000 <= channels[i] <= 0x4FFF:
                raise ValueError("channel numbers are 0x4000..0x4FFF")
            self.channels[i] = channels[i]
        self.payload = payload
        self.tx = _Batch(batch, HEADER + payload, False)
        self.rx = _Batch(batch, RX_SIZE, False)
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
        """Send ``count`` packets at ``rate`` packets/s (bursts of ``burst`` on a fixed schedule,
        round-robin over the flows), stopping early after ``max_seconds`` of sending; then wait
        up to ``drain_seconds`` for stragglers. Returns the counters as a dict.

        With ``echo``, that echo peer is served from this same loop (no thread, no context
        switch: on a small machine the generator and its peer then share one core cheaply)."""
        if rate <= 0 or max_seconds <= 0 or drain_seconds < 0 or burst < 1:
            raise ValueError("rate, max_seconds and burst must be positive")
        if count < 1 or count > 100_000_000:
            raise ValueError("count must be 1..1e8")
        self._reserve(count)
        cdef _Batch tx = self.tx
        cdef _Batch rx = self.rx
        cdef pollfd pfds[MAX_FLOWS + 1]
        cdef timespec tmo
        cdef double ns_per_pkt = 1e9 / rate
        cdef uint64_t t0, now, due, wake, send_deadline, drain_deadline = 0, t_send_end = 0
        cdef uint64_t sent = 0, received = 0, dups = 0, other = 0, send_errors = 0
        cdef uint64_t recv_errors = 0, late, late_max = 0, seq, ts, rtt, todo
        cdef uint64_t asked, oversleep_max = 0
        cdef uint32_t flow
        cdef uint16_t rtpseq[MAX_FLOWS]
        cdef uint16_t be_chan, be_len = ((self.payload >> 8) & 0xFF) | (
            (self.payload & 0xFF) << 8)
        cdef int chunk = max(1, burst // self.nflows)
        cdef int f = 0, i, j, n, r, err = 0
        cdef int wire = HEADER + self.payload
        cdef char *p
        if chunk > tx.count:
            chunk = tx.count
        cdef int npfds = self.nflows
        for i in range(self.nflows):
            pfds[i].fd = self.fds[i]
            pfds[i].events = POLLIN
        if echo is not None:
            pfds[npfds].fd = echo.fd
            pfds[npfds].events = POLLIN
            npfds += 1
        for i in range(tx.count):
            tx.iovs[i].iov_len = wire
        for i in range(MAX_FLOWS):
            rtpseq[i] = <uint16_t>(i * 7919)
        with nogil:
            prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # 1 us: ppoll wakes on schedule
            t0 = _now()
            send_deadline = t0 + <uint64_t>(max_seconds * 1e9)
            while True:
                now = _now()
                # -- send what the schedule says is due, in bursts
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
                                be_chan = ((self.channels[f] >> 8) & 0xFF) | (
                                    (self.channels[f] & 0xFF) << 8)
                                flow = f
                                ts = _now()
                                for j in range(n):
                                    p = tx.bufs + <size_t>j * tx.size
                                    seq = sent + j
                                    memcpy(p, &be_chan, 2)
                                    memcpy(p + 2, &be_len, 2)
                                    _rtp_header(<uint8_t *>p + 4, rtpseq[f], ts, flow)
                                    rtpseq[f] += 1
                                    memcpy(p + 16, &seq, 8)
                                    memcpy(p + 24, &ts, 8)
                                r = sendmmsg(self.fds[f], tx.msgs, n, MSG_DONTWAIT)
                                if r < 0:
                                    if not _transient(errno.errno):
                                        err = errno.errno
                                        break
                                    r = 0
                                send_errors += n - r
                                sent += n
                                f = (f + 1) % self.nflows
                            if err:
                                break
                else:
                    if received + send_errors >= sent or now >= drain_deadline:
                        break
                # -- wait for replies or for the next burst
                if t_send_end == 0:
                    wake = t0 + <uint64_t>(<double>(sent + min(<uint64_t>burst, count - sent) - 1)
                                           * ns_per_pkt)
                else:
                    wake = drain_deadline
                now = _now()
                asked = min(wake - now, <uint64_t>2000000) if wake > now else 0
                _set_timeout(&tmo, asked)
                r = ppoll(pfds, npfds, &tmo, NULL)
                late = _now() - now
                if late > asked and late - asked > oversleep_max:
                    oversleep_max = late - asked  # the scheduler kept us off the CPU
                if r < 0:
                    if errno.errno == EINTR:
                        continue
                    err = errno.errno
                    break
                if r == 0:
                    continue
                if npfds > self.nflows and pfds[self.nflows].revents & POLLIN:
                    err = echo.service()
                    if err:
                        break
                for i in range(self.nflows):
                    if not (pfds[i].revents & POLLIN):
                        continue
                    while True:
                        rx.rearm()
                        n = recvmmsg(self.fds[i], rx.msgs, rx.count, MSG_DONTWAIT, NULL)
                        if n < 0:
                            if errno.errno == ECONNREFUSED:
                                recv_errors += 1
                                continue
                            if _transient(errno.errno):
                                break
                            err = errno.errno
                            break
                        now = _now()
                        for j in range(n):
                            p = rx.bufs + <size_t>j * rx.size
                            if rx.msgs[j].msg_len < HEADER + STAMP_LEN or (
                                    (<uint8_t>p[0]) & 0xC0) != 0x40:
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
                        if n < rx.count:
                            break
                    if err:
                        break
                if err:
                    break
            if t_send_end == 0:
                t_send_end = _now()
        if err:
            _raise_errno(err)
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
