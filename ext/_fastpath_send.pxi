# The engine's batched send: what one drain decided to send (``outs``), one ``sendmmsg`` per
# distinct socket, runs of same-size datagrams to one destination merged into UDP_SEGMENT
# (GSO) messages. Included by _fastpath.pyx at module level: a function of the engine.


cdef int _send_apart(int64_t *ctr, int fd, mmsghdr *m) noexcept nogil:
    """Send a GSO message's datagrams one sendmsg each; returns how many failed."""
    cdef msghdr h
    cdef size_t t
    cdef int failed = 0
    memset(&h, 0, sizeof(msghdr))
    h.msg_name = m.msg_hdr.msg_name
    h.msg_namelen = m.msg_hdr.msg_namelen
    h.msg_iovlen = 1
    for t in range(m.msg_hdr.msg_iovlen):
        h.msg_iov = &m.msg_hdr.msg_iov[t]
        if sendmsg(fd, &h, MSG_DONTWAIT) < 0:
            failed += 1
        ctr[C_SEND_CALLS] += 1
    return failed


cdef int _flush(Engine e, int n) except -1:
    """Send outs[0:n], one sendmmsg per distinct socket. With GSO on, a run of datagrams
    to one destination (same socket, same address) goes as one message that the kernel
    cuts into datagrams (UDP_SEGMENT): every one but the last of the same size, none
    larger than GSO_MAX_SEG, so that no path MTU (IPv6's minimum is 1280) is exceeded.
    Order towards each destination is kept; order across destinations need not be."""
    cdef int i, j, k, m, v, r, fd, err, segs, tries
    cdef size_t seg, total
    cdef cmsghdr *c
    cdef mmsghdr *msg
    for i in range(n):
        e.outs[i].sent = 0
    for i in range(n):
        if e.outs[i].sent:
            continue
        fd = e.outs[i].fd
        m = v = 0
        for j in range(i, n):
            if e.outs[j].sent or e.outs[j].fd != fd:
                continue
            e.outs[j].sent = 1
            msg = &e.smsgs[m]
            memset(msg, 0, sizeof(mmsghdr))
            msg.msg_hdr.msg_name = e.outs[j].name
            msg.msg_hdr.msg_namelen = e.outs[j].namelen
            msg.msg_hdr.msg_iov = &e.siovs[v]
            e.siovs[v].iov_base = e.outs[j].base
            e.siovs[v].iov_len = e.outs[j].length
            v += 1
            segs = 1
            seg = total = e.outs[j].length
            if e.gso and seg <= GSO_MAX_SEG:
                for k in range(j + 1, n):
                    if (e.outs[k].sent or e.outs[k].fd != fd
                            or e.outs[k].name != e.outs[j].name):
                        continue
                    if (e.outs[k].length > seg or segs == GSO_MAX_SEGS
                            or total + e.outs[k].length > GSO_MAX_BYTES):
                        break
                    e.outs[k].sent = 1
                    e.siovs[v].iov_base = e.outs[k].base
                    e.siovs[v].iov_len = e.outs[k].length
                    v += 1
                    segs += 1
                    total += e.outs[k].length
                    if e.outs[k].length < seg:
                        break  # a shorter datagram can only end a GSO message
            msg.msg_hdr.msg_iovlen = segs
            e.spkts[m] = segs
            if segs > 1:
                c = <cmsghdr *>(e.gcbufs + m * GCBUF)
                c.cmsg_len = CMSG_LEN(sizeof(uint16_t))
                c.cmsg_level = SOL_UDP
                c.cmsg_type = UDP_SEGMENT
                (<uint16_t *>CMSG_DATA(c))[0] = <uint16_t>seg
                msg.msg_hdr.msg_control = c
                msg.msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
                e.ctr[C_GSO_MESSAGES] += 1
            m += 1
        k = 0
        tries = 0
        while k < m:
            r = sendmmsg(fd, e.smsgs + k, m - k, MSG_DONTWAIT)
            err = errno
            e.ctr[C_SEND_CALLS] += 1
            if r > 0:
                k += r
                continue
            tries += 1
            if r < 0 and _want_retry(err) and tries < 4:
                continue
            if r < 0 and e.spkts[k] > 1 and (err == EIO or err == EINVAL
                                             or err == EMSGSIZE):
                # the route cannot take a GSO message (no checksum offload, IPsec, a
                # smaller MTU): send its datagrams one by one; EIO will not go away
                if err == EIO:
                    e.gso = 0
                e.ctr[C_GSO_FALLBACKS] += 1
                e.ctr[D_SEND_FAILED] += _send_apart(e.ctr, fd, &e.smsgs[k])
                k += 1
                continue
            # this message failed (full buffer, unreachable, ...): count it, go on
            e.ctr[D_SEND_FAILED] += e.spkts[k]
            k += 1
    return 0
