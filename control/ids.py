"""The one definition of what an id looks like, and how long a page may be.

Every id the control plane mints or accepts (tenants, staff, links, calls, tokens, API key ids,
public link ids) is 1-128 characters of ``[A-Za-z0-9_.-]``: safe in a URL path, a log line, a
TURN REST username and a Prometheus label value without escaping. Keyset cursors are
``<created_at>~<id>``.
"""

from __future__ import annotations

import re
from typing import Final

ID_CHARS: Final = "A-Za-z0-9_.-"
MAX_ID_LEN: Final = 128
ID_PATTERN: Final = rf"^[{ID_CHARS}]{{1,{MAX_ID_LEN}}}$"
CURSOR_PATTERN: Final = rf"^[0-9A-Za-z.+-]{{1,40}}~[{ID_CHARS}]{{1,{MAX_ID_LEN}}}$"

MAX_PAGE: Final = 1000  # rows in one page of any listing
DEFAULT_PAGE: Final = 100

_ID_RE: Final = re.compile(ID_PATTERN)


def is_id(value: object) -> bool:
    """True if ``value`` is a well-formed id."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None
