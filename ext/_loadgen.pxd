# Load generator for the relay benchmark: batched, paced ChannelData sender/receiver and an echo
# peer. Declarations only; the code is in _loadgen.pyx.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from posix.time cimport timespec
from posix.uio cimport iovec

from ext._sys cimport mmsghdr, sockaddr_storage

cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t

    struct pollfd:
        int fd
        short events
        short revents

    short POLLIN
    int ppoll(pollfd *fds, nfds_t nfds, const timespec *tmo, const void *sigmask)

# Payload layout after the 4-byte ChannelData header:
#   [0:12) an RTP header (RFC 3550, network order): V=2, PT 111, the flow's own 16-bit
#          sequence, a 48 kHz timestamp from the send time, SSRC 0x10000 + flow index, so
#          the relay's RTP inspection does its real per-packet work in the benchmark
#   [12:20) sequence number   [20:28) send time, CLOCK_MONOTONIC ns (native order, both ends
#          are us)
cdef enum:
    STAMP_LEN = 28
    MAX_FLOWS = 64


cdef class _Batch:
    """Preallocated recvmmsg/sendmmsg vectors: ``count`` buffers of ``size`` bytes each."""
    cdef int count
    cdef int size
    cdef mmsghdr *msgs
    cdef iovec *iovs
    cdef sockaddr_storage *names
    cdef char *bufs

    cdef void rearm(self) noexcept nogil


cdef class Echo:
    """Sends every datagram it receives on one socket (or on each socket of an epoll set)
    straight back to its source."""
    cdef int fd
    cdef bint is_epoll           # fd is an epoll set whose events carry the sockets' fds
    cdef _Batch batch
    cdef volatile int stopping
    cdef readonly unsigned long long packets
    cdef readonly unsigned long long bytes

    cdef int service(self) noexcept nogil
    cdef int _serve(self, int fd) noexcept nogil


cdef class Generator:
    """Paced ChannelData flows over connected UDP sockets, with loss and round-trip accounting."""
    cdef int nflows
    cdef int fds[MAX_FLOWS]
    cdef unsigned int channels[MAX_FLOWS]
    cdef int payload
    cdef _Batch tx
    cdef _Batch rx
    cdef uint32_t *rtt_buf
    cdef uint8_t *seen
    cdef uint64_t capacity
    cdef uint64_t nrtts

    cdef int _reserve(self, uint64_t count) except -1


cdef class Replay:
    """Plays a prepared schedule of packets (a call workload: SRTP/SRTCP made in Python) over
    connected UDP sockets, one per flow, each packet at its own send time, with loss and
    round-trip accounting by (SSRC, RTP sequence number)."""
    cdef int nflows
    cdef int *fds
    cdef uint8_t *chan_be  # per flow, the channel number in network order (2 bytes)
    cdef uint64_t npackets
    cdef uint32_t nstreams
    cdef uint32_t ssrc_base
    cdef int batch
    # the schedule (validated once in __cinit__; the memoryviews keep the buffers alive)
    cdef const uint8_t[::1] data
    cdef const uint64_t[::1] offsets
    cdef const uint16_t[::1] lengths
    cdef const uint32_t[::1] flows
    cdef const uint64_t[::1] times
    cdef const uint16_t[::1] seq0
    cdef const uint32_t[::1] start
    cdef const uint32_t[::1] count
    cdef const uint32_t[::1] order
    # per run
    cdef uint64_t *sent_ns
    cdef uint8_t *seen
    cdef uint32_t *rtt_buf
    cdef uint64_t nrtts
    # send vectors: two iovecs per message (4-byte ChannelData header, packet in ``data``)
    cdef mmsghdr *msgs
    cdef iovec *iovs
    cdef uint8_t *hdrs
    cdef _Batch rx

    cdef int _flush(self) noexcept nogil
