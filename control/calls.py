"""The call state machine, who a link rings, and whether it is open (sans-I/O).

::

    RINGING --answer--> ANSWERED --hang_up (either side)--> ENDED
       |                   \\--fail--> FAILED
       |--expire (ring timeout passed)--> MISSED
       |--reject (every rung staff member declined)--> REJECTED
       |--hang_up by the visitor--> ABANDONED
       \\--fail--> FAILED

MISSED, REJECTED, ABANDONED, ENDED and FAILED are final. Every function here takes a call and
returns the call as it should be stored next (a new object; the one passed in is untouched),
or raises. Persistence writes it with a compare-and-set on the previous status, so of two
staff answering at once one write wins and the other gets :class:`CallConflict` when it
retries against the stored state.

Nothing here does I/O or reads the clock; callers pass ``now`` (Unix seconds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic_core import PydanticCustomError

from control.models import (
    FINAL_STATUSES,
    Call,
    CallStatus,
    Link,
    OpeningHours,
    Presence,
    Role,
    Staff,
)

MINUTES_PER_DAY: Final = 24 * 60
CONSOLE_SEEN: Final = 90.0  # a member whose console was active this recently is "on console"

# end_reason values the machine writes itself
HUNG_UP_BY_VISITOR: Final = "visitor hung up"
HUNG_UP_BY_STAFF: Final = "staff hung up"
VISITOR_LEFT: Final = "visitor left before an answer"
NO_ANSWER: Final = "no answer"
ALL_DECLINED: Final = "every rung staff member declined"


class CallError(Exception):
    """Base of everything the call machine refuses."""


class InvalidTransition(CallError):
    """The call's state does not allow this (e.g. anything on a call that is over)."""


class CallConflict(InvalidTransition):
    """Someone else got there first: the call was already answered."""


class NotRung(CallError):
    """The staff member is not one this call rings."""


class LinkUnavailable(CallError):
    """A link that cannot take calls now; ``reason`` is "inactive" or "closed"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _live(call: Call, action: str) -> None:
    if call.status in FINAL_STATUSES:
        raise InvalidTransition(f"cannot {action} call {call.id}: it is already {call.status}")


def deadline(call: Call, ring_timeout: float) -> float:
    """When a ringing call becomes missed: ``ring_timeout`` seconds after it started."""
    return call.created_at + ring_timeout


def ring(call: Call, now: float) -> Call:
    """Start a freshly created call ringing at ``now`` (stamps ``created_at``).

    Only a call that has never moved may start: re-ringing would restart its ring timeout.
    """
    _live(call, "ring")
    if call.status is not CallStatus.RINGING or call.answered_at is not None:
        raise InvalidTransition(f"cannot ring call {call.id}: it is already {call.status}")
    return dataclasses.replace(call, created_at=now, ended_at=None, end_reason=None)


def answer(
    call: Call,
    staff_id: str,
    now: float,
    *,
    rung_staff: Collection[str] | None = None,
    ring_timeout: float | None = None,
) -> Call:
    """``staff_id`` answers: RINGING -> ANSWERED, stamping ``answered_at``/``answered_by``.

    An answered call raises :class:`CallConflict` (the first answer won). When given,
    ``rung_staff`` must contain ``staff_id`` (else :class:`NotRung`), and ``ring_timeout``
    refuses an answer at or after the deadline even if no sweep has marked the call missed
    yet (:class:`InvalidTransition`: the caller should :func:`expire` it).
    """
    _live(call, "answer")
    if call.status is CallStatus.ANSWERED:
        who = "you" if call.answered_by == staff_id else "someone else"
        raise CallConflict(f"call {call.id} was already answered by {who}")
    if rung_staff is not None and staff_id not in rung_staff:
        raise NotRung(f"call {call.id} does not ring staff member {staff_id}")
    if ring_timeout is not None and now >= deadline(call, ring_timeout):
        raise InvalidTransition(f"call {call.id} stopped ringing: nobody answered in time")
    return dataclasses.replace(
        call, status=CallStatus.ANSWERED, answered_at=now, answered_by=staff_id
    )


def reject(
    call: Call,
    staff_id: str,
    now: float,
    *,
    rung_staff: Collection[str],
    rejected: Collection[str] = (),
) -> Call:
    """``staff_id`` declines a ringing call.

    ``rung_staff`` is everyone the call rings (:func:`rung_staff` ids) and ``rejected`` those
    who declined before (persistence keeps that list). When every rung member has now
    declined the call becomes REJECTED (``ended_at`` stamped); otherwise it keeps ringing
    for the others and the call comes back unchanged.
    """
    _live(call, "reject")
    if call.status is not CallStatus.RINGING:
        raise CallConflict(f"call {call.id} was already answered")
    if staff_id not in rung_staff:
        raise NotRung(f"call {call.id} does not ring staff member {staff_id}")
    declined = set(rejected) | {staff_id}
    if all(s in declined for s in rung_staff):
        return dataclasses.replace(
            call, status=CallStatus.REJECTED, ended_at=now, end_reason=ALL_DECLINED
        )
    return call


def hang_up(call: Call, by_role: Role, now: float) -> Call:
    """One side leaves: a visitor leaving a RINGING call ABANDONS it; either side leaving an
    ANSWERED call ENDS it. Staff decline a ringing call with :func:`reject` instead."""
    _live(call, "hang up")
    role = Role(by_role)
    if call.status is CallStatus.RINGING:
        if role is not Role.VISITOR:
            raise InvalidTransition(f"staff cannot hang up ringing call {call.id}; reject it")
        return dataclasses.replace(
            call, status=CallStatus.ABANDONED, ended_at=now, end_reason=VISITOR_LEFT
        )
    reason = HUNG_UP_BY_VISITOR if role is Role.VISITOR else HUNG_UP_BY_STAFF
    return dataclasses.replace(call, status=CallStatus.ENDED, ended_at=now, end_reason=reason)


def fail(call: Call, reason: str, now: float) -> Call:
    """The call could not be set up or carried: RINGING or ANSWERED -> FAILED with
    ``reason`` (short, no personal data: it lands in the tenant's call log)."""
    _live(call, "fail")
    if not reason:
        raise ValueError("a failed call needs a reason")
    return dataclasses.replace(call, status=CallStatus.FAILED, ended_at=now, end_reason=reason)


def expire(call: Call, now: float, ring_timeout: float) -> Call:
    """The ring-timeout sweep: a RINGING call at or past its :func:`deadline` becomes MISSED.

    ``ended_at`` is the deadline itself, not the (later) moment the sweep ran, so missed
    calls ring for exactly the link's timeout in the records. A call not yet due, or already
    answered, comes back unchanged.
    """
    _live(call, "expire")
    due = deadline(call, ring_timeout)
    if call.status is not CallStatus.RINGING or now < due:
        return call
    return dataclasses.replace(call, status=CallStatus.MISSED, ended_at=due, end_reason=NO_ANSWER)


def rung_staff(link: Link, staff_list: Iterable[Staff]) -> list[Staff]:
    """Who a call on ``link`` rings: the link's explicit staff plus members of its groups,
    active ones of the link's own tenant only, each once, in ``staff_list`` order."""
    explicit = set(link.ring_staff)
    groups = set(link.ring_groups)
    chosen: list[Staff] = []
    seen: set[str] = set()
    for member in staff_list:
        if not member.active or member.tenant_id != link.tenant_id or member.id in seen:
            continue
        if member.id in explicit or groups.intersection(member.groups):
            seen.add(member.id)
            chosen.append(member)
    return chosen


def available(member: Staff, now: float) -> bool:
    """Whether a call may ring ``member`` now: active, available, and not in wrap-up."""
    if not member.active or member.presence is not Presence.AVAILABLE:
        return False
    return member.wrapup_until is None or member.wrapup_until <= now


def on_console(member: Staff, now: float) -> bool:
    """Whether ``member``'s console was active within :data:`CONSOLE_SEEN` seconds.

    Wrap-up and auto-away are console features: a member acting through the API alone (no
    console) is never put in wrap-up or set away.
    """
    return member.seen_at is not None and now - member.seen_at <= CONSOLE_SEEN


def ringable(link: Link, staff_list: Iterable[Staff], now: float) -> list[Staff]:
    """The members a new call on ``link`` rings now: :func:`rung_staff` who are
    :func:`available`."""
    return [m for m in rung_staff(link, staff_list) if available(m, now)]


def nobody_available(link: Link, rung: Sequence[Staff]) -> bool:
    """A link that names people to ring, none of whom can take a call now (``rung``: its
    :func:`ringable` members, away, in wrap-up or inactive left out). A link that names
    nobody rings nobody and takes calls (API users who answer by their own means)."""
    return not rung and bool(link.ring_staff or link.ring_groups)


def link_state(link: Link, staff_list: Iterable[Staff], now: float) -> tuple[str, float | None]:
    """What the call button shows: ("inactive" | "closed" | "unavailable" | "open", when it
    opens next if closed). "unavailable": open, but no member it rings is available with a
    console seen within :data:`CONSOLE_SEEN`."""
    if not link.active:
        return "inactive", None
    if not is_open(link, now):
        return "closed", next_open(link, now)
    if not any(on_console(m, now) for m in ringable(link, staff_list, now)):
        return "unavailable", None
    return "open", None


def next_open(link: Link, now: float) -> float | None:
    """When ``link`` opens next after ``now`` (the start of its next opening window), or None
    if it has no hours (always open) or no windows (never open)."""
    hours = link.hours
    if hours is None or not hours.windows:
        return None
    tz = zone(hours.timezone)
    today = datetime.fromtimestamp(now, tz).date()
    best: float | None = None
    for days in range(8):
        day = today + timedelta(days=days)
        for weekday, start, _ in hours.windows:
            if weekday != day.weekday():
                continue
            local = datetime(day.year, day.month, day.day, start // 60, start % 60, tzinfo=tz)
            at = local.timestamp()
            if at > now and (best is None or at < best) and is_open(link, at):
                best = at
    return best


def zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; ValueError (not KeyError) when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone_unknown", "unknown time zone '{zone}'", {"zone": name}
        ) from None


def check_hours(hours: OpeningHours) -> None:
    """ValueError with a clear message for opening hours the API must not store.

    Windows are ``(weekday, start, end)``: weekday 0 (Monday) to 6, ``start`` minutes since
    local midnight in 0..1439, ``end`` in 0..1440 (1440: midnight). ``end < start`` spans
    midnight into the next day (Friday 22:00-02:00 is ``(4, 1320, 120)``); ``end == start``
    is refused as ambiguous.
    """
    zone(hours.timezone)
    for window in hours.windows:
        if len(window) != 3 or not all(type(v) is int for v in window):
            raise _bad_window("window_not_numbers", "{window} must be three whole numbers", window)
        weekday, start, end = window
        if not 0 <= weekday <= 6:
            raise PydanticCustomError(
                "weekday_range",
                "weekday {weekday} must be 0 (Monday) to 6 (Sunday)",
                {"weekday": weekday},
            )
        if not 0 <= start < MINUTES_PER_DAY or not 0 <= end <= MINUTES_PER_DAY:
            raise _bad_window("window_minutes", "{window}: minutes must be within a day", window)
        if start == end:
            raise _bad_window("window_empty", "{window} is empty (start equals end)", window)


def _bad_window(reason: str, text: str, window: object) -> PydanticCustomError:
    return PydanticCustomError(reason, "opening window " + text, {"window": repr(window)})


def is_open(link: Link, now: float) -> bool:
    """Whether ``link``'s opening hours include ``now``, judged on the wall clock of the
    link's time zone (so 09:00-17:00 stays 09:00-17:00 local across DST changes).

    No hours at all means always open; hours with no windows mean never open. A window is
    half-open, ``[start, end)``; a midnight-spanning one covers the rest of its own weekday
    and the start of the next.
    """
    hours = link.hours
    if hours is None:
        return True
    local = datetime.fromtimestamp(now, zone(hours.timezone))
    today = local.weekday()
    yesterday = (today - 1) % 7
    minute = local.hour * 60 + local.minute + local.second / 60
    for weekday, start, end in hours.windows:
        if start < end:
            if weekday == today and start <= minute < end:
                return True
        elif (weekday == today and minute >= start) or (weekday == yesterday and minute < end):
            return True
    return False


def admit(link: Link, now: float) -> None:
    """Whether a visitor's click on ``link`` may become a call now; raises
    :class:`LinkUnavailable` with a message the API can show as is."""
    if not link.active:
        raise LinkUnavailable("inactive", "this call link is not active")
    if not is_open(link, now):
        raise LinkUnavailable("closed", "this call link is outside its opening hours")
