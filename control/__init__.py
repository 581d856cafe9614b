"""Clickacall control plane: sessions, tokens, relay selection, signalling, call records.

``clickacall control`` (:mod:`control.server`) serves the HTTP API (:mod:`control.api`) built by
:func:`control.app.create_app` over a :class:`control.store.Store` (SQLite or PostgreSQL).
"""
