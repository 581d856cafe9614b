# The engine's side of TCP and TLS clients (ext/_stream holds their connections): ChannelData
# a client framed on its stream goes to its peer in the engine's next batched send, and a peer's
# datagram is framed into the client's output buffer. Included by _fastpath.pyx at module level
# (Cython includes cannot sit in a class body): functions of the engine, not its methods.


cdef int _from_stream(Engine e, Conn *c, uint8_t *p) noexcept:
    """A TCP or TLS client's ChannelData frame (length checked): queue it to its peer."""
    cdef uint16_t chan = load16(p), dlen = load16(p + 2)
    cdef int64_t *t = e.tctr[c.transport]
    cdef int64_t now = e.stream_now
    cdef Key key
    cdef int b
    cdef Binding *bd
    cdef Slot *s
    key_init(&key, KIND_CHAN_BY_CLIENT, <uint32_t>c.listener, chan)
    key_addr(&key, &c.peer, True)
    b = index_lookup(&e.index, &key)
    if b < 0:
        e.ctr[D_NO_CHANNEL] += 1
        t[D_NO_CHANNEL] += 1
        return 0
    bd = &e.bindings[b]
    s = &e.slots[bd.slot]
    key_init(&key, KIND_PERMISSION, <uint32_t>bd.slot, 0)
    key_addr(&key, &bd.peer, False)
    if index_lookup(&e.index, &key) < 0:
        e.ctr[D_NO_PERMISSION] += 1
        t[D_NO_PERMISSION] += 1
        e.slot_ctr[bd.slot * NSLOT + S_DROPPED_PKTS] += 1
        return 0
    if e.inspecting:
        _inspect(e, bd.slot, 0, p + CHANNEL_HEADER, dlen, now)
    if not allow(s, 0, dlen, now):
        e.ctr[D_OVER_BANDWIDTH] += 1
        t[D_OVER_BANDWIDTH] += 1
        e.slot_ctr[bd.slot * NSLOT + S_DROPPED_PKTS] += 1
        e.slot_ctr[bd.slot * NSLOT + S_DROPPED_BYTES] += dlen
        return 0
    e.ctr[C_CLIENT_PKTS] += 1
    e.ctr[C_CLIENT_BYTES] += dlen
    t[C_CLIENT_PKTS] += 1
    t[C_CLIENT_BYTES] += dlen
    e.slot_ctr[bd.slot * NSLOT + S_CLIENT_PKTS] += 1
    e.slot_ctr[bd.slot * NSLOT + S_CLIENT_BYTES] += dlen
    if e.nout == 0:
        e.batch_t0 = now
    e.outs[e.nout].fd = s.relay_fd
    e.outs[e.nout].base = p + CHANNEL_HEADER
    e.outs[e.nout].length = dlen
    e.outs[e.nout].name = &bd.peer
    e.outs[e.nout].namelen = bd.peer_len
    e.nout += 1
    if e.nout == e.batch:
        _flush_streams(e)
    return 0

cdef int _flush_streams(Engine e) noexcept:
    """Send what stream clients queued towards peers (their read buffer is reused next)."""
    if e.nout:
        try:
            _flush(e, e.nout)
        except Exception:  # _flush counts its failures; nothing to raise in practice
            pass
        e._latency_note(e.batch_t0, e.nout)
        e.nout = 0
    return 0

cdef int _to_stream(Engine e, Slot *s, int slot, uint8_t *p, unsigned int length, int b,
                    const sockaddr_storage *peer) noexcept:
    """Frame a peer's datagram for a TCP or TLS client into its connection's output
    buffer: ChannelData padded to 4 bytes (RFC 8656 12.5) when the peer has a channel,
    else a Data indication. -1 when it was dropped (connection gone, buffer full)."""
    cdef int64_t *t = e.tctr[s.transport]
    cdef Conn *c = e.streams.get(s.conn) if e.streams is not None else NULL
    cdef uint8_t *f
    cdef unsigned int flen, total
    if c == NULL or c.state != CS_OPEN:
        e.ctr[D_NO_ALLOCATION] += 1
        t[D_NO_ALLOCATION] += 1
        e.slot_ctr[slot * NSLOT + S_DROPPED_PKTS] += 1
        return -1
    if b >= 0:
        f = channel_header(p, e.bindings[b].chan, length)
        flen = (length + CHANNEL_HEADER + 3) & ~(<unsigned int>3)
        memset(p + length, 0, flen - length - CHANNEL_HEADER)
    else:
        e.txn_counter += 1
        f = data_indication(p, length, peer, e.txn_prefix, e.txn_counter, &total)
        flen = total
        e.ctr[C_DATA_INDICATIONS] += 1
        t[C_DATA_INDICATIONS] += 1
    if e.streams.queue(c, <int>(s.conn & 0xFFFFFF), f, flen, True) < 0:
        e.ctr[D_BACKPRESSURE] += 1
        t[D_BACKPRESSURE] += 1
        e.slot_ctr[slot * NSLOT + S_DROPPED_PKTS] += 1
        e.slot_ctr[slot * NSLOT + S_DROPPED_BYTES] += length
        return -1
    e.ctr[C_PEER_PKTS] += 1
    e.ctr[C_PEER_BYTES] += length
    t[C_PEER_PKTS] += 1
    t[C_PEER_BYTES] += length
    e.slot_ctr[slot * NSLOT + S_PEER_PKTS] += 1
    e.slot_ctr[slot * NSLOT + S_PEER_BYTES] += length
    return 0
