/* Plain C UDP forwarder: the benchmark's lower bound for a relay on one thread.
 *
 *   cfwd LISTEN_PORT ECHO_PORT
 *
 * Every datagram arriving on 127.0.0.1:LISTEN_PORT is sent on to 127.0.0.1:ECHO_PORT through a
 * second socket; every datagram coming back from there goes to the last client address seen.
 * No parsing. Batched with recvmmsg/sendmmsg. Prints "ready" once bound; runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUF 2048

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
    while (done < n) {
        int r = sendmmsg(fd, msgs + done, n - done, 0);
        if (r < 0) {
            if (transient(errno)) return;
            die("sendmmsg");
        }
        done += r;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LISTEN_PORT ECHO_PORT\n", argv[0]);
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
    printf("ready\n");
    fflush(stdout);

    struct pollfd pfds[2] = {{.fd = front, .events = POLLIN}, {.fd = back, .events = POLLIN}};
    for (;;) {
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
                if (have_client) send_batch(front, n);
                if (n < BATCH) break;
            }
        }
    }
}
