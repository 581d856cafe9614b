"""The dashboard's story in real Chromiums, through the real control plane and a real
relay node: the operator creates a business with its first admin, who accepts the invitation,
signs in, invites a staff member (who sets a password in a second browser and lands on the
console), creates a link and pastes exactly the snippet the real clipboard holds into a page
on another origin; a visitor (a third browser, fake camera) calls through that button, the
member answers, they talk, the visitor hangs up. The admin finds the call with our relay's
quality figures, reads its timeline, downloads the CSV (the API's, with a key made in the Keys
section), and exports and erases the visitor found by the call reference they were shown; the
audit log shows both. Screenshots: build/screenshots/story-*.png.

Then isolation and roles (a second business's admin sees none of it; a staff-only member is
refused every dashboard page and every ``/v1/dashboard`` route the app serves), and the cookie
and header audit over every console and dashboard page and the visitor's pages."""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from selenium.webdriver.common.by import By

from control import accounts
from control.api import ROUTERS
from control.web.dashboard import SECTIONS
from tests.controlproc import bearer
from tests.relayproc import RelayProcess
from tests.web import test_web_call
from tests.web.browser import Browser, missing, screenshot
from tests.web.dashpages import (
    CallsSection,
    CodePage,
    Dashboard,
    KeysSection,
    LinksSection,
    PrivacySection,
    SettingsSection,
    StaffSection,
)
from tests.web.pages import CallPage, ConsolePage, EmbedHost, HostSite, InvitePage, SignInPage
from tests.web.test_web_dashboard import become_admin, business, check_page, fetch_status
from tests.web.test_web_dashboard_calls import fetch_text, seed
from tests.web.test_web_dashboard_privacy import downloaded
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]

node = test_web_call.node  # a relay node of ours, which carries the calls' media

FORBIDDEN = "This page is for the business's admins"


@pytest.fixture(scope="module")
def control() -> Iterator[WebControl]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    control = WebControl().start()
    try:
        yield control
    finally:
        control.stop()


# --- the audits ---------------------------------------------------------------------------


def headers_ok(b: Browser, origin: str) -> None:
    """Every response of ``origin`` the browser got so far (documents, scripts, styles, JSON)
    carries the CSP (no inline script, no framing), nosniff and a Referrer-Policy."""
    seen = 0
    for resp in b.responses():
        url = str(resp["url"])
        if not url.startswith(origin + "/"):
            continue
        seen += 1
        h = {str(k).lower(): str(v) for k, v in resp["headers"].items()}
        csp = h.get("content-security-policy", "")
        directives = {d.split()[0]: d for d in (p.strip() for p in csp.split(";")) if d}
        script = directives.get("script-src", directives.get("default-src", ""))
        assert script and "'unsafe-inline'" not in script, (url, csp)
        assert directives.get("frame-ancestors") == "frame-ancestors 'none'", (url, csp)
        assert h.get("x-content-type-options") == "nosniff", (url, h)
        assert h.get("referrer-policy"), (url, h)
        assert "set-cookie" not in h or h["set-cookie"].startswith("cc_session="), (url, h)
    assert seen, "no response of the control plane was seen"


def audit(b: Browser, origin: str, name: str, signed_in: bool = True) -> None:
    """A console or dashboard page: axe, the only cookie is the session cookie, no CSP
    violation, the headers of every response; saved as ``build/screenshots/NAME.png``."""
    if signed_in:
        check_page(b, name)
    else:  # before signing in (sign-in form, invitation): no cookie at all yet
        assert b.cookies() == [], (name, b.cookies())
        screenshot(b.driver, name)
    headers_ok(b, origin)


def stored(b: Browser) -> dict[str, int]:
    """How many localStorage, sessionStorage and IndexedDB entries the current document has."""
    counts: dict[str, int] = b.driver.execute_async_script(
        """
        const done = arguments[0];
        const base = {local: localStorage.length, session: sessionStorage.length};
        indexedDB.databases().then(dbs => done({...base, idb: dbs.length}),
                                   () => done({...base, idb: -1}));
        """
    )
    return counts


NOTHING = {"local": 0, "session": 0, "idb": 0}


def no_trace(b: Browser) -> None:
    """A visitor's browser: no cookie of any origin, no response that tried to set one, and
    nothing stored by the current document or a frame in it."""
    assert b.cookies() == [], b.cookies()
    assert stored(b) == NOTHING
    for frame in b.driver.find_elements(By.TAG_NAME, "iframe"):
        b.driver.switch_to.frame(frame)
        try:
            assert stored(b) == NOTHING
        finally:
            b.driver.switch_to.default_content()
    for e in b.log():
        if e.get("method") in ("Network.responseReceived", "Network.responseReceivedExtraInfo"):
            p = e["params"]
            headers = (p.get("response") or p).get("headers", {})
            assert not any(str(k).lower() == "set-cookie" for k in headers), p


def embed_no_trace(host: EmbedHost) -> None:
    """:func:`no_trace` on the host page, and on the button's overlay (its iframe is in the
    button's shadow root, out of ``find_elements``' reach)."""
    no_trace(host.b)
    host.d.switch_to.frame(host.wait_overlay())
    try:
        assert stored(host.b) == NOTHING
    finally:
        host.leave_call()


def dashboard_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of control/api's routers for the dashboard: its JSON
    routes (``/v1/dashboard/...``) and its downloads (``/dashboard/links/{id}/qr.png``)."""
    out = []
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.path.startswith(
                ("/v1/dashboard/", "/dashboard/")
            ):
                out += [(m, route.path) for m in sorted(route.methods)]
    return out


# --- 1. the story -----------------------------------------------------------------------------


@pytest.mark.timeout(420)
def test_the_story_from_a_new_business_to_an_erased_visitor(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    origin = control.url
    _, url = business(control, "Linden Bikes", "olivia@linden-story.test")

    # the admin accepts the invitation, then signs out and in again through the form
    admin = open_browser()
    InvitePage(admin, origin).open(url)
    audit(admin, origin, "story-01-invitation", signed_in=False)
    dash = become_admin(admin, control, url, "olivia's long password")
    audit(admin, origin, "story-02-dashboard")
    dash.sign_out()
    signin = SignInPage(admin, origin)
    signin.until(lambda: signin.form.is_displayed(), 10, "the sign-in form")
    signin.sign_in("olivia@linden-story.test", "olivia's long password")
    dash.until(lambda: admin.driver.current_url.endswith("/dashboard"), 15, "the dashboard")
    dash.wait_section("home")
    assert dash.heading == "Overview" and "Linden Bikes" in dash.text(".dash-bar")

    # she invites Ben, who sets a password in his own browser and lands on the console
    staff = StaffSection(admin, origin)
    staff.go("Staff", "staff")
    invitation = staff.invite("Ben Baker", "ben@linden-story.test")
    audit(admin, origin, "story-03-staff-invited")
    ben_b = open_browser()
    InvitePage(ben_b, origin).open(invitation).set_password("ben's long password")
    console = ConsolePage(ben_b, origin)
    console.until(lambda: ben_b.driver.current_url.endswith("/console"), 15, "Ben's console")
    console.wait_ready()
    console.arm()
    assert console.available
    audit(ben_b, origin, "story-04-console")

    # she creates a link that rings Ben and copies its snippet through the real clipboard
    links = LinksSection(admin, origin)
    links.go("Links", "links")
    links.button("New link").click()
    links.fill("link-name", "Shop desk")
    (ben_box,) = [
        e
        for e in admin.driver.find_elements(By.CSS_SELECTOR, "input[id^=link-staff-]")
        if "Ben Baker" in str(e.find_element(By.XPATH, "..").text)
    ]
    links.tick(str(ben_box.get_attribute("id")), True)
    links.button("Create link").click()
    card = links.card("Shop desk")
    assert links.facts("Shop desk")["Rings"] == "Ben Baker"
    admin.permit(origin, "granted", "clipboard-read", "clipboard-write")
    card.find_element(By.CSS_SELECTOR, ".dash-link-use button.primary").click()
    snippet: str = admin.driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('! ' + e))"
    )
    assert snippet.startswith(f'<script async src="{origin}/embed.js"></script>'), snippet
    audit(admin, origin, "story-05-link")

    # the shop pastes exactly that; a visitor calls through its button, Ben answers
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Linden Bikes shop</title></head><body><main><h1>Linden Bikes</h1>"
        f"<p>Questions about a bike? Talk to us.</p>{snippet}</main></body></html>"
    )
    with HostSite(page) as shop:
        visitor_b = open_browser()
        host = EmbedHost(visitor_b, origin).open(shop.url).wait_button()
        assert host.wait_status() == "open"
        screenshot(visitor_b.driver, "story-06-shop")
        host.click()
        visitor = host.call().wait_ready()
        visitor.video_call()
        visitor.wait_state("ringing")
        console.wait_ringing()
        screenshot(ben_b.driver, "story-07-console-ringing")
        console.answer()
        console.in_call()
        visitor.wait_state("in-call", timeout=30)
        visitor.until(lambda: visitor.remote_video_playing(), 20, "Ben's video")
        console.until(lambda: console.remote_video_playing(), 20, "the visitor's video")
        assert visitor.video_flowing() and console.video_flowing()
        time.sleep(3)  # they talk
        screenshot(visitor_b.driver, "story-08-visitor-in-call")
        screenshot(ben_b.driver, "story-09-console-in-call")
        visitor.hang_up()
        visitor.wait_state("ended")
        ref = visitor.call_ref
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", ref), ref
        screenshot(visitor_b.driver, "story-10-visitor-ended")
        host.leave_call()
        console.wait_ready()
        # the visitor's browser keeps nothing: host page, overlay, no cookie anywhere
        embed_no_trace(host)

    # an API key from the Keys section (shown once)
    keys = KeysSection(admin, origin)
    keys.go("API keys", "keys")
    secret = keys.create("Story CSV")
    assert secret.startswith("ck_live_")
    audit(admin, origin, "story-11-key")
    kh = bearer(secret)
    (call,) = [
        c
        for c in httpx.get(f"{origin}/v1/calls", headers=kh, timeout=10).json()["calls"]
        if c["call_ref"] == ref
    ]
    deadline = time.monotonic() + 45  # the relay's final summaries follow the teardown
    while True:
        entry = httpx.get(f"{origin}/v1/calllogs/{call['id']}", headers=kh, timeout=10).json()
        if entry["quality_final"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert entry["quality_final"] and entry["outcome"] == "ended", json.dumps(entry)
    assert {a["node_id"] for a in entry["allocations"]} == {"web-1"}

    # the call in the Calls section, with our relay's figures
    calls = CallsSection(admin, origin)
    calls.go("Calls", "calls")
    calls.wait_list()
    ((_, outcome, link_name, answered, _, media, mos, region),) = calls.rows()
    assert (outcome, link_name, answered, region) == ("Ended", "Shop desk", "Ben Baker", "eu")
    assert "video" in media.lower()
    assert re.fullmatch(r"[1-5]\.\d \w+", mos), mos
    audit(admin, origin, "story-12-calls")

    # the CSV for "Ended" calls is the API's for the same filter
    calls.choose("calls-outcome", "Ended")
    calls.apply()
    href = calls.csv_href
    assert "outcome=ended" in href
    mine = fetch_text(admin, href)
    theirs = httpx.get(
        f"{origin}/v1/calllogs.csv", params={"outcome": "ended"}, headers=kh, timeout=10
    )
    assert theirs.status_code == 200 and mine == theirs.text
    assert len(mine.strip().splitlines()) == 2 and call["id"] in mine

    # its detail page: the timeline and the quality both ways
    admin.driver.find_element(By.CSS_SELECTOR, ".dash-table a.dash-call-link").click()
    calls.wait_detail()
    assert admin.driver.current_url.endswith(f"/dashboard/calls/{call['id']}")
    steps = calls.timeline()
    assert steps[0] == "The visitor clicked for a video call", steps
    assert "Rang Ben Baker" in steps and "Answered by Ben Baker" in steps, steps
    assert steps[-1] == "Ended: visitor hung up", steps
    assert calls.fact("Relay region the media stayed in") == "eu"
    assert "audio" in calls.fact("Media our relay carried")
    quality = {r[0]: r[1:] for r in calls.rows()}
    for alloc in (r for r in calls.rows() if len(r) == 8 and r[3] == "0"):
        assert alloc[5:7] == ["—", "—"], alloc  # an allocation the browser did not use
    for direction in ("From the visitor", "To the visitor"):
        loss, jitter, score = quality[direction]
        assert loss.endswith(" %") and jitter.endswith(" ms"), quality
        assert re.fullmatch(r"[1-5]\.\d \w+", score), quality
    audit(admin, origin, "story-13-call-detail")
    admin.driver.execute_script("document.getElementById('call-timeline-title').scrollIntoView()")
    screenshot(admin.driver, "story-14-call-timeline")

    # Privacy: the reference the visitor was shown finds the call; export; erase; the audit
    privacy = PrivacySection(admin, origin)
    privacy.go("Privacy", "privacy")
    privacy.find("Call reference shown to the visitor", ref)
    assert privacy.errors() == [] and privacy.found == "Calls found: 1"
    assert privacy.result_rows()[0][0] == ref
    audit(admin, origin, "story-15-privacy-found")
    folder = Path(tempfile.mkdtemp(prefix="clickacall-story-"))
    admin.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
    )
    admin.driver.find_element(By.LINK_TEXT, "Download export (JSON)").click()
    saved = json.loads(downloaded(folder, "visitor-call-ref-export.json"))
    assert [c["id"] for c in saved["calls"]] == [call["id"]]
    privacy.button("Erase…").click()
    dialog = privacy.until(
        lambda: admin.driver.find_element(By.CSS_SELECTOR, "dialog.dash-dialog[open]"), 10, "dialog"
    )
    assert ref in dialog.text
    screenshot(admin.driver, "story-16-erase-dialog")
    privacy.confirm()
    privacy.until(lambda: "Erased from 1 call." in privacy.status(), 10, "erased")
    # newest first: the look-up that redraws the result, the erasure, the export before it
    privacy.until(lambda: "Erasure" in [r[2] for r in privacy.audit_rows()], 15, "the erasure")
    rows = privacy.audit_rows()
    actions = [r[2] for r in rows]
    erased = actions.index("Erasure")
    assert set(actions[:erased]) <= {"Export / look-up"}, actions
    assert "Export / look-up" in actions[erased + 1 :], actions
    assert rows[erased][1] == "Olivia Owner" and rows[erased][4].startswith("1 call by "), rows
    admin.driver.execute_script("document.getElementById('audit-title').scrollIntoView()")
    audit(admin, origin, "story-17-privacy-audit")
    r = httpx.get(f"{origin}/v1/subjects", params={"call_ref": ref}, headers=kh, timeout=10)
    assert r.json()["calls"] == []  # erased: the reference finds nothing any more


# --- 2. isolation and roles ----------------------------------------------------------------------


def member(control: WebControl, key: str, name: str, email: str, password: str) -> None:
    """A staff-only member with a password, invited through the API, accepted through the form."""
    with httpx.Client(base_url=control.url, timeout=10) as c:
        r = c.post("/v1/staff", json={"name": name}, headers=bearer(key))
        r.raise_for_status()
        r = c.post(
            f"/v1/staff/{r.json()['id']}/invitation", json={"email": email}, headers=bearer(key)
        )
        r.raise_for_status()
        r = c.post(
            r.json()["url"],
            data={"password": password, "password2": password},
            headers={"Origin": control.url},
        )
        assert r.status_code == 303, r.text


@pytest.mark.timeout(300)
def test_another_business_sees_nothing_and_staff_are_refused_every_admin_page_and_request(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    origin = control.url
    key, _ = business(control, "Acme Iso", "olivia@acme-iso.test")
    s = seed(control, key)  # three calls, one with quality figures
    good = httpx.get(f"{origin}/v1/calls/{s.good}", headers=bearer(key), timeout=10).json()
    links = httpx.get(f"{origin}/v1/links", headers=bearer(key), timeout=10).json()

    # the second business's admin: no calls, the first's call page is the 404 page, no subject
    _, other = business(control, "Bolt Iso", "bert@bolt-iso.test")
    bolt = open_browser()
    become_admin(bolt, control, other, "bert's long password")
    calls = CallsSection(bolt, origin)
    calls.go("Calls", "calls")
    calls.wait_list()
    assert calls.call_links() == [] and "No calls match these filters." in calls.text(".dash-view")
    audit(bolt, origin, "story-iso-calls-empty")
    bolt.driver.get(f"{origin}/dashboard/calls/{s.good}")
    assert not bolt.driver.find_elements(By.CSS_SELECTOR, "clickacall-dashboard")
    # the dashboard's 404 page (not the visitor's "This call link does not exist")
    assert bolt.driver.find_element(By.TAG_NAME, "h1").text == (
        "This page of the dashboard does not exist"
    )
    assert bolt.driver.find_element(By.LINK_TEXT, "Back to the dashboard")
    audit(bolt, origin, "story-iso-call-404")
    assert fetch_status(bolt, "GET", f"/v1/dashboard/calls/{s.good}") == 404
    privacy = PrivacySection(bolt, origin)
    privacy.open("privacy")
    privacy.wait_section("privacy")
    privacy.find("Call reference shown to the visitor", good["call_ref"])
    assert privacy.found == "Calls found: 0"
    keys = KeysSection(bolt, origin)
    keys.go("API keys", "keys")
    keys.until(lambda: keys.rows(), 10, "the keys")
    assert len(keys.rows()) == 1  # Bolt's own operator-made key only

    # a staff-only member of the first business: 403 on every page and every JSON route
    member(control, key, "Sam Staff", "sam@acme-iso.test", "sam's long password")
    sam = open_browser()
    ConsolePage(sam, origin).open(("sam@acme-iso.test", "sam's long password")).wait_ready()
    pages = [f"/dashboard/{s}" if s != "home" else "/dashboard" for s in SECTIONS]
    pages.append(f"/dashboard/calls/{s.good}")
    for path in pages:
        sam.driver.get(origin + path)
        assert sam.driver.find_element(By.TAG_NAME, "h1").text == FORBIDDEN, path
    audit(sam, origin, "story-staff-forbidden")
    routes = dashboard_routes()
    assert ("GET", "/v1/dashboard/calls.csv") in routes
    assert ("DELETE", "/v1/dashboard/subjects") in routes
    assert ("GET", "/dashboard/links/{link_id}/qr.png") in routes
    ids = {"call_id": s.good, "link_id": links[0]["id"], "staff_id": "x", "key_id": "x"}
    refused = {}
    for method, path in routes:
        concrete = re.sub(r"\{(\w+)\}", lambda m: ids.get(m[1], "x"), path)
        refused[f"{method} {concrete}"] = fetch_status(sam, method, concrete)
    assert {k: v for k, v in refused.items() if v != 403} == {}
    # the admin's own requests still work (the 403s are the role's, not a broken route)
    assert fetch_status(bolt, "GET", "/v1/dashboard/calls") == 200


# --- 3. the cookie and header audit ------------------------------------------------------------


@pytest.mark.timeout(300)
def test_every_page_has_only_the_session_cookie_and_the_visitor_keeps_nothing(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    origin = control.url
    key, url = business(control, "Audit Cycles", "olivia@audit.test")
    s = seed(control, key)
    admin = open_browser()
    SignInPage(admin, origin).open()
    audit(admin, origin, "story-audit-signin", signed_in=False)
    InvitePage(admin, origin).open(url)
    audit(admin, origin, "story-audit-invitation", signed_in=False)
    dash = become_admin(admin, control, url, "olivia's long password")
    for section in SECTIONS:
        dash.open("" if section == "home" else section)
        dash.wait_section(section)
        audit(admin, origin, f"story-audit-{section}")
    CallsSection(admin, origin).open(f"calls/{s.poor}")
    CallsSection(admin, origin).wait_detail()
    audit(admin, origin, "story-audit-call-detail")

    # two-step sign-in: the code page sets nothing but the (pending) session cookie
    settings = SettingsSection(admin, origin)
    settings.open("settings")
    settings.wait_section("settings")
    secret = settings.start_totp()
    settings.confirm_totp(accounts.totp_code(secret, time.time()))
    settings.button("I have saved these codes").click()
    settings.sign_out()
    signin = SignInPage(admin, origin)
    signin.until(lambda: signin.form.is_displayed(), 10, "the sign-in form")
    signin.sign_in("olivia@audit.test", "olivia's long password")
    code = CodePage(admin, origin)
    code.until(lambda: admin.driver.current_url.endswith("/console/signin/code"), 10, "code")
    audit(admin, origin, "story-audit-code")
    right = accounts.totp_code(secret, time.time())
    code.enter("000000" if right != "000000" else "111111")  # a wrong code: refused
    code.until(lambda: code.error, 10, "the wrong-code message")
    assert code.error.startswith("This code is wrong or has expired")
    assert fetch_status(admin, "GET", "/v1/me") == 401  # still not signed in
    audit(admin, origin, "story-audit-code-wrong")
    code.enter(accounts.totp_code(secret, time.time() + 30))
    Dashboard(admin, origin).until(lambda: admin.driver.current_url.endswith("/dashboard"), 15)
    audit(admin, origin, "story-audit-after-code")

    # a whole call on the call page itself (/c/{id}): the visitor's browser keeps nothing
    t = control.bootstrap(name="Audit Shop", media=["video", "voice"])
    console = ConsolePage(open_browser(), origin).open(t.login).wait_ready()
    console.arm()
    audit(console.b, origin, "story-audit-console")
    visitor_b = open_browser()
    visitor = CallPage(visitor_b, origin).open(t.link["public_id"]).wait_ready()
    no_trace(visitor_b)
    visitor.voice_call()
    visitor.wait_state("ringing")
    console.answer()
    visitor.wait_state("in-call", timeout=30)
    time.sleep(2)
    visitor.hang_up()
    visitor.wait_state("ended")
    no_trace(visitor_b)
    screenshot(visitor_b.driver, "story-audit-visitor-ended")
    console.wait_ready()
    audit(console.b, origin, "story-audit-console-after-call")
    # the call page's own headers: the CSP without inline script, framable for the widget
    seen: list[dict[str, Any]] = [
        r for r in visitor_b.responses() if str(r["url"]).startswith(f"{origin}/c/")
    ]
    assert seen
    for r in seen:
        h = {str(k).lower(): str(v) for k, v in r["headers"].items()}
        script = h["content-security-policy"].split("script-src")[1].split(";")[0]
        assert script.strip() and "'unsafe-inline'" not in script, h
        assert h["x-content-type-options"] == "nosniff" and h.get("referrer-policy")
