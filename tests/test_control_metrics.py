"""``GET /metrics`` on the control plane (control/metrics.py), in process over httpx's ASGI
transport against a real SQLite store, with the app built by ``create_app`` and
``install_metrics`` applied to it the way ``create_app`` will."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from control.app import create_app
from control.metrics import (
    MAX_REGIONS,
    ControlMetrics,
    install_metrics,
    metrics_listener,
    metrics_of,
    node_counts,
)
from control.models import CallStatus, RelayNode, Role, Tenant
from control.store import Conflict, Store, open_store
from tests.test_api import CHROME_UA, NODEH, OPH, Clock, bearer, make_settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Env:
    c: httpx.AsyncClient
    m: httpx.AsyncClient  # the separate metrics listener (--metrics)
    app: FastAPI
    clock: Clock
    store: Store


@pytest.fixture
async def env(tmp_path: object) -> AsyncIterator[Env]:
    store = await open_store(f"sqlite:///{tmp_path}/m.db")
    clock = Clock()
    app = create_app(make_settings(clock), store)
    install_metrics(app)
    try:
        transport = httpx.ASGITransport(app=app)
        listener = httpx.ASGITransport(app=metrics_listener(app))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://test") as c,
            httpx.AsyncClient(transport=listener, base_url="http://metrics") as m,
        ):
            yield Env(c, m, app, clock, store)
    finally:
        await store.close()


async def scrape(env: Env) -> Samples:
    r = await env.m.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def beat(env: Env, node_id: str, region: str, **kw: object) -> None:
    body = {"node_id": node_id, "region": region, "urls": [f"turn:{node_id}.example:3478"], **kw}
    r = await env.c.post("/v1/nodes/heartbeat", json=body, headers=NODEH)
    assert r.status_code == 200, r.text


async def tenant_with_link(env: Env) -> tuple[dict[str, str], str, str]:
    r = await env.c.post("/v1/tenants", json={"name": "Acme"}, headers=OPH)
    th = bearer(r.json()["api_key"]["key"])
    staff = (await env.c.post("/v1/staff", json={"name": "Ann"}, headers=th)).json()["id"]
    r = await env.c.post("/v1/links", json={"name": "Sales", "ring_staff": [staff]}, headers=th)
    return th, staff, r.json()["public_id"]


async def test_endpoint_is_served_and_not_in_the_schema(env: Env) -> None:
    samples = await scrape(env)
    spec = (await env.c.get("/openapi.json")).json()
    assert "/metrics" not in spec["paths"]
    # only the separate listener serves it: the API's port has no /metrics
    assert (await env.c.get("/metrics")).status_code == 404
    assert (await env.m.get("/v1/nodes", headers=OPH)).status_code == 404
    # every call status and token role exists from the start
    for status in CallStatus:
        assert ("clickacall_control_call_transitions_total", (("status", status.value),)) in (
            samples
        )
    for role in ("visitor", "staff", "ice"):
        assert ("clickacall_control_tokens_issued_total", (("role", role),)) in samples
    assert value(samples, "clickacall_control_websocket_connections") == 0


async def test_requests_by_route_template_method_and_status_class(env: Env) -> None:
    th, staff, public_id = await tenant_with_link(env)
    await beat(env, "n1", "eu")
    for _ in range(3):
        r = await env.c.post(f"/v1/links/{public_id}/calls", headers={"User-Agent": CHROME_UA})
        assert r.status_code == 201, r.text
    for missing in ("nope1", "nope2"):
        assert (await env.c.get(f"/v1/calls/{missing}", headers=th)).status_code == 404
    assert (await env.c.get("/v1/no/such/route")).status_code == 404
    assert (await env.c.put("/healthz")).status_code == 405
    assert (await env.c.get("/v1/calls/x", headers=bearer("no"))).status_code == 401
    s = await scrape(env)
    req = "clickacall_control_http_requests_total"
    click = "/v1/links/{public_id}/calls"
    assert value(s, req, route=click, method="POST", status="2xx") == 3
    assert value(s, req, route="/v1/calls/{call_id}", method="GET", status="4xx") == 3
    assert value(s, req, route="unmatched", method="GET", status="4xx") == 1
    assert value(s, req, route="/healthz", method="PUT", status="4xx") == 1
    assert value(s, req, route="/v1/tenants", method="POST", status="2xx") == 1
    # no raw path, id or key in any label
    for (_, labels), _v in s.items():
        for _k, v in labels:
            assert public_id not in v and "nope" not in v and staff not in v
    hist = "clickacall_control_http_request_duration_seconds"
    assert value(s, f"{hist}_count", route=click, method="POST") == 3
    assert value(s, f"{hist}_bucket", route=click, method="POST", le="+Inf") == 3
    assert 0 < value(s, f"{hist}_sum", route=click, method="POST") < 30
    # the first scrape is counted by the time of the second
    s2 = await scrape(env)
    assert value(s2, req, route="/metrics", method="GET", status="2xx") >= 1


async def test_odd_methods_fold_into_other(env: Env) -> None:
    assert (await env.c.request("PROPFIND", "/healthz")).status_code == 405
    s = await scrape(env)
    req = "clickacall_control_http_requests_total"
    assert value(s, req, route="/healthz", method="other", status="4xx") == 1


async def test_hooks(env: Env) -> None:
    m = metrics_of(env.app)
    assert isinstance(m, ControlMetrics) and metrics_of(env.app) is m
    m.call_created()
    m.call_created()
    m.call_transition(CallStatus.ANSWERED)
    m.call_transition("ended")
    m.token_issued(Role.VISITOR)
    m.token_issued(Role.STAFF, 2)
    m.token_issued(None)
    m.token_revoked()
    m.token_revoked(0)
    m.signalling_message()
    m.signalling_message(4)
    m.ws_open.inc()
    with m.websocket():
        s = await scrape(env)
        assert value(s, "clickacall_control_websocket_connections") == 2
    with pytest.raises(RuntimeError), m.websocket():
        raise RuntimeError("the connection broke")
    with pytest.raises(ValueError):
        m.call_transition("exploded")  # unbounded label values are refused
    with pytest.raises(ValueError):
        m.token_issued("admin")
    s = await scrape(env)
    assert value(s, "clickacall_control_websocket_connections") == 1
    assert value(s, "clickacall_control_calls_created_total") == 2
    assert value(s, "clickacall_control_call_transitions_total", status="answered") == 1
    assert value(s, "clickacall_control_call_transitions_total", status="ended") == 1
    assert value(s, "clickacall_control_call_transitions_total", status="missed") == 0
    assert value(s, "clickacall_control_tokens_issued_total", role="visitor") == 1
    assert value(s, "clickacall_control_tokens_issued_total", role="staff") == 2
    assert value(s, "clickacall_control_tokens_issued_total", role="ice") == 1
    assert value(s, "clickacall_control_tokens_revoked_total") == 1
    assert value(s, "clickacall_control_signalling_messages_total") == 5


async def test_relay_nodes_by_region_at_scrape_time(env: Env) -> None:
    s = await scrape(env)
    assert not [k for k in s if k[0].startswith("clickacall_control_relay_nodes")]
    await beat(env, "a", "eu")
    await beat(env, "b", "eu", draining=True)
    await beat(env, "c", "us-east")
    s = await scrape(env)
    assert value(s, "clickacall_control_relay_nodes", region="eu") == 2
    assert value(s, "clickacall_control_relay_nodes_healthy", region="eu") == 2
    assert value(s, "clickacall_control_relay_nodes_draining", region="eu") == 1
    assert value(s, "clickacall_control_relay_nodes", region="us-east") == 1
    env.clock.t += 60  # every heartbeat is now stale
    await beat(env, "c", "us-east")
    s = await scrape(env)
    assert value(s, "clickacall_control_relay_nodes", region="eu") == 2
    assert value(s, "clickacall_control_relay_nodes_healthy", region="eu") == 0
    assert value(s, "clickacall_control_relay_nodes_draining", region="eu") == 0
    assert value(s, "clickacall_control_relay_nodes_healthy", region="us-east") == 1


async def test_store_failure_drops_node_figures(env: Env) -> None:
    await beat(env, "a", "eu")
    assert value(await scrape(env), "clickacall_control_relay_nodes", region="eu") == 1

    async def broken(region: str | None = None) -> list[RelayNode]:
        raise OSError("database gone")

    env.store.list_nodes = broken  # type: ignore[method-assign]
    s = await scrape(env)
    assert value(s, "clickacall_control_relay_nodes", region="eu") == 0
    assert value(s, "clickacall_control_metrics_store_errors_total") == 1


def test_region_labels_are_capped() -> None:
    nodes = [
        RelayNode(id=f"n{i}", region=f"r{i:03d}", urls=["turn:x:3478"], last_heartbeat=100.0)
        for i in range(MAX_REGIONS + 10)
    ]
    counts = node_counts(nodes, now=101.0, heartbeat_timeout=15.0)
    assert len(counts) == MAX_REGIONS + 1
    assert counts["other"] == (10, 10, 0)
    assert sum(k for k, _, _ in counts.values()) == len(nodes)


async def test_apps_have_separate_registries(tmp_path: object) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/two.db")
    try:
        apps = [create_app(make_settings(Clock()), store) for _ in range(2)]
        for app in apps:
            install_metrics(app)
        metrics_of(apps[0]).call_created()
        outs = []
        for app in apps:
            transport = httpx.ASGITransport(app=metrics_listener(app))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                outs.append((await c.get("/metrics")).text)
        assert "clickacall_control_calls_created_total 1.0" in outs[0]
        assert "clickacall_control_calls_created_total 0.0" in outs[1]
    finally:
        await store.close()


async def test_mounted_apps_are_labelled_by_their_prefix(env: Env) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send

    async def page(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:  # like StaticFiles
        await PlainTextResponse("raw")(scope, receive, send)

    app = create_app(make_settings(Clock()), env.store)
    install_metrics(app)
    app.mount("/pages", Starlette(routes=[Route("/{name}", page)]))
    app.mount("/files", raw)  # (the web front serves /static itself)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for name in ("a.js", "b.css"):
            assert (await c.get(f"/pages/{name}")).text == "hi"
            assert (await c.get(f"/files/{name}")).text == "raw"
    listener = httpx.ASGITransport(app=metrics_listener(app))
    async with httpx.AsyncClient(transport=listener, base_url="http://t") as c:
        text = (await c.get("/metrics")).text
    for route in ("/pages/{name}", "/files/{path}"):
        labels = f'method="GET",route="{route}",status="2xx"'
        assert f"clickacall_control_http_requests_total{{{labels}}} 2.0" in text, text
    assert "a.js" not in text


async def test_a_call_through_the_api_is_counted_where_it_is_stored(env: Env) -> None:
    """create_app wires the store: a click, an answer and a hangup show up as a created call,
    two state changes, three tokens issued and the call's tokens revoked at its end; every
    statement is timed."""
    await beat(env, "n1", "eu")
    th, staff, public_id = await tenant_with_link(env)
    r = await env.c.post(f"/v1/staff/{staff}/token", headers=th)
    sh = bearer(r.json()["token"])
    before = await scrape(env)
    r = await env.c.post(f"/v1/links/{public_id}/calls", headers={"User-Agent": CHROME_UA})
    assert r.status_code == 201, r.text
    call_id = r.json()["call_id"]
    env.clock.t += 3
    assert (await env.c.post(f"/v1/calls/{call_id}/answer", headers=sh)).status_code == 200
    env.clock.t += 30
    assert (await env.c.post(f"/v1/calls/{call_id}/hangup", headers=sh)).status_code == 200
    # a second hangup changes nothing and counts nothing
    assert (await env.c.post(f"/v1/calls/{call_id}/hangup", headers=sh)).status_code == 409
    s = await scrape(env)

    def delta(name: str, **labels: str) -> float:
        return value(s, name, **labels) - value(before, name, **labels)

    assert delta("clickacall_control_calls_created_total") == 1
    assert delta("clickacall_control_call_transitions_total", status="answered") == 1
    assert delta("clickacall_control_call_transitions_total", status="ended") == 1
    assert delta("clickacall_control_call_transitions_total", status="ringing") == 0
    assert delta("clickacall_control_tokens_issued_total", role="visitor") == 1
    assert delta("clickacall_control_tokens_issued_total", role="staff") == 1
    assert delta("clickacall_control_tokens_revoked_total") == 2  # both of the call's tokens
    reads = delta("clickacall_control_db_query_duration_seconds_count", op="read")
    writes = delta("clickacall_control_db_query_duration_seconds_count", op="write")
    assert reads >= 5 and writes >= 4, (reads, writes)
    assert value(s, "clickacall_control_db_errors_total", op="write") == 0
    # created by create_app, before any purge ran
    assert ("clickacall_control_retention_purges_total", ()) in s
    assert ("clickacall_control_audit_entries_total", (("action", "erase"),)) in s


async def test_failed_statements_are_counted(env: Env) -> None:
    r = await env.c.post("/v1/tenants", json={"name": "Acme"}, headers=OPH)
    assert r.status_code == 201
    before = await scrape(env)
    dup = Tenant(  # a duplicate id: the database refuses the INSERT
        id=r.json()["tenant"]["id"], name="Again"
    )
    with pytest.raises(Conflict):
        await env.store.create_tenant(dup)
    s = await scrape(env)
    name = "clickacall_control_db_errors_total"
    assert value(s, name, op="write") - value(before, name, op="write") == 1
