# cython: language_level=3, freethreading_compatible=True
"""The relay's TLS server side, for ext/_stream.pyx's listeners (OpenSSL, linked natively).

:func:`server_context` makes the ``SSL_CTX`` a worker's TLS connections are made from: TLS 1.2
and 1.3 only, ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305) over elliptic
curves only, the certificate chain and key from PEM files, ALPN ``stun.turn`` selected when a
client offers it and never required (browsers offer none), read-ahead (one ``recv`` takes what
the socket has, not one record), partial and moving writes, buffers released when idle, and one
session ticket. Loading again (SIGHUP) makes a new context; connections keep the one they began
with (contexts are reference-counted).

:func:`records_method` is the BIO a connection writes through: ``SSL_write`` puts each message
in a record of its own and the BIO appends it to the connection's :c:type:`Records`, from
where the stream code sends a batch's records in one ``send``. Reads stay on a socket BIO.
"""

from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport realloc
from libc.string cimport memcpy, memmove

from ext._ssl cimport (
    BIO, BIO_CTRL_FLUSH, BIO_get_data, BIO_get_new_index, BIO_meth_new, BIO_meth_set_create,
    BIO_meth_set_ctrl, BIO_meth_set_write, BIO_set_init, BIO_TYPE_SOURCE_SINK, ERR_clear_error,
    ERR_error_string_n, ERR_get_error, OPENSSL_NPN_NEGOTIATED, OPENSSL_VERSION_TEXT, SSL,
    SSL_CTX_check_private_key, SSL_CTX_free, SSL_CTX_new, SSL_CTX_set1_groups_list,
    SSL_CTX_set_alpn_select_cb, SSL_CTX_set_cipher_list, SSL_CTX_set_ciphersuites,
    SSL_CTX_set_default_read_buffer_len, SSL_CTX_set_max_proto_version,
    SSL_CTX_set_min_proto_version, SSL_CTX_set_mode, SSL_CTX_set_num_tickets,
    SSL_CTX_set_options, SSL_CTX_set_read_ahead, SSL_CTX_use_certificate_chain_file,
    SSL_CTX_use_PrivateKey_file, SSL_FILETYPE_PEM, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER,
    SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_MODE_RELEASE_BUFFERS, SSL_OP_CIPHER_SERVER_PREFERENCE,
    SSL_OP_IGNORE_UNEXPECTED_EOF, SSL_OP_NO_COMPRESSION, SSL_OP_NO_RENEGOTIATION,
    SSL_select_next_proto, SSL_TLSEXT_ERR_NOACK, SSL_TLSEXT_ERR_OK, TLS1_2_VERSION,
    TLS1_3_VERSION, TLS_server_method,
)

cdef enum:
    READ_BUFFER = 65536         # read-ahead: up to this much of the socket per recv

cdef const char *ALPN = b"\x09stun.turn"
# TLS 1.2: forward secrecy and AEAD only; TLS 1.3's suites all are. No finite-field groups.
cdef const char *TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
cdef const char *TLS13_SUITES = (
    b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
cdef const char *GROUPS = b"X25519:P-256:P-384:X448:P-521"

OPENSSL_VERSION = OPENSSL_VERSION_TEXT.decode()


cdef str ssl_errors():
    """OpenSSL's queued errors as one line (and the queue emptied)."""
    cdef char text[256]
    cdef unsigned long e
    cdef list out = []
    while True:
        e = ERR_get_error()
        if e == 0:
            break
        ERR_error_string_n(e, text, sizeof(text))
        out.append(text.decode("utf-8", "replace"))
    return "; ".join(out) or "unknown error"


cdef int _alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
               const unsigned char *inp, unsigned int inlen, void *arg) noexcept nogil:
    if SSL_select_next_proto(<unsigned char **>out, outlen, <const unsigned char *>ALPN, 10,
                             inp, inlen) == OPENSSL_NPN_NEGOTIATED:
        return SSL_TLSEXT_ERR_OK
    return SSL_TLSEXT_ERR_NOACK


cdef SSL_CTX *server_context(bytes cert, bytes key) except NULL:
    """A server context from the PEM files ``cert`` (the chain) and ``key``; ValueError with
    OpenSSL's reason when they do not load or do not match."""
    cdef SSL_CTX *ctx
    ERR_clear_error()
    ctx = SSL_CTX_new(TLS_server_method())
    if ctx == NULL:
        raise MemoryError(ssl_errors())
    try:
        if (not SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)
                or not SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)
                or not SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)
                or not SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES)
                or not SSL_CTX_set1_groups_list(ctx, GROUPS)):
            raise ValueError(f"cannot configure TLS: {ssl_errors()}")
        SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION
                            | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF)
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                         | SSL_MODE_RELEASE_BUFFERS)
        SSL_CTX_set_read_ahead(ctx, 1)
        SSL_CTX_set_default_read_buffer_len(ctx, READ_BUFFER)
        SSL_CTX_set_num_tickets(ctx, 1)
        SSL_CTX_set_alpn_select_cb(ctx, _alpn, NULL)
        if SSL_CTX_use_certificate_chain_file(ctx, cert) != 1:
            raise ValueError(f"{cert.decode(errors='replace')}: {ssl_errors()}")
        if SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1:
            raise ValueError(f"{key.decode(errors='replace')}: {ssl_errors()}")
        if SSL_CTX_check_private_key(ctx) != 1:
            raise ValueError(f"the key does not match the certificate: {ssl_errors()}")
    except BaseException:
        SSL_CTX_free(ctx)
        raise
    return ctx


# --- the BIO records go through ------------------------------------------------------------

cdef BIO_METHOD *RECORDS = NULL


cdef int _bio_write(BIO *bio, const char *data, int length) noexcept nogil:
    """Append a record to the connection's Records (the BIO's data); -1 (the write fails,
    the connection is closed) when that would grow it past its maximum or memory runs out."""
    cdef Records *r = <Records *>BIO_get_data(bio)
    cdef size_t need, cap
    cdef uint8_t *nb
    if r == NULL or length < 0:
        return -1
    need = <size_t>r.len + length
    if need > r.cap and r.head:
        memmove(r.buf, r.buf + r.head, r.len - r.head)
        r.len -= r.head
        r.head = 0
        need = <size_t>r.len + length
    if need > r.cap:
        if need > r.max:
            return -1
        cap = r.cap * 2 if r.cap else 16384
        while cap < need:
            cap *= 2
        if cap > r.max:
            cap = r.max
        nb = <uint8_t *>realloc(r.buf, cap)
        if nb == NULL:
            return -1
        r.buf = nb
        r.cap = <uint32_t>cap
    memcpy(r.buf + r.len, data, length)
    r.len += <uint32_t>length
    return length


cdef long _bio_ctrl(BIO *bio, int cmd, long num, void *ptr) noexcept nogil:
    return 1 if cmd == BIO_CTRL_FLUSH else 0


cdef int _bio_create(BIO *bio) noexcept nogil:
    BIO_set_init(bio, 1)
    return 1


cdef BIO_METHOD *records_method() except NULL:
    """The BIO method of a connection's write side (made once per process)."""
    global RECORDS
    cdef BIO_METHOD *m
    if RECORDS == NULL:
        m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, b"clickacall records")
        if (m == NULL or not BIO_meth_set_write(m, _bio_write)
                or not BIO_meth_set_ctrl(m, _bio_ctrl)
                or not BIO_meth_set_create(m, _bio_create)):
            raise MemoryError(ssl_errors())
        RECORDS = m
    return RECORDS
