"""The call state machine, who a link rings, and opening hours (control/calls.py),
driven with a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control import calls
from control.calls import CallConflict, InvalidTransition, LinkUnavailable, NotRung
from control.models import FINAL_STATUSES, Call, CallStatus, Link, OpeningHours, Role, Staff

T0 = 1_700_000_000.0
TIMEOUT = 45.0


class Clock:
    """A fake clock the tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def ringing(clock: Clock) -> Call:
    return calls.ring(Call(id="c1", tenant_id="t1", link_id="l1"), clock.now)


# --- transitions ------------------------------------------------------------------------


def test_ring_stamps_creation() -> None:
    clock = Clock()
    call = ringing(clock)
    assert call.status is CallStatus.RINGING and call.created_at == T0
    assert calls.deadline(call, TIMEOUT) == T0 + TIMEOUT


def test_transitions_return_new_records() -> None:
    clock = Clock()
    call = ringing(clock)
    answered = calls.answer(call, "s1", clock.advance(3))
    assert call.status is CallStatus.RINGING and call.answered_at is None
    assert answered is not call


def test_missed() -> None:
    clock = Clock()
    call = ringing(clock)
    assert calls.expire(call, clock.advance(TIMEOUT - 0.5), TIMEOUT) is call  # not yet due
    late = clock.advance(10)  # the sweep runs after the deadline
    missed = calls.expire(call, late, TIMEOUT)
    assert missed.status is CallStatus.MISSED
    assert missed.ended_at == T0 + TIMEOUT  # stamped at the deadline, not at the sweep
    assert missed.end_reason == calls.NO_ANSWER and missed.answered_at is None


def test_missed_exactly_at_deadline() -> None:
    call = ringing(Clock())
    assert calls.expire(call, T0 + TIMEOUT, TIMEOUT).status is CallStatus.MISSED


def test_answer_after_deadline_is_refused_when_timeout_given() -> None:
    call = ringing(Clock())
    with pytest.raises(InvalidTransition):
        calls.answer(call, "s1", T0 + TIMEOUT, ring_timeout=TIMEOUT)
    assert calls.answer(call, "s1", T0 + TIMEOUT - 1, ring_timeout=TIMEOUT).answered_by == "s1"


def test_abandoned() -> None:
    clock = Clock()
    call = ringing(clock)
    left = calls.hang_up(call, Role.VISITOR, clock.advance(7))
    assert left.status is CallStatus.ABANDONED and left.ended_at == T0 + 7
    assert left.end_reason == calls.VISITOR_LEFT
    with pytest.raises(InvalidTransition):
        calls.expire(left, clock.advance(100), TIMEOUT)


def test_staff_cannot_hang_up_a_ringing_call() -> None:
    with pytest.raises(InvalidTransition, match="reject"):
        calls.hang_up(ringing(Clock()), Role.STAFF, T0 + 1)


def test_first_answer_wins() -> None:
    clock = Clock()
    call = ringing(clock)
    first = calls.answer(call, "alice", clock.advance(2))
    assert first.status is CallStatus.ANSWERED
    assert first.answered_by == "alice" and first.answered_at == T0 + 2
    with pytest.raises(CallConflict, match="someone else"):
        calls.answer(first, "bob", clock.advance(0.1))
    with pytest.raises(CallConflict, match="by you"):
        calls.answer(first, "alice", clock.now)
    # others' declines after the answer are conflicts too
    with pytest.raises(CallConflict):
        calls.reject(first, "bob", clock.now, rung_staff=["alice", "bob"])
    # an answered call is never missed
    assert calls.expire(first, clock.advance(1000), TIMEOUT) is first


def test_answer_by_someone_not_rung() -> None:
    call = ringing(Clock())
    with pytest.raises(NotRung):
        calls.answer(call, "mallory", T0 + 1, rung_staff={"alice"})
    assert calls.answer(call, "alice", T0 + 1, rung_staff={"alice"}).answered_by == "alice"


@pytest.mark.parametrize(("role", "reason"), [(Role.VISITOR, "visitor"), (Role.STAFF, "staff")])
def test_ended(role: Role, reason: str) -> None:
    clock = Clock()
    call = calls.answer(ringing(clock), "s1", clock.advance(5))
    ended = calls.hang_up(call, role, clock.advance(300))
    assert ended.status is CallStatus.ENDED and ended.ended_at == T0 + 305
    assert ended.answered_at == T0 + 5 and reason in (ended.end_reason or "")


def test_rejected_only_when_everyone_declined() -> None:
    clock = Clock()
    call = ringing(clock)
    rung = ["alice", "bob", "carol"]
    still = calls.reject(call, "alice", clock.advance(1), rung_staff=rung)
    assert still is call and still.status is CallStatus.RINGING
    still = calls.reject(call, "bob", clock.advance(1), rung_staff=rung, rejected=["alice"])
    assert still.status is CallStatus.RINGING
    # a repeated decline from the same person does not count twice
    still = calls.reject(call, "bob", clock.now, rung_staff=rung, rejected=["alice", "bob"])
    assert still.status is CallStatus.RINGING
    done = calls.reject(call, "carol", clock.advance(1), rung_staff=rung, rejected=["alice", "bob"])
    assert done.status is CallStatus.REJECTED and done.ended_at == T0 + 3
    assert done.end_reason == calls.ALL_DECLINED


def test_single_staff_reject() -> None:
    done = calls.reject(ringing(Clock()), "alice", T0 + 1, rung_staff=["alice"])
    assert done.status is CallStatus.REJECTED


def test_reject_by_someone_not_rung() -> None:
    with pytest.raises(NotRung):
        calls.reject(ringing(Clock()), "mallory", T0 + 1, rung_staff=["alice"])


def test_failed_from_ringing_and_answered() -> None:
    clock = Clock()
    call = ringing(clock)
    failed = calls.fail(call, "no relay", clock.advance(1))
    assert failed.status is CallStatus.FAILED and failed.end_reason == "no relay"
    answered = calls.answer(call, "s1", clock.advance(1))
    failed = calls.fail(answered, "media never flowed", clock.advance(20))
    assert failed.status is CallStatus.FAILED and failed.ended_at == T0 + 22
    with pytest.raises(ValueError):
        calls.fail(call, "", T0)


def final_calls() -> list[Call]:
    clock = Clock()
    call = ringing(clock)
    answered = calls.answer(call, "s1", clock.advance(1))
    return [
        calls.expire(call, T0 + 100, TIMEOUT),
        calls.reject(call, "s1", T0 + 1, rung_staff=["s1"]),
        calls.hang_up(call, Role.VISITOR, T0 + 1),
        calls.hang_up(answered, Role.STAFF, T0 + 9),
        calls.fail(call, "boom", T0 + 1),
    ]


ACTIONS: list[tuple[str, Callable[[Call], Call]]] = [
    ("ring", lambda c: calls.ring(c, T0 + 500)),
    ("answer", lambda c: calls.answer(c, "s1", T0 + 500)),
    ("reject", lambda c: calls.reject(c, "s1", T0 + 500, rung_staff=["s1"])),
    ("hang_up visitor", lambda c: calls.hang_up(c, Role.VISITOR, T0 + 500)),
    ("hang_up staff", lambda c: calls.hang_up(c, Role.STAFF, T0 + 500)),
    ("fail", lambda c: calls.fail(c, "late", T0 + 500)),
    ("expire", lambda c: calls.expire(c, T0 + 500, TIMEOUT)),
]


def test_every_final_status_is_covered() -> None:
    assert {c.status for c in final_calls()} == FINAL_STATUSES


@pytest.mark.parametrize("final", final_calls(), ids=lambda c: str(c.status))
@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a[0])
def test_nothing_leaves_a_final_state(
    final: Call, action: tuple[str, Callable[[Call], Call]]
) -> None:
    with pytest.raises(InvalidTransition, match=str(final.status)):
        action[1](final)


def test_ring_only_once() -> None:
    answered = calls.answer(ringing(Clock()), "s1", T0 + 1)
    with pytest.raises(InvalidTransition):
        calls.ring(answered, T0 + 2)


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["answer", "reject", "hang_visitor", "hang_staff", "fail", "expire"]),
        st.sampled_from(["alice", "bob"]),
        st.floats(min_value=0, max_value=30),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_random_event_sequences_keep_invariants(events: list[tuple[str, str, float]]) -> None:
    """Whatever happens in whatever order: timestamps are stamped, answered_by is set only
    with ANSWERED/ENDED (and ENDED/FAILED after an answer), and final states stay final."""
    clock = Clock()
    call = ringing(clock)
    declined: set[str] = set()
    for name, who, step in events:
        now = clock.advance(step)
        before = call
        try:
            if name == "answer":
                call = calls.answer(call, who, now)
            elif name == "reject":
                call = calls.reject(call, who, now, rung_staff=["alice", "bob"], rejected=declined)
                declined.add(who)
            elif name == "hang_visitor":
                call = calls.hang_up(call, Role.VISITOR, now)
            elif name == "hang_staff":
                call = calls.hang_up(call, Role.STAFF, now)
            elif name == "fail":
                call = calls.fail(call, "x", now)
            else:
                call = calls.expire(call, now, TIMEOUT)
        except calls.CallError:
            assert call is before
            continue
        assert before.status not in FINAL_STATUSES
        if call.status in FINAL_STATUSES:
            assert call.ended_at is not None and call.ended_at >= call.created_at
        if call.status is CallStatus.ANSWERED or call.status is CallStatus.ENDED:
            assert call.answered_by is not None and call.answered_at is not None
        if call.status in (CallStatus.MISSED, CallStatus.REJECTED, CallStatus.ABANDONED):
            assert call.answered_at is None
        if before.answered_by is not None:
            assert call.answered_by == before.answered_by  # the first answer sticks
        # time only goes forward on a call: created <= answered <= ended
        stamps = [t for t in (call.created_at, call.answered_at, call.ended_at) if t is not None]
        assert stamps == sorted(stamps) and stamps[-1] <= now


# --- who rings --------------------------------------------------------------------------


def staff(sid: str, *groups: str, active: bool = True, tenant: str = "t1") -> Staff:
    return Staff(id=sid, tenant_id=tenant, name=sid, groups=list(groups), active=active)


def test_rung_staff() -> None:
    link = Link(
        id="l1",
        public_id="p",
        tenant_id="t1",
        name="sales",
        ring_staff=["alice", "dave"],
        ring_groups=["sales"],
    )
    team = [
        staff("alice", "support"),
        staff("bob", "sales"),
        staff("carol", "sales", active=False),  # inactive: never rung
        staff("dave", active=False),  # explicit but inactive
        staff("erin", "sales", "support"),
        staff("frank", "support"),  # neither explicit nor in the group
        staff("bob", "sales"),  # duplicate row
        staff("mallory", "sales", tenant="t2"),  # another tenant's staff
    ]
    assert [s.id for s in calls.rung_staff(link, team)] == ["alice", "bob", "erin"]


def test_rung_staff_empty() -> None:
    link = Link(id="l1", public_id="p", tenant_id="t1", name="x")
    assert calls.rung_staff(link, [staff("alice", "sales")]) == []


# --- opening hours ----------------------------------------------------------------------


def at(tz: str, year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz)).timestamp()


def link_with(hours: OpeningHours | None, active: bool = True) -> Link:
    return Link(id="l", public_id="p", tenant_id="t", name="n", hours=hours, active=active)


WEEKDAYS_9_TO_17 = [(d, 9 * 60, 17 * 60) for d in range(5)]


def test_no_hours_is_always_open_and_no_windows_never() -> None:
    assert calls.is_open(link_with(None), T0)
    assert not calls.is_open(link_with(OpeningHours("UTC", [])), T0)


def test_office_hours_in_local_time() -> None:
    link = link_with(OpeningHours("Europe/Paris", WEEKDAYS_9_TO_17))
    # Wednesday 2024-01-10
    assert not calls.is_open(link, at("Europe/Paris", 2024, 1, 10, 8, 59, 59))
    assert calls.is_open(link, at("Europe/Paris", 2024, 1, 10, 9, 0))
    assert calls.is_open(link, at("Europe/Paris", 2024, 1, 10, 16, 59, 59))
    assert not calls.is_open(link, at("Europe/Paris", 2024, 1, 10, 17, 0))  # end is exclusive
    # 08:30 UTC is 09:30 in Paris: judged on the link's clock, not UTC
    assert calls.is_open(link, at("UTC", 2024, 1, 10, 8, 30))
    # Saturday
    assert not calls.is_open(link, at("Europe/Paris", 2024, 1, 13, 12, 0))


def test_office_hours_across_dst() -> None:
    link = link_with(OpeningHours("Europe/Berlin", [(d, 9 * 60, 17 * 60) for d in range(7)]))
    # Berlin springs forward on Sunday 2024-03-31: 07:30 UTC is 08:30 before, 09:30 after
    assert not calls.is_open(link, at("UTC", 2024, 3, 30, 7, 30))
    assert calls.is_open(link, at("UTC", 2024, 3, 31, 7, 30))
    # and falls back on Sunday 2024-10-27: 15:30 UTC is 17:30 before, 16:30 after
    assert not calls.is_open(link, at("UTC", 2024, 10, 26, 15, 30))
    assert calls.is_open(link, at("UTC", 2024, 10, 27, 15, 30))


def test_window_inside_the_skipped_and_repeated_hour() -> None:
    # 02:00-03:00 does not exist on 2024-03-31 in Berlin and happens twice on 2024-10-27
    link = link_with(OpeningHours("Europe/Berlin", [(6, 2 * 60, 3 * 60)]))
    spring = at("UTC", 2024, 3, 31, 0, 30)  # 01:30 CET, then 03:30 CEST an hour later
    assert not calls.is_open(link, spring) and not calls.is_open(link, spring + 3600)
    autumn = at("UTC", 2024, 10, 27, 0, 30)  # 02:30 CEST, then 02:30 CET an hour later
    assert calls.is_open(link, autumn) and calls.is_open(link, autumn + 3600)
    assert not calls.is_open(link, autumn + 2 * 3600)


def test_midnight_spanning_window() -> None:
    # Friday 22:00 to Saturday 02:00, New York time
    link = link_with(OpeningHours("America/New_York", [(4, 22 * 60, 2 * 60)]))
    ny = "America/New_York"
    assert not calls.is_open(link, at(ny, 2024, 6, 7, 21, 59))  # Friday
    assert calls.is_open(link, at(ny, 2024, 6, 7, 22, 0))
    assert calls.is_open(link, at(ny, 2024, 6, 7, 23, 59, 59))
    assert calls.is_open(link, at(ny, 2024, 6, 8, 0, 0))  # Saturday
    assert calls.is_open(link, at(ny, 2024, 6, 8, 1, 59))
    assert not calls.is_open(link, at(ny, 2024, 6, 8, 2, 0))
    assert not calls.is_open(link, at(ny, 2024, 6, 8, 23, 0))  # Saturday night: no window
    assert not calls.is_open(link, at(ny, 2024, 6, 7, 1, 0))  # Friday early: Thursday has none


def test_sunday_night_spans_into_monday() -> None:
    link = link_with(OpeningHours("UTC", [(6, 23 * 60, 60)]))
    assert calls.is_open(link, at("UTC", 2024, 1, 8, 0, 30))  # Monday 00:30
    assert not calls.is_open(link, at("UTC", 2024, 1, 9, 0, 30))  # Tuesday 00:30


def test_until_midnight() -> None:
    link = link_with(OpeningHours("UTC", [(0, 20 * 60, 24 * 60)]))
    assert calls.is_open(link, at("UTC", 2024, 1, 8, 23, 59, 59))
    assert not calls.is_open(link, at("UTC", 2024, 1, 9, 0, 0))


@pytest.mark.parametrize(
    "hours",
    [
        OpeningHours("Mars/Olympus", []),
        OpeningHours("UTC", [(7, 0, 60)]),
        OpeningHours("UTC", [(-1, 0, 60)]),
        OpeningHours("UTC", [(0, 1440, 60)]),
        OpeningHours("UTC", [(0, 0, 1441)]),
        OpeningHours("UTC", [(0, 60, 60)]),
        OpeningHours("UTC", [(0, 1.5, 60)]),  # type: ignore[list-item]
        OpeningHours("UTC", [(0, 60)]),  # type: ignore[list-item]
    ],
)
def test_check_hours_refuses(hours: OpeningHours) -> None:
    with pytest.raises(ValueError):
        calls.check_hours(hours)


def test_check_hours_accepts() -> None:
    calls.check_hours(OpeningHours("Europe/Berlin", [*WEEKDAYS_9_TO_17, (5, 1320, 120)]))
    calls.check_hours(OpeningHours("UTC", [(0, 0, 1440)]))


def test_unknown_zone_is_value_error() -> None:
    with pytest.raises(ValueError, match="time zone"):
        calls.is_open(link_with(OpeningHours("Nowhere/Land", WEEKDAYS_9_TO_17)), T0)


def test_admit() -> None:
    calls.admit(link_with(None), T0)
    with pytest.raises(LinkUnavailable) as info:
        calls.admit(link_with(None, active=False), T0)
    assert info.value.reason == "inactive" and "not active" in str(info.value)
    with pytest.raises(LinkUnavailable) as info:
        calls.admit(link_with(OpeningHours("UTC", [])), T0)
    assert info.value.reason == "closed" and "opening hours" in str(info.value)
