"""The relay's TLS server side (Cython, OpenSSL): the listeners' context and the BIO their
records go through; used from ext/_stream.pyx, nothing to call from Python but the version."""

from typing import Final

OPENSSL_VERSION: Final[str]  # the OpenSSL the extension was built against
