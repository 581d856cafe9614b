/* Plain C UDP forwarder: the benchmark's lower bound for a relay on one thread.
 *
 *   cfwd LISTEN_PORT ECHO_PORT [gso]
 *
 * Every datagram arriving on 127.0.0.1:LISTEN_PORT is sent on to 127.0.0.1:ECHO_PORT through a
 * second socket; every datagram coming back from there goes to the last client address seen.
 * No parsing. Batched with recvmmsg/sendmmsg. Prints "ready" once bound; runs until killed.
 *
 * With "gso" (the benchmark's cfwd-gso), the kernel's best for the same job: each received
 * batch leaves in one sendmmsg whose entries are runs of datagrams coalesced with UDP_SEGMENT
 * (every datagram of a run the run's first size, the last one possibly shorter, at most 64
 * datagrams and 64 KB), the run's datagrams given as one iovec each, straight from the receive
 * buffers. As every datagram of one direction goes to one address here, a run is only cut by
 * sizes: equal-sized packets (a flood, a video frame) leave as one message. Exits when the
 * kernel has no UDP_SEGMENT (Linux < 4.18).
 *
 * On SIGTERM it prints what it sent (datagrams, send messages, UDP_SEGMENT messages) and exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define BATCH 64
#define BUF 2048
#define GSO_MAX_SEGS 64      /* UDP_MAX_SEGMENTS on every kernel that has UDP_SEGMENT */
#define GSO_MAX_BYTES 65000  /* one UDP datagram's payload limit, with room for headers */

static struct mmsghdr msgs[BATCH];
static struct iovec iovs[BATCH];
static struct sockaddr_in names[BATCH];
static char bufs[BATCH][BUF];

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void rearm(int with_names) {
    for (int i = 0; i < BATCH; i++) {
        iovs[i].iov_base = bufs[i];
        iovs[i].iov_len = BUF;
        memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (with_names) {
            msgs[i].msg_hdr.msg_name = &names[i];
            msgs[i].msg_hdr.msg_namelen = sizeof(names[i]);
        }
    }
}

/* GSO: one sendmmsg entry per run of datagrams, each with its UDP_SEGMENT control message */
static struct mmsghdr gmsgs[BATCH];
static union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
} gctl[BATCH];
static int gso;

static volatile sig_atomic_t stopping;
static unsigned long long sent_dgrams, sent_msgs, sent_gso;

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

static int transient(int err) {
    return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == ECONNREFUSED ||
           err == EINTR;
}

static int udp_socket(void) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int size = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0) die("SO_RCVBUF");
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)) < 0) die("SO_SNDBUF");
    return fd;
}

/* Send n received messages (iov_len already set) out of fd; drop what the kernel refuses. */
static void send_batch(int fd, int n) {
    int done = 0;
    sent_dgrams += (unsigned long long)n;
    sent_msgs += (unsigned long long)n;
    while (done < n) {
        int r = sendmmsg(fd, msgs + done, n - done, 0);
        if (r < 0) {
            if (transient(errno)) return;
            die("sendmmsg");
        }
        done += r;
    }
}

/* Send n received datagrams (iov_len already set) out of fd to `to` (NULL: fd is connected),
 * runs of them coalesced with UDP_SEGMENT; drop what the kernel refuses. */
static void send_gso(int fd, int n, struct sockaddr_in *to) {
    int g = 0;
    for (int i = 0; i < n;) {
        size_t seg = iovs[i].iov_len, total = seg;
        int j = i + 1;
        while (seg > 0 && j < n && j - i < GSO_MAX_SEGS) {
            size_t len = iovs[j].iov_len;
            if (len == 0 || len > seg || total + len > GSO_MAX_BYTES) break;
            total += len;
            j++;
            if (len < seg) break; /* a shorter datagram ends its run */
        }
        struct msghdr *h = &gmsgs[g].msg_hdr;
        memset(h, 0, sizeof(*h));
        h->msg_iov = &iovs[i];
        h->msg_iovlen = (size_t)(j - i);
        if (to != NULL) {
            h->msg_name = to;
            h->msg_namelen = sizeof(*to);
        }
        if (j - i > 1) {
            sent_gso++;
            h->msg_control = gctl[g].buf;
            h->msg_controllen = sizeof(gctl[g].buf);
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t size = (uint16_t)seg;
            memcpy(CMSG_DATA(c), &size, sizeof(size));
        }
        g++;
        i = j;
    }
    sent_dgrams += (unsigned long long)n;
    sent_msgs += (unsigned long long)g;
    int done = 0;
    while (done < g) {
        int r = sendmmsg(fd, gmsgs + done, (unsigned)(g - done), 0);
        if (r < 0) {
            if (transient(errno)) return;
            die("sendmmsg (UDP_SEGMENT)");
        }
        done += r;
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[3], "gso") == 0) {
        gso = 1;
    } else if (argc != 3) {
        fprintf(stderr, "usage: %s LISTEN_PORT ECHO_PORT [gso]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in listen_addr = {.sin_family = AF_INET};
    struct sockaddr_in echo_addr = {.sin_family = AF_INET};
    struct sockaddr_in client = {0};
    int have_client = 0;
    listen_addr.sin_port = htons((unsigned short)atoi(argv[1]));
    echo_addr.sin_port = htons((unsigned short)atoi(argv[2]));
    inet_pton(AF_INET, "127.0.0.1", &listen_addr.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &echo_addr.sin_addr);

    int front = udp_socket(), back = udp_socket();
    if (bind(front, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) < 0) die("bind");
    if (connect(back, (struct sockaddr *)&echo_addr, sizeof(echo_addr)) < 0) die("connect");
    if (gso) { /* probe: the kernel takes UDP_SEGMENT (0: no default segment size) */
        int zero = 0;
        if (setsockopt(back, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) < 0) die("UDP_SEGMENT");
    }
    printf("ready\n");
    fflush(stdout);

    struct sigaction sa = {.sa_handler = on_term}; /* no SA_RESTART: poll returns EINTR */
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0) die("sigaction");
    struct pollfd pfds[2] = {{.fd = front, .events = POLLIN}, {.fd = back, .events = POLLIN}};
    while (!stopping) {
        if (poll(pfds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (pfds[0].revents & POLLIN) {
            for (;;) {
                rearm(1);
                int n = recvmmsg(front, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (n < 0) {
                    if (transient(errno)) break;
                    die("recvmmsg");
                }
                for (int i = 0; i < n; i++) {
                    iovs[i].iov_len = msgs[i].msg_len;
                    msgs[i].msg_hdr.msg_name = NULL; /* back is connected */
                    msgs[i].msg_hdr.msg_namelen = 0;
                }
                if (n > 0) {
                    client = names[n - 1];
                    have_client = 1;
                }
                if (gso)
                    send_gso(back, n, NULL);
                else
                    send_batch(back, n);
                if (n < BATCH) break;
            }
        }
        if (pfds[1].revents & POLLIN) {
            for (;;) {
                rearm(0);
                int n = recvmmsg(back, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (n < 0) {
                    if (transient(errno)) break;
                    die("recvmmsg");
                }
                for (int i = 0; i < n; i++) {
                    iovs[i].iov_len = msgs[i].msg_len;
                    msgs[i].msg_hdr.msg_name = &client;
                    msgs[i].msg_hdr.msg_namelen = sizeof(client);
                }
                if (have_client && gso)
                    send_gso(front, n, &client);
                else if (have_client)
                    send_batch(front, n);
                if (n < BATCH) break;
            }
        }
    }
    printf("sent %llu datagrams in %llu messages, %llu of them UDP_SEGMENT\n", sent_dgrams,
           sent_msgs, sent_gso);
    return 0;
}
