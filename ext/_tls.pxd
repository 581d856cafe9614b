# The relay's TLS server side (_tls.pyx): the context the stream listeners hand their
# connections, and the BIO their records are written through. Cimported by _stream.pyx.

from libc.stdint cimport uint8_t, uint32_t

from ext._ssl cimport BIO_METHOD, SSL_CTX

# Where a connection's TLS records wait to be sent: buf[head:len], grown up to max bytes.
cdef struct Records:
    uint8_t *buf
    uint32_t head
    uint32_t len
    uint32_t cap
    uint32_t max

cdef SSL_CTX *server_context(bytes cert, bytes key) except NULL
cdef BIO_METHOD *records_method() except NULL
cdef str ssl_errors()
