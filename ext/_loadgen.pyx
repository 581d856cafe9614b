# cython: language_level=3, freethreading_compatible=True
"""Batched load generator and echo peer for the relay benchmark.

Both loops run with the GIL released, on preallocated recvmmsg/sendmmsg vectors, and create no
Python object per packet. After its 4-byte ChannelData header every packet carries an RTP
header (its flow as the SSRC), then (sequence, send time), so the generator counts loss and
round-trip time on its own.

``Replay`` plays call-like workloads instead: a schedule prepared in Python (real SRTP and
SRTCP packets, each with its flow and send time; bench/workloads.py) is sent packet by packet
at its times, and what comes back is matched by (SSRC, RTP sequence number), both in the clear
under SRTP, so the packets themselves stay valid SRTP that decrypts.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc cimport errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from ext._sys cimport (
    EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLLIN, MSG_DONTWAIT, epoll_create1, epoll_ctl, epoll_event,
    epoll_wait, recvmmsg, sendmmsg,
)
from ext._wire cimport (
    CHANNEL_HEADER, CHANNEL_MAX, CHANNEL_MIN, RTP_HEADER, is_rtcp, load16, load32,
)
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport close


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
    def __cinit__(self, int fd, int batch=64, bint epoll=False):
        """``epoll``: ``fd`` is an epoll set of UDP sockets (each registered with its own fd
        as the event's data), every one of them an echo peer: peers at distinct addresses,
        as a relay that tells allocations apart by peer address (--multiplex-peer) needs."""
        if fd < 0:
            raise ValueError("bad file descriptor")
        self.fd = fd
        self.is_epoll = epoll
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
        """Echo everything queued on the socket (each ready socket of the epoll set); 0 or
        the errno of a fatal error."""
        cdef epoll_event evs[64]
        cdef int n, i, err
        if not self.is_epoll:
            return self._serve(self.fd)
        while True:
            n = epoll_wait(self.fd, evs, 64, 0)
            if n < 0:
                return 0 if _transient(errno.errno) else errno.errno
            for i in range(n):
                err = self._serve(evs[i].data.fd)
                if err:
                    return err
            if n < 64:
                return 0

    cdef int _serve(self, int fd) noexcept nogil:
        cdef int n, i, r, done
        while True:
            self.batch.rearm()
            n = recvmmsg(fd, self.batch.msgs, self.batch.count, MSG_DONTWAIT, NULL)
            if n < 0:
                return 0 if _transient(errno.errno) else errno.errno
            for i in range(n):
                self.batch.iovs[i].iov_len = self.batch.msgs[i].msg_len
                self.bytes += self.batch.msgs[i].msg_len
            done = 0
            while done < n:
                r = sendmmsg(fd, self.batch.msgs + done, n - done, MSG_DONTWAIT)
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
        if payload < STAMP_LEN or payload > RX_SIZE - CHANNEL_HEADER:
            raise ValueError(f"payload must be {STAMP_LEN}..{RX_SIZE - CHANNEL_HEADER} bytes")
        if channels is None:
            channels = [CHANNEL_MIN + i for i in range(self.nflows)]
        if len(channels) != self.nflows:
            raise ValueError("one channel number per flow")
        for i in range(self.nflows):
            self.fds[i] = fds[i]
            if not CHANNEL_MIN <= channels[i] <= CHANNEL_MAX:
                raise ValueError("channel numbers are 0x4000..0x4FFF")
            self.channels[i] = channels[i]
        self.payload = payload
        self.tx = _Batch(batch, CHANNEL_HEADER + payload, False)
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
        cdef int wire = CHANNEL_HEADER + self.payload
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
                            if rx.msgs[j].msg_len < CHANNEL_HEADER + STAMP_LEN or (
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


# --- schedule replay: call-like workloads ---------------------------------------------------

cdef enum:
    MAX_EVENTS = 256


cdef class Replay:
    def __cinit__(self, fds, channels, data, offsets, lengths, flows, times,
                  unsigned int ssrc_base, seq0, start, count, order, int batch=64):
        cdef Py_ssize_t i
        cdef uint64_t n, total
        cdef unsigned int ch
        self.fds = NULL
        self.chan_be = NULL
        self.sent_ns = NULL
        self.seen = NULL
        self.rtt_buf = NULL
        self.msgs = NULL
        self.iovs = NULL
        self.hdrs = NULL
        self.nflows = len(fds)
        if self.nflows < 1:
            raise ValueError("need at least one flow")
        if len(channels) != self.nflows:
            raise ValueError("one channel number per flow")
        if batch < 1 or batch > 1024:
            raise ValueError("batch must be 1..1024")
        self.fds = <int *>calloc(self.nflows, sizeof(int))
        self.chan_be = <uint8_t *>calloc(self.nflows, 2)
        if self.fds == NULL or self.chan_be == NULL:
            raise MemoryError()
        for i in range(self.nflows):
            ch = channels[i]
            if not CHANNEL_MIN <= ch <= CHANNEL_MAX:
                raise ValueError("channel numbers are 0x4000..0x4FFF")
            self.fds[i] = fds[i]
            self.chan_be[2 * i] = <uint8_t>(ch >> 8)
            self.chan_be[2 * i + 1] = <uint8_t>ch
        self.data = data
        self.offsets = offsets
        self.lengths = lengths
        self.flows = flows
        self.times = times
        self.seq0 = seq0
        self.start = start
        self.count = count
        self.order = order
        n = self.times.shape[0]
        if n < 1 or n > 100_000_000:
            raise ValueError("the schedule needs 1..1e8 packets")
        if (<uint64_t>self.offsets.shape[0] != n or <uint64_t>self.lengths.shape[0] != n
                or <uint64_t>self.flows.shape[0] != n):
            raise ValueError("offsets, lengths, flows and times must have one entry per packet")
        self.npackets = n
        total = self.data.shape[0]
        for i in range(<Py_ssize_t>n):
            if self.lengths[i] < RTP_HEADER or self.lengths[i] > RX_SIZE - CHANNEL_HEADER:
                raise ValueError(f"packet {i}: length {self.lengths[i]} out of range")
            if self.offsets[i] > total or total - self.offsets[i] < self.lengths[i]:
                raise ValueError(f"packet {i}: beyond the data")
            if self.flows[i] >= <uint32_t>self.nflows:
                raise ValueError(f"packet {i}: flow {self.flows[i]} out of range")
            if i and self.times[i] < self.times[i - 1]:
                raise ValueError("send times must not decrease")
        self.nstreams = self.seq0.shape[0]
        if self.start.shape[0] != self.nstreams or self.count.shape[0] != self.nstreams:
            raise ValueError("seq0, start and count must have one entry per stream")
        self.ssrc_base = ssrc_base
        for i in range(self.nstreams):
            if self.count[i] > 65536:
                raise ValueError(f"stream {i}: more than 65536 packets")
            if <uint64_t>self.start[i] + self.count[i] > <uint64_t>self.order.shape[0]:
                raise ValueError(f"stream {i}: beyond the order table")
        for i in range(self.order.shape[0]):
            if self.order[i] >= n:
                raise ValueError("order entries must be packet indexes")
        self.batch = batch
        self.msgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.iovs = <iovec *>calloc(2 * batch, sizeof(iovec))
        self.hdrs = <uint8_t *>calloc(batch, CHANNEL_HEADER)
        self.sent_ns = <uint64_t *>PyMem_Malloc(n * sizeof(uint64_t))
        self.seen = <uint8_t *>PyMem_Malloc(n)
        self.rtt_buf = <uint32_t *>PyMem_Malloc(n * sizeof(uint32_t))
        if (self.msgs == NULL or self.iovs == NULL or self.hdrs == NULL or self.sent_ns == NULL
                or self.seen == NULL or self.rtt_buf == NULL):
            raise MemoryError()
        for i in range(batch):
            self.iovs[2 * i].iov_base = self.hdrs + CHANNEL_HEADER * i
            self.iovs[2 * i].iov_len = CHANNEL_HEADER
            self.msgs[i].msg_hdr.msg_iov = &self.iovs[2 * i]
            self.msgs[i].msg_hdr.msg_iovlen = 2
        self.rx = _Batch(batch, RX_SIZE, False)
        self.nrtts = 0

    def __dealloc__(self):
        free(self.fds)
        free(self.chan_be)
        free(self.msgs)
        free(self.iovs)
        free(self.hdrs)
        PyMem_Free(self.sent_ns)
        PyMem_Free(self.seen)
        PyMem_Free(self.rtt_buf)

    @property
    def packets(self):
        return self.npackets

    @property
    def schedule_seconds(self):
        return self.times[self.npackets - 1] / 1e9

    def rtts(self):
        """Round-trip times (ns, native uint32, saturated) of the last run's RTP packets."""
        return PyBytes_FromStringAndSize(<char *>self.rtt_buf, self.nrtts * sizeof(uint32_t))

    cdef int _flush(self) noexcept nogil:
        """Drop what is queued on the flows' sockets (stragglers of an earlier run)."""
        cdef int i, n
        for i in range(self.nflows):
            while True:
                self.rx.rearm()
                n = recvmmsg(self.fds[i], self.rx.msgs, self.rx.count, MSG_DONTWAIT, NULL)
                if n < 0 and errno.errno == ECONNREFUSED:
                    continue
                if n < self.rx.count:
                    break
        return 0

    def run(self, double max_seconds, double drain_seconds=0.3, Echo echo=None,
            double slack_us=50.0):
        """Send every packet of the schedule at its time (those due within ``slack_us`` go in
        the same wake-up; consecutive ones of one flow in one sendmmsg), for at most
        ``max_seconds``; then wait up to ``drain_seconds`` for the rest. With ``echo``, that
        echo peer is served from this same loop. Returns the counters as a dict."""
        if max_seconds <= 0 or drain_seconds < 0 or slack_us < 0:
            raise ValueError("max_seconds must be positive, drain_seconds and slack_us >= 0")
        cdef const uint8_t *data = &self.data[0]
        cdef const uint64_t *offsets = &self.offsets[0]
        cdef const uint16_t *lengths = &self.lengths[0]
        cdef const uint32_t *flows = &self.flows[0]
        cdef const uint64_t *times = &self.times[0]
        cdef const uint16_t *seq0 = NULL
        cdef const uint32_t *start = NULL
        cdef const uint32_t *count = NULL
        cdef const uint32_t *order = NULL
        if self.nstreams:
            seq0 = &self.seq0[0]
            start = &self.start[0]
            count = &self.count[0]
        if self.order.shape[0]:
            order = &self.order[0]
        cdef _Batch rx = self.rx
        cdef uint64_t n = self.npackets, nxt = 0, end, idx, k_seq
        cdef uint64_t slack = <uint64_t>(slack_us * 1e3)
        cdef uint64_t t0, now, el, wake, asked, late, late_max = 0, oversleep_max = 0
        cdef uint64_t send_deadline, drain_deadline = 0, t_send_end = 0, ts, rtt
        cdef uint64_t sent = 0, sent_rtcp = 0, bytes_sent = 0, send_errors = 0
        cdef uint64_t received = 0, received_rtcp = 0, dups = 0, other = 0, recv_errors = 0
        cdef uint32_t f, ssrc, s, length
        cdef uint16_t seq
        cdef int k, j, m, r, ev, nev, err = 0, epfd = -1
        cdef const uint8_t *pkt
        cdef uint8_t *h
        cdef uint8_t *p
        cdef pollfd pfd
        cdef timespec tmo
        cdef epoll_event event
        cdef epoll_event events[MAX_EVENTS]
        memset(self.seen, 0, n)
        self.nrtts = 0
        epfd = epoll_create1(EPOLL_CLOEXEC)
        if epfd < 0:
            _raise_errno(errno.errno)
        try:
            for j in range(self.nflows):
                event.events = EPOLLIN
                event.data.u64 = <uint64_t>j
                if epoll_ctl(epfd, EPOLL_CTL_ADD, self.fds[j], &event) < 0:
                    _raise_errno(errno.errno)
            if echo is not None:
                event.events = EPOLLIN
                event.data.u64 = 0xFFFFFFFFULL
                if epoll_ctl(epfd, EPOLL_CTL_ADD, echo.fd, &event) < 0:
                    _raise_errno(errno.errno)
            pfd.fd = epfd
            pfd.events = POLLIN
            with nogil:
                self._flush()
                prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # 1 us: ppoll wakes on schedule
                t0 = _now()
                send_deadline = t0 + <uint64_t>(max_seconds * 1e9)
                while True:
                    now = _now()
                    # -- send what the schedule says is due
                    if t_send_end == 0:
                        if nxt >= n or now >= send_deadline:
                            t_send_end = now
                            drain_deadline = now + <uint64_t>(drain_seconds * 1e9)
                        else:
                            el = now - t0
                            if times[nxt] <= el + slack:
                                if el > times[nxt] and el - times[nxt] > late_max:
                                    late_max = el - times[nxt]
                                end = nxt
                                while end < n and times[end] <= el + slack and (
                                        end - nxt < MAX_PER_WAKE):
                                    end += 1
                                while nxt < end:
                                    f = flows[nxt]
                                    ts = _now()
                                    k = 0
                                    while nxt + k < end and k < self.batch and flows[nxt + k] == f:
                                        idx = nxt + k
                                        length = lengths[idx]
                                        pkt = data + offsets[idx]
                                        h = self.hdrs + CHANNEL_HEADER * k
                                        h[0] = self.chan_be[2 * f]
                                        h[1] = self.chan_be[2 * f + 1]
                                        h[2] = <uint8_t>(length >> 8)
                                        h[3] = <uint8_t>length
                                        self.iovs[2 * k + 1].iov_base = <void *>pkt
                                        self.iovs[2 * k + 1].iov_len = length
                                        self.sent_ns[idx] = ts
                                        if is_rtcp(pkt[1]):
                                            sent_rtcp += 1
                                        bytes_sent += CHANNEL_HEADER + length
                                        k += 1
                                    r = sendmmsg(self.fds[f], self.msgs, k, MSG_DONTWAIT)
                                    if r < 0:
                                        if not _transient(errno.errno):
                                            err = errno.errno
                                            break
                                        r = 0
                                    send_errors += k - r
                                    sent += k
                                    nxt += k
                                if err:
                                    break
                    elif (received + received_rtcp + send_errors >= sent
                          or now >= drain_deadline):
                        break
                    # -- wait for replies or for the next packet's time
                    if t_send_end == 0:
                        wake = t0 + times[nxt]
                        wake = wake - slack if wake > slack else 0
                    else:
                        wake = drain_deadline
                    now = _now()
                    asked = min(wake - now, <uint64_t>2000000) if wake > now else 0
                    _set_timeout(&tmo, asked)
                    pfd.revents = 0
                    r = ppoll(&pfd, 1, &tmo, NULL)
                    late = _now() - now
                    if late > asked and late - asked > oversleep_max:
                        oversleep_max = late - asked
                    if r < 0:
                        if errno.errno == EINTR:
                            continue
                        err = errno.errno
                        break
                    if r == 0:
                        continue
                    nev = epoll_wait(epfd, events, MAX_EVENTS, 0)
                    if nev < 0:
                        if errno.errno == EINTR:
                            continue
                        err = errno.errno
                        break
                    for ev in range(nev):
                        if events[ev].data.u64 == 0xFFFFFFFFULL:
                            err = echo.service()
                            if err:
                                break
                            continue
                        j = <int>events[ev].data.u64
                        while True:
                            rx.rearm()
                            m = recvmmsg(self.fds[j], rx.msgs, rx.count, MSG_DONTWAIT, NULL)
                            if m < 0:
                                if errno.errno == ECONNREFUSED:
                                    recv_errors += 1
                                    continue
                                if _transient(errno.errno):
                                    break
                                err = errno.errno
                                break
                            now = _now()
                            for k in range(m):
                                p = <uint8_t *>rx.bufs + <size_t>k * rx.size
                                if rx.msgs[k].msg_len < CHANNEL_HEADER + RTP_HEADER or (
                                        p[0] & 0xC0) != 0x40 or (p[CHANNEL_HEADER] >> 6) != 2:
                                    other += 1
                                    continue
                                if is_rtcp(p[CHANNEL_HEADER + 1]):
                                    received_rtcp += 1
                                    continue
                                ssrc = load32(p + CHANNEL_HEADER + 8)
                                s = ssrc - self.ssrc_base
                                if s >= self.nstreams:
                                    other += 1
                                    continue
                                seq = load16(p + CHANNEL_HEADER + 2)
                                k_seq = <uint16_t>(seq - seq0[s])
                                if k_seq >= count[s]:
                                    other += 1
                                    continue
                                idx = order[start[s] + k_seq]
                                if idx >= nxt:
                                    other += 1  # not sent yet in this run: a straggler
                                    continue
                                if self.seen[idx]:
                                    dups += 1
                                    continue
                                self.seen[idx] = 1
                                received += 1
                                rtt = now - self.sent_ns[idx]
                                if rtt > 0xFFFFFFFFULL:
                                    rtt = 0xFFFFFFFFULL
                                self.rtt_buf[self.nrtts] = <uint32_t>rtt
                                self.nrtts += 1
                            if m < rx.count:
                                break
                        if err:
                            break
                    if err:
                        break
                if t_send_end == 0:
                    t_send_end = _now()
        finally:
            close(epfd)
        if err:
            _raise_errno(err)
        return {
            "sent": sent,
            "sent_rtp": sent - sent_rtcp,
            "sent_rtcp": sent_rtcp,
            "bytes_sent": bytes_sent,
            "received": received,
            "received_rtcp": received_rtcp,
            "duplicates": dups,
            "other": other,
            "send_errors": send_errors,
            "recv_errors": recv_errors,
            "send_seconds": (t_send_end - t0) / 1e9,
            "total_seconds": (_now() - t0) / 1e9,
            "late_max_seconds": late_max / 1e9,
            "oversleep_max_seconds": oversleep_max / 1e9,
        }
