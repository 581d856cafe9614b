# Declarations of the OpenSSL (libssl, libcrypto 1.1.1 or 3.x) API the stream listeners use:
# a server context, non-blocking handshakes, reads and writes on a socket; and the client side
# the benchmark's TLS load uses. Declarations only (cimport): ext/_tls.pyx and ext/_stream.pyx
# (the relay's TLS listeners) and ext/_streamgen.pyx (the benchmark's TLS clients) link libssl.

from libc.stdint cimport uint64_t

cdef extern from "<openssl/ssl.h>" nogil:
    ctypedef struct SSL_CTX:
        pass

    ctypedef struct SSL:
        pass

    ctypedef struct SSL_METHOD:
        pass

    ctypedef struct BIO:
        pass

    ctypedef struct BIO_METHOD:
        pass

    ctypedef int (*bio_write_cb)(BIO *bio, const char *data, int length) noexcept
    ctypedef long (*bio_ctrl_cb)(BIO *bio, int cmd, long num, void *ptr) noexcept
    ctypedef int (*bio_create_cb)(BIO *bio) noexcept

    int BIO_get_new_index()
    BIO_METHOD *BIO_meth_new(int kind, const char *name)
    int BIO_meth_set_write(BIO_METHOD *method, bio_write_cb write)
    int BIO_meth_set_ctrl(BIO_METHOD *method, bio_ctrl_cb ctrl)
    int BIO_meth_set_create(BIO_METHOD *method, bio_create_cb create)
    BIO *BIO_new(const BIO_METHOD *method)
    BIO *BIO_new_socket(int fd, int close_flag)
    int BIO_free(BIO *bio)
    void BIO_set_data(BIO *bio, void *ptr)
    void *BIO_get_data(BIO *bio)
    void BIO_set_init(BIO *bio, int init)
    void SSL_set_bio(SSL *ssl, BIO *rbio, BIO *wbio)
    int BIO_NOCLOSE
    int BIO_TYPE_SOURCE_SINK
    int BIO_CTRL_FLUSH

    ctypedef int (*alpn_select_cb)(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                                   const unsigned char *inp, unsigned int inlen,
                                   void *arg) noexcept

    const SSL_METHOD *TLS_server_method()
    const SSL_METHOD *TLS_client_method()
    SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
    void SSL_CTX_free(SSL_CTX *ctx)
    int SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version)
    int SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version)
    int SSL_CTX_set_cipher_list(SSL_CTX *ctx, const char *ciphers)
    int SSL_CTX_set_ciphersuites(SSL_CTX *ctx, const char *suites)
    int SSL_CTX_set1_groups_list(SSL_CTX *ctx, const char *groups)
    uint64_t SSL_CTX_set_options(SSL_CTX *ctx, uint64_t options)
    long SSL_CTX_set_mode(SSL_CTX *ctx, long mode)
    void SSL_CTX_set_read_ahead(SSL_CTX *ctx, int yes)
    void SSL_CTX_set_default_read_buffer_len(SSL_CTX *ctx, size_t length)
    int SSL_CTX_set_num_tickets(SSL_CTX *ctx, size_t tickets)
    int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *path)
    int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *path, int kind)
    int SSL_CTX_check_private_key(const SSL_CTX *ctx)
    void SSL_CTX_set_alpn_select_cb(SSL_CTX *ctx, alpn_select_cb cb, void *arg)
    int SSL_select_next_proto(unsigned char **out, unsigned char *outlen,
                              const unsigned char *server, unsigned int server_len,
                              const unsigned char *client, unsigned int client_len)

    SSL *SSL_new(SSL_CTX *ctx)
    void SSL_free(SSL *ssl)
    int SSL_set_fd(SSL *ssl, int fd)
    void SSL_set_accept_state(SSL *ssl)
    int SSL_connect(SSL *ssl)
    int SSL_do_handshake(SSL *ssl)
    int SSL_read(SSL *ssl, void *buf, int num)
    int SSL_write(SSL *ssl, const void *buf, int num)
    int SSL_shutdown(SSL *ssl)
    int SSL_get_error(const SSL *ssl, int ret)
    int SSL_has_pending(const SSL *ssl)
    const char *SSL_get_version(const SSL *ssl)
    const char *SSL_get_cipher_name(const SSL *ssl)
    void SSL_get0_alpn_selected(const SSL *ssl, const unsigned char **data, unsigned int *length)

    int TLS1_2_VERSION
    int TLS1_3_VERSION
    int SSL_FILETYPE_PEM
    uint64_t SSL_OP_NO_COMPRESSION
    uint64_t SSL_OP_NO_RENEGOTIATION
    uint64_t SSL_OP_CIPHER_SERVER_PREFERENCE
    long SSL_MODE_ENABLE_PARTIAL_WRITE
    long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
    long SSL_MODE_RELEASE_BUFFERS
    int SSL_ERROR_NONE
    int SSL_ERROR_WANT_READ
    int SSL_ERROR_WANT_WRITE
    int SSL_ERROR_ZERO_RETURN
    int SSL_ERROR_SYSCALL
    int SSL_ERROR_SSL
    int SSL_TLSEXT_ERR_OK
    int SSL_TLSEXT_ERR_NOACK
    int OPENSSL_NPN_NEGOTIATED

# OpenSSL 3.0: a peer that closes without close_notify is an ordinary end of stream
cdef extern from * nogil:
    """
    #include <openssl/ssl.h>
    #ifndef SSL_OP_IGNORE_UNEXPECTED_EOF
    #define SSL_OP_IGNORE_UNEXPECTED_EOF 0
    #endif
    """
    uint64_t SSL_OP_IGNORE_UNEXPECTED_EOF

cdef extern from "<openssl/err.h>" nogil:
    unsigned long ERR_get_error()
    void ERR_clear_error()
    void ERR_error_string_n(unsigned long e, char *buf, size_t length)

cdef extern from "<openssl/opensslv.h>" nogil:
    const char *OPENSSL_VERSION_TEXT
