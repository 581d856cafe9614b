"""Clickacall Cython extensions: STUN codec, forwarding fast path, load generator."""
