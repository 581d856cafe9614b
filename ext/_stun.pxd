# STUN (RFC 8489) codec: the parsed message. The header numbers and the byte-order helpers
# the codec shares with the fast path are in _wire.pxd.


cdef class Message:
    cdef readonly int method
    cdef readonly int cls
    cdef readonly bytes transaction_id
    cdef readonly list attributes
    cdef readonly Py_ssize_t integrity_offset
    cdef readonly Py_ssize_t integrity256_offset
    cdef readonly Py_ssize_t fingerprint_offset
