# Declarations of the Linux socket, epoll, eventfd and clock API the extensions use (cimport
# only: no module behind it, and no code but one inline clock read).

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.uio cimport iovec

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    int AF_INET
    int AF_INET6
    int SOL_SOCKET
    int MSG_DONTWAIT
    int MSG_TRUNC
    int SO_RXQ_OVFL

    int SOCK_NONBLOCK
    int SOCK_CLOEXEC
    int MSG_NOSIGNAL
    int SO_LINGER

    struct linger:
        int l_onoff
        int l_linger

    int accept4(int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int sendmsg(int fd, const msghdr *msg, int flags)
    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, timespec *timeout)
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                   const sockaddr *addr, socklen_t addr_len)
    cmsghdr *CMSG_FIRSTHDR(msghdr *msgh)
    cmsghdr *CMSG_NXTHDR(msghdr *msgh, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        uint8_t s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    uint16_t htons(uint16_t)
    uint16_t ntohs(uint16_t)
    uint32_t htonl(uint32_t)
    uint32_t ntohl(uint32_t)

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    int INET6_ADDRSTRLEN

cdef extern from "<errno.h>" nogil:
    int errno
    int EAGAIN
    int EWOULDBLOCK
    int EINTR
    int ECONNREFUSED
    int EIO
    int EINVAL
    int EMSGSIZE
    int EMFILE
    int ECONNRESET
    int EPIPE
    int ENFILE
    int ENOBUFS
    int ENOMEM
    int ECONNABORTED
    int EPROTO
    int EPERM

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CLOEXEC
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLLIN
    int EPOLLOUT
    int EPOLLERR
    int EPOLLHUP
    int EPOLL_CTL_MOD

cdef extern from "<netinet/tcp.h>" nogil:
    int IPPROTO_TCP
    int TCP_NODELAY

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "<fcntl.h>" nogil:
    int open(const char *path, int flags)
    int O_RDONLY
    int O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t write(int fd, const void *buf, size_t n)

# UDP generic segmentation offload (Linux 4.18): one send, the kernel cuts it into datagrams
cdef extern from * nogil:
    """
    #include <netinet/in.h>
    #ifndef SOL_UDP
    #define SOL_UDP 17
    #endif
    #ifndef UDP_SEGMENT
    #define UDP_SEGMENT 103
    #endif
    """
    int SOL_UDP
    int UDP_SEGMENT


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec
