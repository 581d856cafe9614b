# Load generator for the relay benchmark: batched, paced ChannelData sender/receiver and an echo
# peer. Declarations only; the code is in _loadgen.pyx.

from libc.stdint cimport uint8_t, uint32_t, uint64_t
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
    """Sends every datagram it receives on one socket straight back to its source."""
    cdef int fd
    cdef _Batch batch
    cdef volatile int stopping
    cdef readonly unsigned long long packets
    cdef readonly unsigned long long bytes

    cdef int service(self) noexcept nogil


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
