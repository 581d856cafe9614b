"""The web front's records in control.store, against SQLite and a real PostgreSQL: staff
accounts and presence, console sessions, invitations, tokens minted under a session, the
call's reference, media, connection check and callback requests."""

from __future__ import annotations

import dataclasses

import pytest

from control.models import (
    Call,
    Callback,
    CallStatus,
    Invitation,
    Link,
    Media,
    Presence,
    Role,
    SessionToken,
    Staff,
    WebSession,
)
from control.store import Conflict, Invalid, Store
from tests.test_store import A, B, pg, store, two, url  # noqa: F401 (the shared fixtures)

FINAL_UNANSWERED = [CallStatus.MISSED, CallStatus.REJECTED, CallStatus.ABANDONED]


async def test_staff_accounts_and_presence(two: Store) -> None:  # noqa: F811
    ann = await two.get_staff(A, f"s-{A}")
    assert ann is not None
    assert (ann.email, ann.password_hash, ann.roles, ann.presence) == (
        None,
        None,
        ["staff"],
        Presence.AVAILABLE,
    )
    assert (ann.wrapup_until, ann.missed_rings, ann.seen_at) == (None, 0, None)
    changes = {
        "email": "ann@example.com",
        "password_hash": "$argon2id$x",
        "password_changed_at": 5.0,
    }
    assert await two.set_staff_fields(A, ann.id, changes)
    assert not await two.set_staff_fields(B, ann.id, changes)  # another tenant's: nothing
    found = await two.find_staff_by_email("ann@example.com")
    assert found is not None and found.id == ann.id and found.tenant_id == A
    assert found.password_hash == "$argon2id$x" and found.password_changed_at == 5.0
    assert await two.find_staff_by_email("bob@example.com") is None
    # the email is unique across tenants, and a refused change changes nothing
    with pytest.raises(Conflict, match="email"):
        await two.set_staff_fields(B, f"s-{B}", {"email": "ann@example.com", "seen_at": 9.0})
    b = await two.get_staff(B, f"s-{B}")
    assert b is not None and b.email is None and b.seen_at is None
    with pytest.raises(Invalid):
        await two.set_staff_fields(A, ann.id, {"active": False})
    # a staff member written whole keeps every field; update_staff leaves the state alone
    bo = Staff(
        id="s2",
        tenant_id=A,
        name="Bo",
        email="bo@example.com",
        roles=["staff", "admin"],
        presence=Presence.AWAY,
        wrapup_until=7.5,
        missed_rings=2,
        seen_at=6.0,
    )
    await two.create_staff(bo)
    assert await two.get_staff(A, "s2") == bo
    await two.update_staff(dataclasses.replace(bo, name="Bob", presence=Presence.AVAILABLE))
    assert await two.get_staff(A, "s2") == dataclasses.replace(bo, name="Bob")
    assert await two.set_staff_fields(A, "s2", {"presence": "available", "wrapup_until": None})
    got = await two.get_staff(A, "s2")
    assert got is not None and got.presence is Presence.AVAILABLE and got.wrapup_until is None


async def test_missed_rings_set_away_at_the_threshold(two: Store) -> None:  # noqa: F811
    await two.create_staff(Staff(id="s2", tenant_id=A, name="Bo"))
    await two.create_staff(Staff(id="s3", tenant_id=A, name="Cy", presence=Presence.AWAY))
    ids = [f"s-{A}", "s2", "s3"]
    assert await two.miss_rings(A, ids, 2) == []
    assert await two.miss_rings(B, ids, 1) == []  # another tenant's members: untouched
    assert await two.miss_rings(A, [f"s-{A}"], 2) == [f"s-{A}"]
    assert await two.miss_rings(A, ids, 2) == ["s2"]  # s3 was away already
    team = {s.id: s for s in await two.list_staff(A)}
    assert [(team[i].presence, team[i].missed_rings) for i in ids] == [
        (Presence.AWAY, 3),
        (Presence.AWAY, 2),
        (Presence.AWAY, 2),
    ]
    assert (await two.get_staff(B, f"s-{B}")).missed_rings == 0  # type: ignore[union-attr]
    assert await two.miss_rings(A, [], 1) == []


async def test_web_sessions(two: Store) -> None:  # noqa: F811
    s = WebSession("h1", A, f"s-{A}", "csrf1", created_at=10.0, last_seen=10.0, expires_at=100.0)
    await two.create_web_session(s)
    await two.create_web_session(dataclasses.replace(s, id_hash="h2", csrf="csrf2"))
    await two.create_web_session(
        WebSession("h3", B, f"s-{B}", "c", created_at=10.0, last_seen=10.0, expires_at=100.0)
    )
    assert await two.get_web_session("h1") == s
    assert await two.get_web_session("nope") is None
    with pytest.raises(Conflict):
        await two.create_web_session(s)
    assert await two.touch_web_session("h1", 20.0)
    assert (await two.get_web_session("h1")).last_seen == 20.0  # type: ignore[union-attr]
    assert await two.count_web_sessions(30.0, 15.0) == 1  # h2 and h3 idle since 10
    assert await two.count_web_sessions(30.0, 0.0) == 3
    assert await two.count_web_sessions(100.0, 0.0) == 0  # all past their absolute end
    # one of a member's sessions, then all of them; another tenant's are out of reach
    assert await two.revoke_web_sessions(B, f"s-{A}", 30.0) == 0
    assert await two.revoke_web_sessions(A, f"s-{A}", 30.0, id_hash="h1") == 1
    assert not await two.touch_web_session("h1", 31.0)
    assert await two.revoke_web_sessions(A, f"s-{A}", 31.0) == 1
    assert (await two.get_web_session("h1")).revoked_at == 30.0  # type: ignore[union-attr]
    # the sweep: revoked, expired and idle sessions go, and expired invitations
    await two.replace_invitation(Invitation("i1", A, f"s-{A}", "a@x.eu", 10.0, 50.0))
    assert await two.purge_web(40.0, 0.0) == 2
    assert await two.get_web_session("h3") is not None
    assert await two.purge_web(60.0, 0.0) == 1  # the invitation
    assert await two.purge_web(60.0, 20.0) == 1  # h3, idle since 10
    # deleting a member deletes their sessions
    await two.create_web_session(dataclasses.replace(s, id_hash="h4", revoked_at=None))
    assert await two.delete_staff(A, f"s-{A}")
    assert await two.get_web_session("h4") is None


async def test_invitations(two: Store) -> None:  # noqa: F811
    inv = Invitation("t1", A, f"s-{A}", "ann@example.com", created_at=10.0, expires_at=100.0)
    await two.replace_invitation(inv)
    assert await two.get_invitation("t1") == inv
    # inviting again replaces the unused one
    await two.replace_invitation(dataclasses.replace(inv, token_hash="t2", created_at=20.0))
    assert await two.get_invitation("t1") is None
    assert not await two.use_invitation("t2", 100.0)  # expired
    assert await two.use_invitation("t2", 50.0)
    assert not await two.use_invitation("t2", 51.0)  # once
    assert (await two.get_invitation("t2")).used_at == 50.0  # type: ignore[union-attr]
    # a used one stays when the member is invited again
    await two.replace_invitation(dataclasses.replace(inv, token_hash="t3"))
    assert await two.get_invitation("t2") is not None
    with pytest.raises(Conflict):
        await two.replace_invitation(dataclasses.replace(inv, staff_id=f"s-{A}", token_hash="t2"))


async def test_tokens_of_a_member_or_a_session(two: Store) -> None:  # noqa: F811
    def tok(tid: str, staff: str | None, parent: str | None, tenant: str = A) -> SessionToken:
        role = Role.STAFF if staff else Role.VISITOR
        return SessionToken(tid, tenant, "*", role, staff, 1.0, 100.0, parent=parent)

    for t in (
        tok("k1", f"s-{A}", "h1"),
        tok("k2", f"s-{A}", "h1"),
        tok("k3", f"s-{A}", None),
        tok("k4", f"s-{A}", "h2"),
        tok("k5", None, None),
        tok("k6", f"s-{B}", "h1", B),
    ):
        await two.save_token(t)
    assert (await two.get_token("k1")).parent == "h1"  # type: ignore[union-attr]
    revoked = await two.revoke_tokens_of(A, 5.0, parent="h1")
    assert [t.id for t in revoked] == ["k1", "k2"]
    assert await two.revoke_tokens_of(A, 6.0, parent="h1") == []
    assert [t.id for t in await two.revoke_tokens_of(A, 7.0, staff_id=f"s-{A}")] == ["k3", "k4"]
    assert (await two.get_token("k1")).revoked_at == 5.0  # type: ignore[union-attr]
    assert (await two.get_token("k5")).revoked_at is None  # type: ignore[union-attr]
    assert (await two.get_token("k6")).revoked_at is None  # type: ignore[union-attr]
    with pytest.raises(Invalid):
        await two.revoke_tokens_of(A, 8.0)


async def test_call_reference_media_check_and_callbacks(two: Store) -> None:  # noqa: F811
    link = await two.get_link(A, f"l-{A}")
    assert isinstance(link, Link) and link.relay_only
    link.relay_only = False
    await two.update_link(link)
    assert (await two.get_link(A, f"l-{A}")).relay_only is False  # type: ignore[union-attr]

    call = Call("c1", A, f"l-{A}", created_at=5.0, call_ref="K7Q2-M9XD", media=Media.VIDEO)
    await two.create_call(call)
    assert await two.get_call(A, "c1") == call
    with pytest.raises(Conflict):  # a reference is unique per tenant ...
        await two.create_call(Call("c2", A, f"l-{A}", created_at=5.0, call_ref="K7Q2-M9XD"))
    await two.create_call(Call("c2", B, f"l-{B}", created_at=5.0, call_ref="K7Q2-M9XD"))  # ... only

    check = {"verdict": "ok", "transports": {"udp": "ok", "tcp": "skipped"}, "ms": 120}
    live = [CallStatus.RINGING, CallStatus.ANSWERED]
    assert await two.set_call_check(A, "c1", check, live)
    assert not await two.set_call_check(B, "c1", check, live)
    assert (await two.get_call(A, "c1")).visitor_check == check  # type: ignore[union-attr]
    # a state change written from an older copy keeps the check
    assert await two.update_call(dataclasses.replace(call, status=CallStatus.MISSED), call.status)
    got = await two.get_call(A, "c1")
    assert got is not None and got.visitor_check == check and got.media is Media.VIDEO
    assert not await two.set_call_check(A, "c1", {"verdict": "blocked"}, live)  # over

    # a callback on the missed call, once; an answered call never gets one
    assert not await two.request_callback(A, "c1", "Eve · eve@x.eu", 9.0, [CallStatus.RINGING])
    assert await two.request_callback(A, "c1", "Eve · eve@x.eu", 9.0, FINAL_UNANSWERED)
    assert not await two.request_callback(A, "c1", "Mallory · m@x.eu", 9.5, FINAL_UNANSWERED)
    answered = Call("c3", A, f"l-{A}", status=CallStatus.ENDED, answered_at=6.0, answered_by="x")
    await two.create_call(answered)
    assert not await two.request_callback(A, "c3", "Eve · e@x.eu", 9.0, [CallStatus.ENDED])
    opened = Call(
        "c4",
        A,
        f"l-{A}",
        created_at=8.0,
        status=CallStatus.MISSED,
        visitor_ref="Zoe · +49 30 1234",
        callback_state=Callback.OPEN,
        callback_at=8.0,
    )
    await two.create_call(opened)
    got = await two.get_call(A, "c1")
    assert got is not None and got.visitor_ref == "Eve · eve@x.eu"
    assert (got.callback_state, got.callback_at) == (Callback.OPEN, 9.0)
    assert [c.id for c in await two.list_callbacks(A, [f"l-{A}"])] == ["c4", "c1"]
    assert await two.list_callbacks(A, ["other-link"]) == []
    assert await two.list_callbacks(B, [f"l-{A}"]) == []
    # done once, by someone; an erased contact leaves nothing to call back
    assert await two.close_callback(A, "c4", "s-x", 10.0)
    assert not await two.close_callback(A, "c4", "s-y", 11.0)
    done = await two.get_call(A, "c4")
    assert done is not None and (done.callback_state, done.callback_done_by) == (
        Callback.DONE,
        "s-x",
    )
    assert await two.erase_calls(A, ["c1"]) == 1
    assert await two.list_callbacks(A, [f"l-{A}"]) == []
