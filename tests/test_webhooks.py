"""Webhooks end to end, on SQLite and PostgreSQL: a real HTTPS receiver on loopback (a
self-signed certificate the control plane trusts through ``hook_ca``) hears every event of a
call with a valid signature and an idempotency id; with the receiver down and the control
plane stopped and started again on the same database, every event still arrives, once per
id; a rotation signs with both secrets during its grace; endpoints in denied ranges are
refused at registration (naming the field) and at delivery (counted); "send again"; the
dashboard's twins (admin only, CSRF), isolation between businesses; the queue's limit; each
failed attempt's code and params (HOOK_ERRORS), and deliveries stored before the codes.

The control plane runs with its lifespan (``app.router.lifespan_context``), so the delivery
worker is the real one; time is the app's fake clock, moved on to make retries due.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import sqlite3
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi import FastAPI

from control.api.webhooks import DeliveryOut
from control.app import create_app
from control.hookworker import hook_policy
from control.metrics import metrics_of
from control.models import HOOK_ERRORS, Delivery
from control.server import UsageError, load_settings
from control.store import Store, load_migrations, migrate, open_store
from control.web.catalogue import messages
from control.webhooks import (
    BACKOFF_FIRST,
    HOOK_CHANNEL,
    Failure,
    HookPolicy,
    next_attempt,
    verify,
)
from tests.relayproc import make_certificate
from tests.test_api import Api, Clock, bearer, beat, click, err, make_settings, world
from tests.test_dashboard import Env, invite, tenant_with_admin
from tests.test_store import pg, url

__all__ = ["pg", "url"]

WAIT = 20.0  # seconds a test waits for deliveries at most
ALL = ["ringing", "answered", "missed", "ended", "callback_requested"]


# --- a real HTTPS receiver -------------------------------------------------------------------


@dataclasses.dataclass
class Got:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.body)
        return out


class Receiver:
    """A small HTTP/1.1 server over TLS on 127.0.0.1: keeps every request, answers ``status``."""

    def __init__(self, cert: Path, key: Path, port: int = 0) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.port = port
        self.got: list[Got] = []
        self.status = 200
        self.stall = 0.0  # seconds to wait before answering
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.ctx, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *rest = head.decode("latin-1").split("\r\n")
            headers = {}
            for h in rest:
                if ":" in h:
                    k, _, v = h.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.got.append(Got(line.split(" ")[1], headers, body))
            await asyncio.sleep(self.stall)
            answer = b"x" * 5000  # more than the worker reads
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(answer)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + answer
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def ids(self) -> list[str]:
        return [g.headers["clickacall-webhook-id"] for g in self.got]

    async def wait(self, n: int) -> list[Got]:
        async with asyncio.timeout(WAIT):
            while len(self.got) < n:
                await asyncio.sleep(0.05)
        return self.got


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("hookcert")
    make_certificate(d / "cert.pem", d / "key.pem")
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
async def receiver(cert: tuple[Path, Path]) -> AsyncIterator[Receiver]:
    r = Receiver(*cert)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


# --- the control plane with its worker ------------------------------------------------------------


@dataclasses.dataclass
class Plane:
    app: FastAPI
    api: Api

    @property
    def c(self) -> httpx.AsyncClient:
        return self.api.c

    @property
    def store(self) -> Store:
        s = self.app.state.ctx.store
        assert s is not None
        return s

    async def kick(self) -> None:
        """Wake the worker now (after moving the clock)."""
        await self.store.notify(HOOK_CHANNEL, "")

    def count(self, outcome: str) -> float:
        v = metrics_of(self.app).registry.get_sample_value(
            "clickacall_control_webhook_deliveries_total", {"outcome": outcome}
        )
        return v or 0.0


@asynccontextmanager
async def plane(db: str, clock: Clock, cert: Path | None, **kw: Any) -> AsyncIterator[Plane]:
    """A control plane on ``db`` (opened and closed by its lifespan, as a process does)."""
    settings = make_settings(
        clock, db_url=db, hook_ca=str(cert) if cert else None, rng=random.Random(3), **kw
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield Plane(app, Api(c, clock, app.state.ctx.store, app))


LOOPBACK = {"hook_allow": ["127.0.0.0/8"]}


async def register(p: Plane, th: dict[str, str], target: str, **kw: Any) -> dict[str, Any]:
    r = await p.c.post("/v1/webhooks", json={"url": target, **kw}, headers=th)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    assert out["secret"].startswith("whsec_")
    return out


async def deliveries(p: Plane, th: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = await p.c.get("/v1/webhooks/deliveries", params=params, headers=th)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["deliveries"]
    return out


async def all_delivered(p: Plane, th: dict[str, str], n: int) -> list[dict[str, Any]]:
    """The log once ``n`` deliveries are delivered (the worker writes after the answer)."""
    async with asyncio.timeout(WAIT):
        while True:
            log = await deliveries(p, th)
            if sum(d["state"] == "delivered" for d in log) >= n:
                return log
            await asyncio.sleep(0.05)


def check_signed(g: Got, *secrets: str) -> None:
    """Every secret has a valid ``v1=`` signature over ``timestamp.body``; the id header is
    the payload's id."""
    ts = int(g.headers["clickacall-webhook-timestamp"])
    for secret in secrets:
        assert verify(g.headers["clickacall-webhook-signature"], secret, ts, g.body), secret
    assert g.headers["clickacall-webhook-id"] == g.json["id"]
    assert g.headers["clickacall-webhook-event"] == g.json["event"]
    assert g.headers["content-type"] == "application/json"


async def ring(p: Plane, w: Any) -> dict[str, Any]:
    """A visitor's click (the relay node's heartbeat kept fresh, whatever the clock did)."""
    await beat(p.api)
    return await click(p.api, w)


async def a_call(p: Plane, w: Any, answer: bool = True) -> dict[str, Any]:
    """Ringing, then answered and ended (or left to ring until missed)."""
    got = await ring(p, w)
    if answer:
        p.api.clock.t += 5
        r = await p.c.post(f"/v1/calls/{got['call_id']}/answer", headers=w.sh)
        assert r.status_code == 200, r.text
        p.api.clock.t += 60
        r = await p.c.post(f"/v1/calls/{got['call_id']}/hangup", headers=bearer(got["token"]))
        assert r.json()["status"] == "ended"
    else:
        p.api.clock.t += 46
        r = await p.c.get(f"/v1/calls/{got['call_id']}", headers=w.th)
        assert r.json()["status"] == "missed"
    return got


# --- the tests -------------------------------------------------------------------------------------


async def test_every_event_arrives_signed_without_visitor_data(
    url: str, cert: tuple[Path, Path], receiver: Receiver
) -> None:
    clock = Clock()
    async with plane(url, clock, cert[0], **LOOPBACK) as p:
        w = await world(p.api)
        plain = await register(p, w.th, receiver.url)
        assert plain["events"] == ALL and plain["include_visitor"] is False
        personal = await register(p, w.th, receiver.url + "?v=1", include_visitor=True)
        listed = (await p.c.get("/v1/webhooks", headers=w.th)).json()
        assert sorted(h["id"] for h in listed) == sorted([plain["id"], personal["id"]])
        assert all(h["secret"] is None for h in listed)  # shown once

        answered = await a_call(p, w)
        missed = await a_call(p, w, answer=False)
        r = await p.c.post(
            f"/v1/calls/{missed['call_id']}/callback",
            json={"name": "Eve", "contact": "eve@example.com"},
            headers=bearer(missed["token"]),
        )
        assert r.status_code == 201, r.text
        got = await receiver.wait(12)  # 6 events, 2 endpoints
        await asyncio.sleep(0.3)
        assert len(got) == 12 and len(set(receiver.ids())) == 12, [
            (g.path, g.json["event"], g.json["id"], g.json["call"]["id"]) for g in got
        ]
        secrets = {"/hook": plain["secret"], "/hook?v=1": personal["secret"]}
        for g in got:
            check_signed(g, secrets[g.path])
            assert "," not in g.headers["clickacall-webhook-signature"]  # no rotation yet
        by = {(g.path, g.json["call"]["id"], g.json["event"]): g.json for g in got}
        a, m = answered["call_id"], missed["call_id"]
        assert {(e, c) for _, c, e in by} == {
            ("ringing", a),
            ("answered", a),
            ("ended", a),
            ("ringing", m),
            ("missed", m),
            ("callback_requested", m),
        }
        ended = by[("/hook", a, "ended")]
        assert ended["call"]["outcome"] == "ended" and ended["call"]["duration"] == 60
        assert ended["staff"] == {"id": w.staff, "name": "Ann"}
        assert ended["link"]["name"] == "Sales" and ended["link"]["id"] == w.link["id"]
        assert by[("/hook", a, "ringing")]["staff"] is None
        assert by[("/hook", m, "missed")]["call"]["outcome"] == "missed"
        # no visitor data unless the endpoint asked for it
        for (path, _, _), body in by.items():
            raw = json.dumps(body)
            if path == "/hook":
                assert "visitor" not in body and "eve@example.com" not in raw
                assert "127.0.0" not in raw and "Chrome" not in raw
        asked = by[("/hook?v=1", m, "callback_requested")]
        assert asked["visitor"]["ref"] == "Eve · eve@example.com"
        # the log: all delivered at the first attempt, newest first, paged
        await all_delivered(p, w.th, 12)
        log = await deliveries(p, w.th, limit=5)
        assert len(log) == 5 and all(d["state"] == "delivered" for d in log)
        assert all(d["attempts"] == 1 and d["last_status"] == 200 for d in log)
        assert all(d["last_error"] is None and d["last_error_code"] is None for d in log)
        assert all(d["last_error_params"] == {} for d in log)
        r = await p.c.get("/v1/webhooks/deliveries", params={"limit": 5}, headers=w.th)
        nxt = r.json()["next_cursor"]
        rest = await deliveries(p, w.th, limit=50, cursor=nxt)
        assert len(rest) == 7 and not {d["id"] for d in rest} & {d["id"] for d in log}
        only = await deliveries(p, w.th, endpoint=personal["id"])
        assert len(only) == 6 and {d["endpoint_id"] for d in only} == {personal["id"]}
        assert p.count("delivered") == 12


async def test_receiver_down_and_a_restart_lose_nothing(
    url: str, cert: tuple[Path, Path], receiver: Receiver
) -> None:
    clock = Clock()
    await receiver.stop()  # down; its port stays ours to reuse
    async with plane(url, clock, cert[0], **LOOPBACK) as p:
        w = await world(p.api)
        hook = await register(p, w.th, receiver.url)
        await a_call(p, w)
        # each is tried once, fails, and waits for its retry
        async with asyncio.timeout(WAIT):
            while True:
                log = await deliveries(p, w.th)
                if len(log) == 3 and all(d["attempts"] >= 1 for d in log):
                    break
                await asyncio.sleep(0.05)
        assert all(d["state"] == "pending" and "connect" in d["last_error"] for d in log)
        # the code for programs and the dashboard, the technical detail apart from it
        for d in log:
            assert d["last_error_code"] == "connect" and d["last_status"] is None
            detail = d["last_error_params"]["detail"]
            assert detail and d["last_error"] == f"cannot connect: {detail}"
        assert all(d["next_attempt_at"] > d["created_at"] for d in log)  # backed off
        async with asyncio.timeout(WAIT):
            while p.count("retry") < 3:
                await asyncio.sleep(0.05)
    # the control plane is stopped; the queue is in the database. Start again, receiver up.
    await receiver.start()
    async with plane(url, clock, cert[0], **LOOPBACK) as p:
        clock.t += 3600
        await p.kick()
        got = await receiver.wait(3)
        await asyncio.sleep(0.5)  # nothing more comes
        assert sorted(receiver.ids()) == sorted(d["id"] for d in log)  # each once
        for g in got:
            check_signed(g, hook["secret"])
        # (retries come in any order: receivers order by the payload's times)
        assert sorted(g.json["event"] for g in got) == ["answered", "ended", "ringing"]
        after = await all_delivered(p, w.th, 3)
        assert all(d["state"] == "delivered" and d["attempts"] >= 2 for d in after)
        # a success clears the last failure's code and params with its text
        assert all(d["last_error_code"] is None and d["last_error_params"] == {} for d in after)

        # a receiver answering 500 is tried again, and again, then delivered
        receiver.status = 500
        n = len(receiver.got)
        retries = p.count("retry")
        await ring(p, w)
        await receiver.wait(n + 1)
        # the worker records the failure, its retry due a backoff after the clock's time then,
        # before the clock moves (else the retry is due only a backoff after the moved clock)
        async with asyncio.timeout(WAIT):
            while p.count("retry") <= retries:
                await asyncio.sleep(0.05)
        receiver.status = 200
        clock.t += 3600
        await p.kick()
        await receiver.wait(n + 2)
        assert receiver.ids()[n] == receiver.ids()[n + 1]  # the same id: idempotent
        (newest, *_) = await all_delivered(p, w.th, 4)
        assert newest["state"] == "delivered" and newest["attempts"] == 2

        # "send again": the same idempotency id once more
        r = await p.c.post(f"/v1/webhooks/deliveries/{newest['id']}/retry", headers=w.th)
        assert r.status_code == 202 and r.json()["state"] == "pending"
        assert r.json()["last_error_code"] is None and r.json()["last_error_params"] == {}
        await receiver.wait(n + 3)
        assert receiver.ids()[-1] == newest["id"]
        err(await p.c.post("/v1/webhooks/deliveries/nope/retry", headers=w.th), 404)


async def test_rotation_signs_with_both_secrets_during_the_grace(
    url: str, cert: tuple[Path, Path], receiver: Receiver
) -> None:
    clock = Clock()
    async with plane(url, clock, cert[0], **LOOPBACK) as p:
        w = await world(p.api)
        hook = await register(p, w.th, receiver.url, events=["ringing"])
        r = await p.c.post(
            f"/v1/webhooks/{hook['id']}/rotate", json={"grace_seconds": 600}, headers=w.th
        )
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["secret"] != hook["secret"] and new["previous_secret_until"] == clock.t + 600
        await ring(p, w)
        (g,) = await receiver.wait(1)
        assert g.headers["clickacall-webhook-signature"].count("v1=") == 2
        check_signed(g, hook["secret"], new["secret"])  # either secret verifies
        clock.t += 601  # the grace is over: only the new secret signs
        await ring(p, w)
        g = (await receiver.wait(2))[1]
        assert g.headers["clickacall-webhook-signature"].count("v1=") == 1
        check_signed(g, new["secret"])
        ts = int(g.headers["clickacall-webhook-timestamp"])
        assert not verify(g.headers["clickacall-webhook-signature"], hook["secret"], ts, g.body)
        assert (await p.c.get(f"/v1/webhooks/{hook['id']}", headers=w.th)).json()[
            "previous_secret_until"
        ] is None


DENIED = [
    "https://127.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://10.1.2.3/hook",
    "https://[::1]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://localhost/hook",  # a name resolving to loopback
    "https://192.168.1.10:8443/hook",
]


async def test_denied_addresses_are_refused_at_registration(url: str) -> None:
    clock = Clock()
    async with plane(url, clock, None) as p:
        w = await world(p.api, node=False)
        for target in DENIED:
            r = await p.c.post("/v1/webhooks", json={"url": target}, headers=w.th)
            assert err(r, 422, "invalid").startswith("url: "), target
        for target, why in (
            ("http://example.com/hook", "https://"),
            ("https://user:pw@example.com/", "user name"),
            ("ftp://example.com/", "https://"),
            ("https:///nohost", "host"),
        ):
            r = await p.c.post("/v1/webhooks", json={"url": target}, headers=w.th)
            assert why in err(r, 422, "invalid"), target
        r = await p.c.post(
            "/v1/webhooks", json={"url": "https://[::1]/", "events": ["rung"]}, headers=w.th
        )
        assert err(r, 422).startswith("events: ")
        r = await p.c.post(
            "/v1/webhooks", json={"url": "https://[::1]/", "events": []}, headers=w.th
        )
        assert err(r, 422).startswith("events: ")
        assert (await p.c.get("/v1/webhooks", headers=w.th)).json() == []  # nothing stored
    # the operator's allow list opens loopback, and only what it names
    async with plane(url, clock, None, **LOOPBACK) as p:
        th = (await world(p.api, "Other", node=False)).th
        await register(p, th, "https://127.0.0.1/hook")
        await register(p, th, "https://localhost/hook")
        for target in DENIED[1:5]:
            r = await p.c.post("/v1/webhooks", json={"url": target}, headers=th)
            assert err(r, 422).startswith("url: "), target
        r = await p.c.patch(
            f"/v1/webhooks/{(await register(p, th, 'https://127.0.0.2/'))['id']}",
            json={"url": "https://10.0.0.1/"},
            headers=th,
        )
        assert err(r, 422).startswith("url: ")


async def test_a_host_that_moves_to_a_denied_address_is_refused_at_delivery(
    url: str, cert: tuple[Path, Path], receiver: Receiver
) -> None:
    clock = Clock()
    names = {"localhost": ["127.0.0.1"], "crm.example": ["127.0.0.1"]}

    async def resolve(host: str, port: int) -> list[str]:
        return names[host]

    async with plane(url, clock, cert[0], **LOOPBACK) as p:
        p.app.state.hook_policy = dataclasses.replace(hook_policy(p.app), resolve=resolve)
        w = await world(p.api)
        # by name: the request goes to the checked address, with the name for TLS and Host
        good = await register(p, w.th, f"https://localhost:{receiver.port}/hook")
        await ring(p, w)
        (g,) = await receiver.wait(1)
        assert g.headers["host"] == f"localhost:{receiver.port}"
        check_signed(g, good["secret"])
        r = await p.c.patch(f"/v1/webhooks/{good['id']}", json={"active": False}, headers=w.th)
        assert r.status_code == 200 and r.json()["active"] is False

        await register(p, w.th, f"https://crm.example:{receiver.port}/hook")
        names["crm.example"] = ["10.9.8.7"]  # re-pointed inside after registration
        await ring(p, w)
        async with asyncio.timeout(WAIT):
            while p.count("denied") < 1:
                await asyncio.sleep(0.05)
        (d,) = [x for x in await deliveries(p, w.th) if x["attempts"] and x["state"] == "pending"]
        assert "10.9.8.7" in d["last_error"] and d["last_status"] is None
        assert d["last_error_code"] == "refused"
        assert d["last_error_params"] == {
            "reason": "url_private",
            "host": "crm.example",
            "address": "10.9.8.7",
            "detail": d["last_error"],
        }
        assert len(receiver.got) == 1  # nothing reached anyone
        # and it stays refused when tried again
        clock.t += 3600
        await p.kick()
        async with asyncio.timeout(WAIT):
            while p.count("denied") < 2:
                await asyncio.sleep(0.05)
        assert len(receiver.got) == 1


async def test_retries_stop_after_the_window(
    url: str, cert: tuple[Path, Path], receiver: Receiver
) -> None:
    clock = Clock()
    receiver.status = 503
    async with plane(url, clock, cert[0], hook_window=120.0, **LOOPBACK) as p:
        w = await world(p.api)
        await register(p, w.th, receiver.url, events=["ringing"])
        await ring(p, w)
        await receiver.wait(1)
        async with asyncio.timeout(WAIT):
            while True:
                (d,) = await deliveries(p, w.th)
                if d["state"] == "failed":
                    break
                clock.t += 30
                await p.kick()
                await asyncio.sleep(0.1)
        assert d["last_status"] == 503 and d["last_error"] == "HTTP 503"
        assert d["last_error_code"] == "http_status" and d["last_error_params"] == {"status": 503}
        assert 2 <= d["attempts"] == len(receiver.got) and p.count("failed") == 1


async def test_a_redirect_a_slow_answer_and_a_switched_off_endpoint_have_their_codes(
    url: str, cert: tuple[Path, Path], receiver: Receiver
) -> None:
    """Each failed attempt records a code of HOOK_ERRORS and its params beside the English
    text: a redirect (not followed), no answer within --webhook-timeout, and an endpoint
    switched off after the event was queued (nothing sent)."""
    clock = Clock()
    async with plane(url, clock, cert[0], hook_timeout=2.0, **LOOPBACK) as p:
        w = await world(p.api)
        hook = await register(p, w.th, receiver.url, events=["ringing"])

        async def attempted(n: int) -> dict[str, Any]:
            async with asyncio.timeout(WAIT):
                while True:
                    (d,) = await deliveries(p, w.th)
                    if d["attempts"] >= n:
                        return d
                    await asyncio.sleep(0.05)

        async def again(n: int) -> dict[str, Any]:
            clock.t += 3600
            await p.kick()
            return await attempted(n)

        receiver.status = 302
        await ring(p, w)
        d = await attempted(1)
        assert d["last_status"] == 302 and d["state"] == "pending"
        assert d["last_error"] == "HTTP 302: redirects are not followed"
        assert d["last_error_code"] == "redirect" and d["last_error_params"] == {"status": 302}

        receiver.status, receiver.stall = 200, 6.0
        d = await again(2)
        assert len(receiver.got) == 2 and d["last_status"] is None
        assert d["last_error"] == "no answer within 2 s"
        assert d["last_error_code"] == "timeout" and d["last_error_params"] == {"seconds": 2}

        receiver.stall = 0.0
        r = await p.c.patch(f"/v1/webhooks/{hook['id']}", json={"active": False}, headers=w.th)
        assert r.status_code == 200, r.text
        d = await again(3)
        assert len(receiver.got) == 2  # not sent
        assert d["last_error"] == "the endpoint is switched off" and d["last_status"] is None
        assert d["last_error_code"] == "off" and d["last_error_params"] == {}


def test_every_error_code_has_a_sentence_in_both_languages_and_is_documented() -> None:
    """The dashboard says why a delivery failed with the catalogue's dash.hooks.error.<code>
    (a code without one would show the server's English text); docs/webhooks.md lists the
    codes for API clients."""
    docs = (Path(__file__).parent.parent / "docs" / "webhooks.md").read_text()
    listed = re.findall(
        r"^\| `(\w+)` \| ", docs.split("## The delivery log")[1].split("\n## ")[0], re.M
    )
    assert listed[0] == "last_error_code" and tuple(listed[1:]) == HOOK_ERRORS  # header, rows
    table = messages()
    sentences = {k for k in table["en"] if k.startswith("dash.hooks.error.")}
    assert sentences == {f"dash.hooks.error.{code}" for code in HOOK_ERRORS}
    for code, param in (("timeout", "{seconds}"), ("http_status", "{status}")):
        for lang in ("en", "de"):
            assert param in table[lang][f"dash.hooks.error.{code}"], (lang, code)
    assert table["de"]["dash.hooks.error.connect"] != table["en"]["dash.hooks.error.connect"]


async def test_deliveries_stored_before_the_codes_keep_their_text(url: str) -> None:
    """Migration 0013 adds the code and params to a database that has deliveries: those keep
    their English text and have no code (the dashboard shows their text), new attempts write
    both."""
    backend = "sqlite" if url.startswith("sqlite") else "postgres"
    old = [m for m in load_migrations(backend) if m.version < 13]
    rows = [
        "INSERT INTO tenants (id, name, allowed_regions, retention_months, created_at)"
        " VALUES ('t1', 'Old', '[\"eu\"]', 12, 1)",
        "INSERT INTO webhook_endpoints (tenant_id, id, url, events, secret, created_at)"
        " VALUES ('t1', 'e1', 'https://crm.example/hook', '[\"ringing\"]', 'whsec_x', 1)",
        "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event, payload, state,"
        " attempts, next_attempt_at, last_status, last_error, created_at, queued_at, done_at)"
        " VALUES ('t1', 'wh_old', 'e1', 'ringing', '{}', 'failed', 3, 1, 503, 'HTTP 503', 1, 1,"
        " 2)",
    ]
    schema = (
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL)"
    )
    if backend == "sqlite":
        db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            db.execute(schema)
            for m in old:
                db.executescript(m.sql)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
            for row in rows:
                db.execute(row)
        finally:
            db.close()
    else:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(schema)
            for m in old:
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, 0)", m.version, m.name
                )
            for row in rows:
                await conn.execute(row)
        finally:
            await conn.close()
    assert await migrate(url) == [m.version for m in load_migrations(backend) if m.version >= 13]
    store = await open_store(url)
    try:
        (d,) = (await store.list_deliveries("t1"))[0]
        assert (d.last_status, d.last_error) == (503, "HTTP 503")
        assert d.last_error_code is None and d.last_error_params == {}
        out = DeliveryOut.of(d).model_dump()
        assert out["last_error"] == "HTTP 503" and out["last_error_code"] is None
        # sent again and failed anew: the code and params are written and read back
        assert await store.requeue_delivery("t1", "wh_old", 10.0)
        d = await store.get_delivery("t1", "wh_old")
        assert d is not None and d.last_error is None and d.last_error_code is None
        d.attempts, d.last_status = 1, None
        Failure("timeout", "no answer within 10 s", {"seconds": 10.0}).record(d)
        assert await store.finish_attempt(d)
        got = await store.get_delivery("t1", "wh_old")
        assert got is not None and got.last_error == "no answer within 10 s"
        assert (got.last_error_code, got.last_error_params) == ("timeout", {"seconds": 10.0})
    finally:
        await store.close()


async def test_a_full_queue_records_the_event_as_failed(url: str) -> None:
    clock = Clock()
    async with plane(url, clock, None, hook_queue=1, **LOOPBACK) as p:
        w = await world(p.api)
        await register(p, w.th, "https://127.0.0.1:9/hook", events=["ringing"])
        await ring(p, w)
        await ring(p, w)
        log = await deliveries(p, w.th)
        assert sorted(d["state"] for d in log) == ["failed", "pending"]
        assert "queue full" in next(d["last_error"] for d in log if d["state"] == "failed")
        full = next(d for d in log if d["state"] == "failed")
        assert full["last_error_code"] == "queue_full" and full["last_error_params"] == {}
        assert p.count("queue_full") == 1


async def test_isolation_between_businesses(url: str) -> None:
    clock = Clock()
    async with plane(url, clock, None, **LOOPBACK) as p:
        w = await world(p.api)
        other = await world(p.api, "Globex", node=False)
        hook = await register(p, w.th, "https://127.0.0.1:9/hook", events=["ringing"])
        await ring(p, w)
        (d,) = await deliveries(p, w.th)
        oh = other.th
        assert (await p.c.get("/v1/webhooks", headers=oh)).json() == []
        assert await deliveries(p, oh) == []
        assert await deliveries(p, oh, endpoint=hook["id"]) == []
        err(await p.c.get(f"/v1/webhooks/{hook['id']}", headers=oh), 404)
        err(await p.c.patch(f"/v1/webhooks/{hook['id']}", json={}, headers=oh), 404)
        err(await p.c.post(f"/v1/webhooks/{hook['id']}/rotate", headers=oh), 404)
        err(await p.c.delete(f"/v1/webhooks/{hook['id']}", headers=oh), 404)
        err(await p.c.post(f"/v1/webhooks/deliveries/{d['id']}/retry", headers=oh), 404)
        err(await p.c.get("/v1/webhooks"), 401)
        # the owner deletes it, with its log
        r = await p.c.delete(f"/v1/webhooks/{hook['id']}", headers=w.th)
        assert r.status_code == 204
        assert await deliveries(p, w.th) == []


async def test_the_dashboard_twins_are_for_admins(url: str) -> None:
    clock = Clock()
    async with plane(url, clock, None, **LOOPBACK) as p:
        transport = httpx.ASGITransport(app=p.app)
        env = Env(transport, clock, p.store, p.c)
        admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
        staff = await invite(env, admin, "Sam", "sam@acme.test")
        other = await tenant_with_admin(env, "Globex", "owner@globex.test")
        body = {"url": "https://127.0.0.1:9/hook", "events": ["answered", "ended"]}
        r = await admin.c.post("/v1/dashboard/webhooks", json=body)  # no CSRF
        assert r.status_code == 403
        r = await admin.c.post(
            "/v1/dashboard/webhooks", json={**body, "url": "https://10.0.0.1/"}, headers=admin.w
        )
        assert err(r, 422).startswith("url: ")
        r = await admin.c.post("/v1/dashboard/webhooks", json=body, headers=admin.w)
        assert r.status_code == 201, r.text
        hook = r.json()
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["answered", "ended"]
        listed = (await admin.c.get("/v1/dashboard/webhooks")).json()
        assert [h["id"] for h in listed] == [hook["id"]] and listed[0]["secret"] is None
        # the API key of the same business sees it too
        assert (await p.c.get("/v1/webhooks", headers=admin.key)).json()[0]["id"] == hook["id"]
        r = await admin.c.post(f"/v1/dashboard/webhooks/{hook['id']}/rotate", headers=admin.w)
        assert r.status_code == 200 and r.json()["secret"] not in (None, hook["secret"])
        r = await admin.c.patch(
            f"/v1/dashboard/webhooks/{hook['id']}",
            json={"events": ["missed"], "include_visitor": True},
            headers=admin.w,
        )
        assert r.json()["events"] == ["missed"] and r.json()["include_visitor"] is True
        page = (await admin.c.get("/v1/dashboard/webhooks/deliveries")).json()
        assert page == {"deliveries": [], "next_cursor": None}
        # staff only: 403 on every route; signed out: 401; another business: 404
        for method, path in (
            ("GET", "/v1/dashboard/webhooks"),
            ("GET", "/v1/dashboard/webhooks/deliveries"),
            ("POST", "/v1/dashboard/webhooks"),
            ("PATCH", f"/v1/dashboard/webhooks/{hook['id']}"),
            ("DELETE", f"/v1/dashboard/webhooks/{hook['id']}"),
            ("POST", f"/v1/dashboard/webhooks/{hook['id']}/rotate"),
            ("POST", "/v1/dashboard/webhooks/deliveries/x/retry"),
        ):
            r = await staff.c.request(method, path, json=body, headers=staff.w)
            assert r.status_code == 403, (method, path)
            r = await env.client().request(method, path, json=body)
            assert r.status_code == 401, (method, path)
        assert (await staff.c.get("/dashboard/webhooks")).status_code == 403
        assert (await other.c.get("/v1/dashboard/webhooks")).json() == []
        r = await other.c.delete(f"/v1/dashboard/webhooks/{hook['id']}", headers=other.w)
        assert r.status_code == 404
        r = await admin.c.delete(f"/v1/dashboard/webhooks/{hook['id']}", headers=admin.w)
        assert r.status_code == 204
        assert (await admin.c.get("/dashboard/webhooks")).status_code == 200


def test_backoff_grows_with_jitter_and_stops_at_the_window() -> None:
    rng = random.Random(1)
    d = Delivery(id="x", tenant_id="t", endpoint_id="e", event="ringing", payload="{}")
    last = 0.0
    for attempts in range(1, 9):
        d.attempts = attempts
        delay = BACKOFF_FIRST * 2 ** (attempts - 1)
        at = next_attempt(d, 1000.0, 86400.0, rng)
        assert at is not None and 1000 + delay / 2 <= at <= 1000 + delay
        assert at > last - 1000 or attempts == 1
        last = at - 1000
    d.attempts = 40
    at = next_attempt(d, 1000.0, 86400.0, rng)
    assert at is not None and at <= 1000 + 3600  # capped
    assert next_attempt(d, 86400.0, 86400.0, rng) is None  # past the window from queued_at


def test_the_deny_list_is_the_relays() -> None:
    p = HookPolicy.of([])
    for addr in (
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "100.64.0.1",
        "::ffff:8.8.8.8",
        "0.0.0.0",
        "fe80::1",
        "not an address",
    ):
        assert p.denied(addr), addr
    for addr in ("8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"):
        assert not p.denied(addr), addr
    opened = HookPolicy.of(["127.0.0.0/8"])
    assert not opened.denied("127.0.0.1") and opened.denied("10.0.0.1")
    assert opened.denied("::ffff:127.0.0.1")  # an allowed IPv4 network opens no IPv6 form


async def test_new_events_need_an_endpoint_for_them(url: str) -> None:
    """A call of a business without endpoints, or whose endpoints chose other events or are
    switched off, queues nothing."""
    clock = Clock()
    async with plane(url, clock, None, **LOOPBACK) as p:
        w = await world(p.api)
        await a_call(p, w)
        assert await deliveries(p, w.th) == []
        await register(p, w.th, "https://127.0.0.1:9/", events=["missed"])
        await register(p, w.th, "https://127.0.0.1:9/", active=False)
        await a_call(p, w)
        assert await deliveries(p, w.th) == []


async def test_an_erasure_takes_the_deliveries_that_carried_visitor_data(url: str) -> None:
    clock = Clock()
    async with plane(url, clock, None, **LOOPBACK) as p:
        w = await world(p.api)
        plain = await register(p, w.th, "https://127.0.0.1:9/a", events=["callback_requested"])
        await register(
            p, w.th, "https://127.0.0.1:9/b", events=["callback_requested"], include_visitor=True
        )
        missed = await a_call(p, w, answer=False)
        r = await p.c.post(
            f"/v1/calls/{missed['call_id']}/callback",
            json={"name": "Eve", "contact": "eve@example.com"},
            headers=bearer(missed["token"]),
        )
        assert r.status_code == 201, r.text
        assert len(await deliveries(p, w.th)) == 2
        # the data-subject export lists them with the call's records
        r = await p.c.get("/v1/subjects", params={"call_id": missed["call_id"]}, headers=w.th)
        assert r.status_code == 200, r.text
        assert "webhook_deliveries" in r.text and "eve@example.com" in r.text
        r = await p.c.delete("/v1/subjects", params={"call_id": missed["call_id"]}, headers=w.th)
        assert r.status_code == 200, r.text
        (left,) = await deliveries(p, w.th)
        assert left["endpoint_id"] == plain["id"] and "eve@example.com" not in left["payload"]


def test_the_webhook_flags() -> None:
    base = ["--db", "sqlite:///x.db", "--token-key", "t" * 16]
    s, _, _ = load_settings(base, "x")
    assert (s.hook_concurrency, s.hook_timeout, s.hook_window) == (8, 10.0, 86400.0)
    assert (s.hook_queue, s.hook_endpoints) == (10_000, 20)
    assert s.hook_allow == [] and not s.hook_allow_http
    flags = (
        "--webhook-concurrency 2 --webhook-timeout 3 --webhook-window 60 --webhook-queue 5"
        " --webhook-endpoints 1 --webhook-allow 127.0.0.0/8 --webhook-allow ::1/128"
        " --webhook-allow-http --webhook-ca /ca.pem"
    )
    s, _, _ = load_settings([*base, *flags.split()], "x")
    assert (s.hook_concurrency, s.hook_timeout, s.hook_window, s.hook_queue) == (2, 3, 60, 5)
    assert s.hook_allow == ["127.0.0.0/8", "::1/128"] and s.hook_allow_http
    assert s.hook_endpoints == 1 and s.hook_ca == "/ca.pem"
    for bad in (
        ["--webhook-allow", "nope"],
        ["--webhook-concurrency", "0"],
        ["--webhook-timeout", "0"],
        ["--webhook-queue", "0"],
    ):
        with pytest.raises(UsageError):
            load_settings([*base, *bad], "x")


async def test_too_many_endpoints_is_409(url: str) -> None:
    async with plane(url, Clock(), None, hook_endpoints=1, **LOOPBACK) as p:
        w = await world(p.api, node=False)
        await register(p, w.th, "https://127.0.0.1/a")
        r = await p.c.post("/v1/webhooks", json={"url": "https://127.0.0.1/b"}, headers=w.th)
        assert err(r, 409, "too_many").startswith("url: ")
