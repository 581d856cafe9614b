"""Relay-only signalling, sans-I/O: what of a party's ICE candidates the other may see.

On a relay-only link (the default) neither party may learn the other's address, so signalling
passes only ``typ relay`` candidates (whose address is the relay's). :func:`screen` looks at
one signalling message:

- a ``candidate`` message whose candidate is an ICE candidate of another type (host, srflx,
  prflx) or names an mDNS ``.local`` host is dropped whole;
- an ``offer`` or ``answer`` keeps its SDP minus every ``a=candidate`` line that is not a
  relay one, and its ``c=`` / ``a=rtcp:`` addresses become ``0.0.0.0`` (or ``::``) unless they
  are a kept relay candidate's;
- a relay candidate passes with its related address (``raddr``/``rport``: the party's own
  address, which some browsers fill in) blanked;
- anything else passes as is (an empty candidate ends gathering; text that is no ICE
  candidate at all carries no address a browser would use).

It returns the message to pass on (None: drop it) and the type of each candidate it removed
(``host``, ``srflx``, ``prflx``, ``mdns``, ``other``), for the metrics.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final

_TYP: Final = re.compile(r"(?:^|\s)typ\s+(\S+)", re.IGNORECASE)
_CANDIDATE: Final = re.compile(r"^(?:a=)?candidate:", re.IGNORECASE)
_KNOWN: Final = ("host", "srflx", "prflx", "relay")
RELAY: Final = "relay"
MDNS: Final = "mdns"
OTHER: Final = "other"


def candidate_type(text: str) -> str | None:
    """``host``, ``srflx``, ``prflx``, ``relay``, ``mdns`` (a ``.local`` address, whatever
    its type claims), ``other`` (an ICE candidate of no known type), or None for text that is
    no ICE candidate."""
    text = text.strip()
    fields = text.split()
    if len(fields) >= 5 and fields[4].lower().rstrip(".").endswith(".local"):
        return MDNS
    if ".local " in text.lower():
        return MDNS
    typ = _TYP.search(text)
    if typ is not None:
        kind = typ.group(1).lower()
        return kind if kind in _KNOWN else OTHER
    return OTHER if _CANDIDATE.match(text) else None


_RADDR: Final = re.compile(r"(\sraddr\s+)(\S+)(\s+rport\s+)(\d+)", re.IGNORECASE)


def redact(text: str) -> str:
    """A candidate with its related address and port blanked."""
    return _RADDR.sub(lambda m: f"{m.group(1)}{_blank(m.group(2))}{m.group(3)}0", text)


def _address(text: str) -> str | None:
    """The connection address of a candidate line (its fifth field)."""
    fields = text.strip().split()
    return fields[4].lower() if len(fields) >= 6 else None


def _candidate_text(message: dict[str, Any]) -> str | None:
    value = message.get("candidate")
    if isinstance(value, dict):
        value = value.get("candidate")
    return value if isinstance(value, str) else None


def _blank(address: str) -> str:
    try:
        return "::" if ipaddress.ip_address(address).version == 6 else "0.0.0.0"
    except ValueError:
        return "0.0.0.0"


def strip_sdp(sdp: str) -> tuple[str, list[str]]:
    """``sdp`` without its non-relay candidate lines, with ``c=`` and ``a=rtcp:`` addresses
    that are no kept relay candidate's blanked; and the types removed."""
    lines = sdp.split("\n")
    dropped: list[str] = []
    kept: list[str] = []
    relays: set[str] = set()
    for line in lines:
        body = line.rstrip("\r")
        if body.lower().startswith("a=candidate:"):
            kind = candidate_type(body[2:]) or OTHER
            if kind != RELAY:
                dropped.append(kind)
                continue
            address = _address(body[2:])
            if address:
                relays.add(address)
            line = redact(body) + line[len(body) :]
        kept.append(line)
    out: list[str] = []
    for line in kept:
        body = line.rstrip("\r")
        end = line[len(body) :]
        low = body.lower()
        if low.startswith("c=in ip4 ") or low.startswith("c=in ip6 "):
            address = body[9:].split("/")[0].strip()
            if address.lower() not in relays:
                body = body[:9] + _blank(address)
        elif low.startswith("a=rtcp:"):
            parts = body.split()
            if len(parts) == 4 and parts[3].lower() not in relays:
                parts[3] = _blank(parts[3])
                body = " ".join(parts)
        out.append(body + end)
    return "\n".join(out), dropped


def screen(message: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """One signalling message as a relay-only link passes it (see the module's doc)."""
    kind = message.get("type")
    if kind == "candidate":
        text = _candidate_text(message)
        found = candidate_type(text) if text else None
        if found is None:
            return message, []
        if found != RELAY:
            return None, [found]
        value = message["candidate"]
        if isinstance(value, dict):
            return {**message, "candidate": {**value, "candidate": redact(value["candidate"])}}, []
        return {**message, "candidate": redact(value)}, []
    if kind in ("offer", "answer"):
        sdp = message.get("sdp")
        if isinstance(sdp, dict) and isinstance(sdp.get("sdp"), str):
            stripped, dropped = strip_sdp(sdp["sdp"])
            return {**message, "sdp": {**sdp, "sdp": stripped}}, dropped
        if isinstance(sdp, str):
            stripped, dropped = strip_sdp(sdp)
            return {**message, "sdp": stripped}, dropped
    return message, []
