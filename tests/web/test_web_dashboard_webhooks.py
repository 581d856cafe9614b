"""The dashboard's Webhooks section in real Chromium: an admin tries a private address (the
server's message beside the URL field, nothing stored) and no events (beside the events), then
adds an HTTPS endpoint on loopback (allowed for the test; the control plane trusts the
receiver's self-signed certificate) and sees its signing secret once; a visitor's callback
request sends two events that arrive signed with that secret; the delivery log shows them and
"send again" delivers one again with the same id. German on a phone. Failed deliveries say
why in the page's language (English, German), the technical detail below, and a delivery
stored before the error codes shows its stored text. axe-core, the cookie audit and
screenshots as on every dashboard page (build/screenshots/dashboard-webhooks*)."""

from __future__ import annotations

import json
import sqlite3
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from control.webhooks import verify
from tests.controlproc import bearer
from tests.relayproc import make_certificate
from tests.web.browser import Browser, missing, screenshot
from tests.web.dashpages import WebhooksSection
from tests.web.pages import SignInPage
from tests.web.test_web_dashboard import become_admin, business, check_page
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]


class Receiver(ThreadingHTTPServer):
    """An HTTPS receiver on 127.0.0.1 in a thread: keeps (headers, body) of every POST and
    answers 200, or 503 on a path ending ``/busy``."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/crm/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(503 if self.path.endswith("/busy") else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def tls() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="clickacall-hooks-") as d:
        cert, key = Path(d) / "cert.pem", Path(d) / "key.pem"
        make_certificate(cert, key)
        yield cert, key


@pytest.fixture(scope="module")
def receiver(tls: tuple[Path, Path]) -> Iterator[Receiver]:
    r = Receiver(*tls)
    r.thread.start()
    try:
        yield r
    finally:
        r.shutdown()
        r.server_close()


@pytest.fixture(scope="module")
def control(tls: tuple[Path, Path]) -> Iterator[WebControl]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    extra = {"hook_allow": ["127.0.0.0/8"], "hook_ca": str(tls[0])}
    control = WebControl(extra=extra).start()
    try:
        yield control
    finally:
        control.stop()


@pytest.mark.timeout(240)
def leave_callback(control: WebControl, api: httpx.Client) -> None:
    """A visitor leaves a callback request on a new link nobody answers (two events)."""
    link = api.post("/v1/links", json={"name": "Front desk"}).json()
    r = httpx.post(
        f"{control.url}/v1/links/{link['public_id']}/callbacks",
        json={"name": "Eve", "contact": "eve@example.com"},
        timeout=10,
    )
    assert r.status_code == 201, r.text


def test_an_admin_adds_an_endpoint_sees_deliveries_and_sends_one_again(
    control: WebControl, receiver: Receiver, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Hooks & Co", "olivia@hooks.test")
    api = httpx.Client(base_url=control.url, headers=bearer(key), timeout=10)
    b = open_browser()
    become_admin(b, control, url, "olivia's long password")
    hooks = WebhooksSection(b, control.url)
    hooks.go("Webhooks", "webhooks")
    assert hooks.current == "webhooks" and hooks.heading == "Webhooks"
    assert "No endpoints yet" in hooks.text("clickacall-dash-webhooks")
    check_page(b, "dashboard-webhooks-empty")

    # a private address: the server's message beside the URL field, nothing stored
    hooks.fill("hook-url", "https://10.0.0.8/hook")
    hooks.button("Add endpoint").click()
    hooks.until(lambda: hooks.errors(), 10, "the URL error")
    (message,) = hooks.errors()
    assert "10.0.0.8" in message and "public addresses only" in message
    field = hooks.d.find_element(By.ID, "hook-url")
    assert field.get_attribute("aria-invalid") == "true"
    assert "hook-url-error" in str(field.get_attribute("aria-describedby"))
    assert hooks.focused().get_attribute("id") == "hook-url"
    check_page(b, "dashboard-webhooks-error")
    assert api.get("/v1/webhooks").json() == []
    # no event chosen: said beside the events
    hooks.fill("hook-url", receiver.url)
    for event in ("ringing", "answered", "missed", "ended", "callback_requested"):
        hooks.tick(f"hook-ev-{event}", False)
    hooks.button("Add endpoint").click()
    hooks.until(lambda: hooks.errors(), 10, "the events error")
    assert hooks.errors() == ["choose at least one event"]
    assert hooks.d.find_element(By.ID, "hook-events").get_attribute("aria-invalid") == "true"
    assert api.get("/v1/webhooks").json() == []

    # the endpoint: the secret shown once
    hooks.tick("hook-ev-missed", True)
    hooks.tick("hook-ev-callback_requested", True)
    hooks.button("Add endpoint").click()
    secret = hooks.copied_value("hook-secret")
    assert secret.startswith("whsec_")
    assert "shown only once" in hooks.text(".dash-result")
    check_page(b, "dashboard-webhooks-secret")
    (made,) = api.get("/v1/webhooks").json()
    assert made["url"] == receiver.url and made["events"] == ["missed", "callback_requested"]
    assert made["include_visitor"] is False and made["secret"] is None
    hooks.until(lambda: hooks.rows(), 10, "the endpoint row")
    assert hooks.rows()[0][0] == receiver.url
    hooks.open("webhooks")
    hooks.wait_section("webhooks")
    hooks.until(lambda: hooks.rows(), 10, "the endpoint row")
    assert not hooks.d.find_elements(By.ID, "hook-secret")  # gone after a reload
    assert secret not in hooks.d.page_source

    # a visitor leaves a callback request on a link nobody answers: two events arrive, signed
    leave_callback(control, api)
    hooks.until(lambda: len(receiver.got) >= 2, 20, "two deliveries")
    for headers, body in receiver.got:
        ts = int(headers["clickacall-webhook-timestamp"])
        assert verify(headers["clickacall-webhook-signature"], secret, ts, body)
        assert headers["clickacall-webhook-id"] == json.loads(body)["id"]
        assert b"eve@example.com" not in body
    assert sorted(json.loads(body)["event"] for _, body in receiver.got) == [
        "callback_requested",
        "missed",
    ]

    # the delivery log shows them; send one again: the same id arrives once more
    def delivered() -> bool:
        hooks.button("Refresh").click()
        rows = hooks.log_rows()
        return len(rows) == 2 and all(r[3].startswith("Delivered") for r in rows)

    hooks.until(delivered, 20, "two delivered rows")
    first = hooks.log_rows()[0]
    hooks.show_log()
    check_page(b, "dashboard-webhooks")
    hooks.button(f"Send again: delivery {first[5]}").click()
    hooks.until(
        lambda: hooks.focused().get_attribute("id") == "hooks-log-title", 10, "focus on the log"
    )
    hooks.until(lambda: len(receiver.got) >= 3, 20, "the delivery sent again")
    assert receiver.got[2][0]["clickacall-webhook-id"] == first[5]
    hooks.until(delivered, 20, "the log after sending again")
    assert hooks.focused().get_attribute("id") == "hooks-refresh"  # kept on Refresh
    screenshot(b.driver, "dashboard-webhooks-again")

    # a new secret (confirmed; shown once; the old one still signs for a day), then switched off
    hooks.button(f"New secret for {receiver.url}").click()
    hooks.confirm()
    hooks.until(lambda: hooks.copied_value("hook-secret") != secret, 10, "the new secret")
    rotated = hooks.copied_value("hook-secret")
    assert rotated.startswith("whsec_") and "24 hours" in hooks.text(".dash-result")
    (made,) = api.get("/v1/webhooks").json()
    assert made["previous_secret_until"] is not None
    hooks.button(f"Edit {receiver.url}").click()
    assert hooks.focused().get_attribute("id") == "hook-url"
    hooks.tick("hook-active", False)
    hooks.button("Save").click()
    hooks.until(lambda: "Off" in hooks.rows()[0], 10, "the endpoint switched off")
    assert api.get("/v1/webhooks").json()[0]["active"] is False

    # the admin on a phone, in German
    phone = open_browser(phone=True)
    SignInPage(phone, control.url).open("/console?lang=de").sign_in(
        "olivia@hooks.test", "olivia's long password"
    )
    german = WebhooksSection(phone, control.url)
    german.until(lambda: phone.driver.current_url.endswith("/dashboard"), 15, "the dashboard")
    german.d.get(control.url + "/dashboard/webhooks?lang=de")
    german.wait_section("webhooks")
    german.until(lambda: german.log_rows(), 10, "the log in German")
    assert german.heading == "Webhooks"
    assert german.log_rows()[0][3].startswith("Zugestellt")
    assert german.d.find_element(By.CSS_SELECTOR, "label[for=hook-url]").text == "Endpunkt-URL"
    check_page(phone, "dashboard-webhooks-phone-de")
    german.show_log()
    screenshot(phone.driver, "dashboard-webhooks-phone-de-log")

    # deleted, with its log
    hooks.button(f"Delete {receiver.url}").click()
    hooks.confirm()
    hooks.until(lambda: "No endpoints yet" in hooks.text("clickacall-dash-webhooks"), 10, "gone")
    assert api.get("/v1/webhooks").json() == []
    hooks.until(lambda: hooks.log_rows() == [], 10, "the log gone with it")


@pytest.mark.timeout(180)
def test_a_failed_delivery_says_why_in_the_pages_language(
    control: WebControl, receiver: Receiver, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Busy Bakery", "bea@bakery.test")
    api = httpx.Client(base_url=control.url, headers=bearer(key), timeout=10)
    busy = receiver.url.removesuffix("/hook") + "/busy"  # answers 503
    closed = "https://127.0.0.1:9/hook"  # nothing listens: no connection
    ids: dict[str, str] = {}
    for target in (busy, closed):
        r = api.post("/v1/webhooks", json={"url": target, "events": ["callback_requested"]})
        assert r.status_code == 201, r.text
        ids[target] = r.json()["id"]
    # a delivery stored before the error codes: its English text and no code
    db = sqlite3.connect(control.db_path, timeout=10)
    try:
        with db:
            (tenant,) = db.execute(
                "SELECT tenant_id FROM webhook_endpoints WHERE id = ?", (ids[busy],)
            ).fetchone()
            db.execute(
                "INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, event, payload,"
                " state, attempts, next_attempt_at, last_error, created_at, queued_at, done_at)"
                " VALUES (?, 'wh_stored_before', ?, 'missed', '{}', 'failed', 9, 1, ?, 1, 1, 2)",
                (tenant, ids[busy], "no answer within 10 s"),
            )
    finally:
        db.close()
    leave_callback(control, api)

    def answers(section: WebhooksSection, refresh: str) -> dict[str, tuple[str, str, str]]:
        """(endpoint URL, state, last answer) by delivery id, once all three rows have an
        answer (read through ``until``, which looks again if the log is redrawn meanwhile)."""
        section.button(refresh).click()
        got = {row[5]: (row[2], row[3], row[4]) for row in section.log_rows() if row[4]}
        return got if len(got) == 3 else {}

    b = open_browser()
    become_admin(b, control, url, "bea's long password 1")
    hooks = WebhooksSection(b, control.url)
    hooks.go("Webhooks", "webhooks")
    english = hooks.until(lambda: answers(hooks, "Refresh"), 20, "three answers")
    url_, state, stored = english.pop("wh_stored_before")
    assert (url_, stored) == (busy, "no answer within 10 s")  # as stored, with no code
    assert state.startswith("Failed")
    by_url = {u: answer for u, _, answer in english.values()}
    assert by_url[busy] == "Your endpoint answered HTTP 503"
    sentence, detail = by_url[closed].split("\n")
    assert sentence == "Could not connect to your endpoint" and detail  # the technical detail
    hooks.until(
        lambda: (
            [e.text for e in hooks.d.find_elements(By.CSS_SELECTOR, ".dash-hook-detail")]
            == [detail]
        ),
        10,
        "the detail apart from the sentence",
    )

    # the same log in German: the catalogue's German sentences, the detail as it is
    hooks.d.get(control.url + "/dashboard/webhooks?lang=de")
    hooks.wait_section("webhooks")
    german = hooks.until(lambda: answers(hooks, "Aktualisieren"), 20, "the log in German")
    url_, state, stored = german.pop("wh_stored_before")
    assert (url_, stored) == (busy, "no answer within 10 s")
    assert state.startswith("Fehlgeschlagen")
    by_url = {u: answer for u, _, answer in german.values()}
    assert by_url[busy] == "Ihr Endpunkt antwortete mit HTTP 503"
    assert by_url[closed] == f"Keine Verbindung zu Ihrem Endpunkt\n{detail}"
    hooks.show_log()
    check_page(b, "dashboard-webhooks-failed-de")
