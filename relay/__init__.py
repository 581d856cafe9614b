"""Clickacall relay node: TURN/STUN over UDP with a Cython fast path."""
