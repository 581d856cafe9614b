"""Credential lifetimes and revocation on the control plane, in process against SQLite and
PostgreSQL (the fixtures of tests/test_api.py): raw ``/v1/credentials`` revoked by id, a
relay node that was away longer than a credential lives still hears every revocation that
matters, and a call's end and its tokens' revocation are one transaction.
"""

from __future__ import annotations

import pytest

from control.store import StoreError
from control.tokens import MAX_RELAY_TTL
from tests.test_api import (  # noqa: F401 (api, store: fixtures shared with test_api)
    T0,
    Api,
    api,
    bearer,
    beat,
    click,
    err,
    store,
    world,
)
from tests.test_store import pg  # noqa: F401 (the shared PostgreSQL fixture)

DAY = 24 * 3600.0

pytestmark = pytest.mark.timeout(120)


async def test_raw_credentials_are_revoked_by_id(api: Api) -> None:  # noqa: F811
    w = await world(api)
    r = await api.c.post("/v1/credentials", json={"ttl": 600}, headers=w.th)
    assert r.status_code == 201, r.text
    cred = r.json()
    (turn,) = cred["iceServers"]
    assert turn["username"].partition(":")[2] == cred["token_id"]  # the id the relay matches
    api.clock.t += 1
    r = await api.c.delete(f"/v1/credentials/{cred['token_id']}", headers=w.th)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": cred["token_id"], "revoked_at": T0 + 1}
    again = await api.c.delete(f"/v1/credentials/{cred['token_id']}", headers=w.th)
    assert again.json() == r.json()  # idempotent: the first revocation's time stays
    assert cred["token_id"] in (await beat(api, revocations_since=T0))["revoked"]
    # only raw credentials, only the tenant's own
    err(await api.c.delete("/v1/credentials/nope", headers=w.th), 404)
    other = await world(api, "Other", node=False)
    mine = (await api.c.post("/v1/credentials", headers=w.th)).json()["token_id"]
    err(await api.c.delete(f"/v1/credentials/{mine}", headers=other.th), 404)
    visitor = (await click(api, w))["token_id"]
    err(await api.c.delete(f"/v1/credentials/{visitor}", headers=w.th), 404)


async def test_node_back_after_a_day_hears_what_was_revoked_while_away(api: Api) -> None:  # noqa: F811
    w = await world(api)
    last = (await beat(api))["now"]  # the node's last heartbeat, then it goes away
    long = (await api.c.post("/v1/credentials", json={"ttl": MAX_RELAY_TTL}, headers=w.th)).json()
    api.clock.t += 60
    r = await api.c.post(f"/v1/tokens/{long['token_id']}/revoke", headers=w.th)
    assert r.status_code == 200
    api.clock.t += DAY + 3600  # 25 h later the node comes back
    back = await beat(api, revocations_since=last)
    assert long["token_id"] in back["revoked"]
    # a node that knows nothing (restarted) gets what could still be valid: the credential
    # revoked 25 h ago expired an hour ago, a day's credential revoked now has not
    fresh = (await api.c.post("/v1/credentials", json={"ttl": MAX_RELAY_TTL}, headers=w.th)).json()
    await api.c.post(f"/v1/tokens/{fresh['token_id']}/revoke", headers=w.th)
    assert (await beat(api, "n2"))["revoked"] == [fresh["token_id"]]
    # a cursor older than the window the control plane serves is treated as unknown
    api.clock.t += 30 * DAY
    assert (await beat(api, revocations_since=last))["revoked"] == []
    text = await api.metrics()
    assert "clickacall_control_revocations_window_hits_total 1.0" in text


async def test_failed_revocation_leaves_the_call_as_it_was(api: Api) -> None:  # noqa: F811
    """A fault injected in the database (a trigger refusing the token update) makes the
    hang-up fail whole: the call is still answered, its tokens still work."""
    w = await world(api)
    got = await click(api, w)
    call_id = got["call_id"]
    r = await api.c.post(f"/v1/calls/{call_id}/answer", headers=w.sh)
    assert r.status_code == 200, r.text
    staff_token = r.json()["token"]
    await _refuse_token_updates(api, True)
    try:
        try:  # an error answer, or the app's error itself (httpx's ASGI transport raises it)
            r = await api.c.post(f"/v1/calls/{call_id}/hangup", headers=bearer(got["token"]))
            assert r.status_code != 200, r.text
        except StoreError:
            pass
        call = (await api.c.get(f"/v1/calls/{call_id}", headers=w.th)).json()
        assert call["status"] == "answered" and call["ended_at"] is None
        assert (await beat(api, revocations_since=T0))["revoked"] == []
    finally:
        await _refuse_token_updates(api, False)
    r = await api.c.post(f"/v1/calls/{call_id}/hangup", headers=bearer(staff_token))
    assert r.status_code == 200 and r.json()["status"] == "ended"
    assert {got["token_id"]} <= set((await beat(api, revocations_since=T0))["revoked"])


async def _refuse_token_updates(client: Api, on: bool) -> None:
    """Install (or drop) a trigger that makes every UPDATE of the tokens table fail."""
    db = client.store
    if db.backend == "sqlite":
        sql = (
            "CREATE TRIGGER inject_fault BEFORE UPDATE ON tokens"
            " BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            if on
            else "DROP TRIGGER inject_fault"
        )
        await db._execute(sql, what="fault")  # type: ignore[attr-defined]
        return
    pool = db._pool  # type: ignore[attr-defined]
    if on:
        await pool.execute(
            "CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
        )
        await pool.execute(
            "CREATE TRIGGER inject_fault BEFORE UPDATE ON tokens"
            " FOR EACH ROW EXECUTE FUNCTION inject_fault()"
        )
    else:
        await pool.execute("DROP TRIGGER inject_fault ON tokens")
        await pool.execute("DROP FUNCTION inject_fault()")


async def test_store_transaction_is_all_or_nothing(api: Api) -> None:  # noqa: F811
    db = api.store
    w = await world(api)
    got = await click(api, w)
    with pytest.raises(RuntimeError):
        async with db.transaction():
            assert await db.revoke_call_tokens(w.tenant, got["call_id"], T0 + 1) == 1
            seen = await db.get_token(got["token_id"])  # it reads its own writes
            assert seen is not None and seen.revoked_at == T0 + 1
            raise RuntimeError("rolled back")
    kept = await db.get_token(got["token_id"])
    assert kept is not None and kept.revoked_at is None
    async with db.transaction(), db.transaction():  # an inner one joins the outer
        await db.revoke_call_tokens(w.tenant, got["call_id"], T0 + 2)
    done = await db.get_token(got["token_id"])
    assert done is not None and done.revoked_at == T0 + 2
