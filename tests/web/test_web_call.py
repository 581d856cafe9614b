"""A whole call in two real Chromiums: the visitor on the call page, a staff member in the
console (signed in through the real sign-in form), through the real control plane and a real
relay node."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.relayproc import RelayProcess, RelaySpec
from tests.web.browser import (
    Browser,
    axe_violations,
    block_third_party,
    console_errors,
    missing,
    only_from,
    origin,
    screenshot,
)
from tests.web.pages import CallPage, ConsolePage, EmbedHost, HostSite, host_page
from tests.web.webcontrol import Staffed, WebControl

pytestmark = [pytest.mark.slow]


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


@pytest.fixture(scope="module")
def node(control: WebControl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    spec = RelaySpec(
        secret=control.relay_secret,
        extra_args=(
            "--control",
            control.url,
            "--node-id",
            "web-1",
            "--region",
            "eu",
            "--heartbeat-interval",
            "0.5",
        ),
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLICKACALL_NODE_SECRET", control.node_secret)  # the relay's agent reads it
        relay = RelayProcess(spec, Path(tmp_path_factory.mktemp("relay")), impl="ours").start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            nodes = httpx.get(f"{control.url}/v1/nodes", headers=control.oh, timeout=5).json()
            if any(n["id"] == "web-1" and n["healthy"] for n in nodes):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the relay node did not register")
        yield relay
    finally:
        relay.stop()


def candidates_received(browser: Browser) -> list[str]:
    """The ICE candidate lines a browser received over its WebSockets."""
    out = []
    for kind, payload in browser.ws_frames():
        if kind != "received":
            continue
        try:
            msg = json.loads(payload)
        except ValueError:
            continue
        if msg.get("type") == "candidate":
            out.append(str(msg.get("candidate")))
        if msg.get("type") in ("offer", "answer"):
            out += [
                line for line in str(msg.get("sdp")).splitlines() if line.startswith("a=candidate")
            ]
    return out


@pytest.mark.timeout(300)
def test_visitor_calls_staff_answers_they_talk_and_share_a_screen(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    """The visitor clicks the button embedded in a business's page on another origin."""
    tenant = control.bootstrap(media=["video", "voice"])
    with HostSite(host_page(control.url, tenant.link["public_id"])) as shop:
        _call_through_the_embed(control, tenant, shop, open_browser)


def _call_through_the_embed(
    control: WebControl, tenant: Staffed, shop: HostSite, open_browser: Callable[..., Browser]
) -> None:
    staff_b = open_browser()
    visitor_b = open_browser()
    console = ConsolePage(staff_b, control.url).open(tenant.login).wait_ready()
    console.arm()
    console.until(lambda: console.armed, 10, "the alerts turned on")
    assert console.available
    assert axe_violations(console.d) == []
    screenshot(console.d, "console")

    host = EmbedHost(visitor_b, control.url).open(shop.url).wait_button()
    assert host.wait_status() == "open"
    screenshot(host.d, "widget-open")  # the README's: the button while staff are signed in
    host.click()
    visitor = host.call().wait_ready()  # the call page, in the overlay's frame
    screenshot(visitor.d, "widget-overlay-open")
    visitor.video_call()
    visitor.wait_state("ringing")
    visitor.until(lambda: visitor.check in ("ok", "partial", "blocked"), 15, "the relay check")
    assert visitor.check == "ok"
    assert axe_violations(visitor.d) == []
    screenshot(visitor.d, "ringing")

    console.wait_ringing()
    assert "Ringing" in console.page_title or console.ringer_title()
    assert axe_violations(console.d) == []
    screenshot(console.d, "console-ringing")
    console.answer()
    console.in_call()
    visitor.wait_state("in-call", timeout=30)
    visitor.until(lambda: visitor.remote_video_playing(), 20, "the staff member's video")
    console.until(lambda: console.remote_video_playing(), 20, "the visitor's video")
    visitor.until(lambda: visitor.quality in ("good", "fair", "poor"), 10, "a quality level")
    assert axe_violations(visitor.d) == []
    screenshot(visitor.d, "incall-visitor")

    assert visitor.toggle("Share screen")
    console.until(lambda: console.remote_video_playing("screen"), 20, "the visitor's screen")
    console.until(lambda: console.quality in ("good", "fair", "poor"), 10, "a quality level")
    console.until(lambda: console.timer not in ("", "0:00"), 10, "the call's timer running")
    # the console's layout: the shared screen larger than the visitor's camera, own preview
    screen, camera = console.area(".cs-remote-screen"), console.area(".cs-remote-video")
    assert screen > camera > 0 and console.area(".cs-preview") > 0, (screen, camera)
    screenshot(console.d, "incall-console-screen")
    assert console.toggle("Mute")
    assert not console.toggle("Camera")
    assert console.area(".cs-preview") == 0  # the camera off: no own preview
    assert console.toggle("Camera")
    assert visitor.toggle("Mute")
    assert not visitor.toggle("Share screen")
    # and the staff member shares theirs
    assert console.toggle("Share screen")
    visitor.until(lambda: visitor.remote_video_playing("screen"), 20, "the staff's screen")
    assert not console.toggle("Share screen")

    # relay only: neither browser learned an address of the other but the relay's
    for b in (visitor_b, staff_b):
        for line in candidates_received(b):
            assert " typ relay" in line, line

    visitor.hang_up()
    visitor.wait_state("ended")
    assert "The call lasted" in visitor.end_text
    ref = visitor.call_ref
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", ref), ref
    assert axe_violations(visitor.d) == []
    screenshot(visitor.d, "ended")
    console.wait_ready()
    # wrap-up: a short pause before new calls, which "Ready" ends
    console.until(lambda: console.wrapping_up, 10, "the wrap-up")
    console.ready()
    console.until(lambda: not console.wrapping_up, 10, "the wrap-up ended by Ready")

    # the call log: ended, and audio, video and the screen relayed both ways through our relay
    calls = httpx.get(f"{control.url}/v1/calls", headers=tenant.th, timeout=10).json()["calls"]
    (call,) = [c for c in calls if c["call_ref"] == ref]  # the reference finds the call
    assert call["status"] == "ended" and call["media"] == "video"
    deadline = time.monotonic() + 30
    while True:  # the relay's final summaries follow the allocations' teardown
        log = httpx.get(f"{control.url}/v1/calllogs/{call['id']}", headers=tenant.th, timeout=10)
        entry = log.json()
        if entry["quality_final"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert entry["quality_final"], entry
    assert entry["outcome"] == "ended" and {"audio", "video", "screen"} <= set(entry["media"])
    used: dict[str, dict[str, Any]] = {}  # each party's busiest allocation (browsers may make two)
    for a in entry["allocations"]:
        if (
            a["to_peer"]["packets"]
            > used.get(a["role"], {"to_peer": {"packets": -1}})["to_peer"]["packets"]
        ):
            used[a["role"]] = a
    assert set(used) == {"visitor", "staff"}, json.dumps(entry)
    for a in used.values():
        assert a["node_id"] == "web-1", a
        assert a["to_peer"]["packets"] > 100 and a["to_client"]["packets"] > 100, a
    # the CSP let everything through (its connect-src 'self' covers our own WebSockets)
    for b in (visitor_b, staff_b):
        assert [e for e in console_errors(b.driver) if "Content Security Policy" in e] == []
    # after a whole call: no cookie, no storage on the business's page nor in the call page's
    # frame, and no request to any origin but the shop's and ours
    assert visitor_b.cookies() == []
    assert visitor_b.storage() == {"local": 0, "session": 0}  # in the frame (call page)
    host.leave_call()
    assert visitor_b.storage() == {"local": 0, "session": 0}  # the business's page
    assert only_from(visitor_b, origin(shop.url), control.url) == []


@pytest.mark.timeout(180)
def test_third_party_cookies_and_storage_blocked_a_german_visitor_cancels_then_talks(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    """The shop is another *site* (localhost; the platform is 127.0.0.1), and the visitor's
    browser blocks third-party cookies and storage: the call page in the overlay gets a
    SecurityError from sessionStorage. The button (``lang="de"``) still shows the link's state and loads
    nothing of the call until clicked; the visitor cancels one call while it rings (the call
    is left abandoned), then calls again and talks."""
    tenant = control.bootstrap(media=["video", "voice"])
    console = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    assert urlsplit(control.url).hostname == "127.0.0.1"
    with HostSite(host_page(control.url, tenant.link["public_id"], lang="de")) as site:
        shop = site.url.replace("//127.0.0.1:", "//localhost:")
        b = open_browser(prefs=block_third_party(control.url, origin(shop)))
        host = EmbedHost(b, control.url).open(shop).wait_button()
        assert host.label == "Videoanruf"
        assert host.wait_status() == "open" and host.status_text == "Jetzt erreichbar"
        loaded = [urlsplit(u).path for u in b.requests()]
        assert "/embed.js" in loaded
        assert not [p for p in loaded if p.startswith(("/c/", "/static/"))], loaded
        host.click()
        visitor = host.call().wait_ready()
        assert visitor.heading == "Acme Bikes anrufen"
        assert visitor.d.execute_script(
            "try { sessionStorage.length; return false } catch (e) { return true }"
        ), "the browser lets the third-party frame use its storage: nothing is tested"

        visitor.button("Sprachanruf").click()
        visitor.wait_state("ringing")
        console.wait_ringing()
        call_id = visitor.d.execute_script(
            "return document.querySelector('clickacall-call').session.state.callId"
        )
        visitor.button("Abbrechen").click()
        visitor.wait_state("ended", "idle")
        console.wait_quiet()
        r = httpx.get(f"{control.url}/v1/calls/{call_id}", headers=tenant.th, timeout=10)
        assert r.json()["status"] == "abandoned", r.text
        if visitor.state == "ended":
            visitor.button("Erneut anrufen").click()
            visitor.wait_state("idle")

        visitor.button("Sprachanruf").click()
        visitor.wait_state("ringing")
        console.answer()
        visitor.wait_state("in-call", timeout=30)
        visitor.button("Auflegen").click()
        visitor.wait_state("ended")
        console.wait_ready()
        assert b.cookies() == []
        host.leave_call()
        assert b.storage() == {"local": 0, "session": 0}
        assert only_from(b, origin(shop), control.url) == []


@pytest.mark.timeout(180)
def test_on_a_phone_the_staff_member_hangs_up(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    tenant = control.bootstrap(media=["video", "voice"])
    console = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    console.arm()
    phone = open_browser(phone=True)
    visitor = CallPage(phone, control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.video_call()
    visitor.wait_state("ringing")
    screenshot(visitor.d, "ringing-phone")
    console.answer()
    visitor.wait_state("in-call", timeout=30)
    visitor.until(lambda: visitor.remote_video_playing(), 20, "the staff member's video")
    assert not visitor.has_button("Share screen") or visitor.d.execute_script(
        "return 'getDisplayMedia' in navigator.mediaDevices"
    )
    assert phone.driver.execute_script("return document.documentElement.scrollWidth") <= 375
    assert axe_violations(visitor.d) == []
    screenshot(visitor.d, "incall-phone")
    screenshot(console.d, "incall-console")
    console.hang_up()
    visitor.wait_state("ended")
    assert "The call lasted" in visitor.end_text
    screenshot(visitor.d, "ended-phone")


@pytest.mark.timeout(120)
def test_declined_call_offers_a_callback(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    tenant = control.bootstrap(media=["voice"])
    console = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    visitor = CallPage(open_browser(phone=True), control.url).open(tenant.link["public_id"])
    visitor.wait_ready()
    assert not visitor.has_button("Video call")
    # by keyboard: the state changes are announced and focus moves to each screen's heading
    voice = visitor.button("Voice call")
    visitor.d.execute_script("arguments[0].focus()", voice)
    visitor.focused().send_keys(Keys.ENTER)
    visitor.wait_state("ringing")
    visitor.until(lambda: visitor.live_text() == "Calling Acme Bikes…", 5, "the announcement")
    assert visitor.focused().text == "Calling Acme Bikes…"
    console.decline()
    console.wait_quiet()
    visitor.wait_state("callback")
    assert visitor.text("[data-screen='callback'] h2") == "Nobody answered"
    visitor.until(lambda: visitor.live_text() == "Nobody answered", 5, "the announcement")
    assert visitor.focused().text == "Nobody answered"
    assert visitor.has_button("Ask for a call back")
    assert axe_violations(visitor.d) == []
    screenshot(visitor.d, "callback-phone")


@pytest.mark.timeout(150)
def test_camera_denied_the_visitor_talks_by_voice(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    """The browser denies the camera but allows the microphone: the page explains it and the
    visitor makes a voice call that the staff member answers and hears."""
    tenant = control.bootstrap(media=["video", "voice"])
    console = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    phone = open_browser(phone=True, prompts=False)
    phone.permit(control.url, "granted", "microphone")
    phone.permit(control.url, "denied", "camera")
    visitor = CallPage(phone, control.url).open(tenant.link["public_id"])
    visitor.wait_state("idle")
    visitor.until(lambda: visitor.problem, 10, "the camera problem")
    assert visitor.problem == "Your browser blocks this page from using the camera."
    assert visitor.button("Video call").get_attribute("disabled") is not None
    visitor.voice_call()
    visitor.wait_state("ringing")
    console.answer()
    console.in_call()
    visitor.wait_state("in-call", timeout=30)
    assert not visitor.has_button("Camera"), "a voice call has no camera button"
    # the staff member receives the visitor's microphone (and no camera) through the relay
    console.until(
        lambda: (
            console.d.execute_async_script(
                "const done = arguments[0];"
                "const pc = document.querySelector('clickacall-console').call?.peer?.pc;"
                "if (!pc) return done(false); pc.getStats().then(r => { let a = 0, v = 0;"
                " r.forEach(s => { if (s.type === 'inbound-rtp') { if (s.kind === 'audio')"
                " a += s.packetsReceived || 0; else v += s.framesDecoded || 0; } });"
                " done(a > 50 && v === 0); }, () => done(false));"
            )
            is True
        ),
        20,
        "the visitor's voice at the console",
    )
    visitor.hang_up()
    visitor.wait_state("ended")
    console.wait_ready()


@pytest.mark.timeout(150)
def test_one_member_in_two_tabs_rings_in_both_and_stops_in_both(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    tenant = control.bootstrap(media=["video", "voice"])
    tabs = [
        ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready() for _ in range(2)
    ]
    visitor = CallPage(open_browser(), control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.voice_call()
    visitor.wait_state("ringing")
    for tab in tabs:
        tab.wait_ringing()
        assert tab.ringer_title(), "the title says it rings"
    tabs[0].answer()
    tabs[1].wait_quiet()
    assert not tabs[1].page_title.startswith("Ringing")
    tabs[0].in_call()
    visitor.wait_state("in-call", timeout=30)
    assert not visitor.has_button("Camera"), "a voice call has no camera button"
    visitor.hang_up()
    tabs[0].wait_ready()

    # the wrap-up after the call shows in both tabs and keeps calls off; Ready in one ends it
    status = f"{control.url}/v1/links/{tenant.link['public_id']}/status"
    for tab in tabs:
        tab.until(lambda t=tab: t.wrapping_up, 10, "the wrap-up in both tabs")
    assert httpx.get(status, timeout=10).json()["state"] == "unavailable"
    tabs[1].ready()
    tabs[0].until(lambda: not tabs[0].wrapping_up, 10, "the wrap-up ended in the other tab")
    assert httpx.get(status, timeout=10).json()["state"] == "open"
    # "Available" off in one tab: away in both, and the link tells visitors nobody is there
    tabs[0].set_available(False)
    tabs[1].until(lambda: not tabs[1].available, 10, "away in the other tab too")
    assert "away" in tabs[1].text(".cs-presence-text").lower()
    assert httpx.get(status, timeout=10).json()["state"] == "unavailable"
    tabs[1].set_available(True)
    tabs[0].until(lambda: tabs[0].available, 10, "available again in the first tab")
    assert httpx.get(status, timeout=10).json()["state"] == "open"


@pytest.mark.timeout(150)
def test_two_members_rung_the_first_answer_wins_in_both_consoles(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    tenant = control.bootstrap(media=["video", "voice"])
    _, bob = control.add_member(tenant, "Bob")
    ann_c = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    bob_c = ConsolePage(open_browser(), control.url).open(bob).wait_ready()
    visitor = CallPage(open_browser(), control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.voice_call()
    visitor.wait_state("ringing")
    for console in (ann_c, bob_c):
        console.wait_ringing()
    bob_c.answer()
    bob_c.in_call()
    ann_c.wait_quiet()  # Ann's console stops ringing: the call is Bob's
    assert ann_c.state == "ready"
    visitor.wait_state("in-call", timeout=30)
    visitor.until(lambda: "Bob" in visitor.staff_name, 10, "the answering member's name")
    visitor.hang_up()
    bob_c.wait_ready()
    assert ann_c.state == "ready" and not ann_c.ringing()


@pytest.mark.timeout(150)
def test_a_reload_while_ringing_resumes_the_call(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    tenant = control.bootstrap(media=["video", "voice"])
    console = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    visitor_b = open_browser()
    visitor = CallPage(visitor_b, control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.video_call()
    visitor.wait_state("ringing")
    assert visitor_b.storage()["session"] == 1, "sessionStorage keeps the live call"
    visitor.d.refresh()
    visitor.wait_state("ringing")  # the same call, still ringing
    console.wait_ringing()
    assert len(console.ringing()) == 1
    console.answer()
    visitor.wait_state("in-call", timeout=30)
    visitor.until(lambda: visitor.remote_video_playing(), 20, "the staff member's video")
    console.until(lambda: console.remote_video_playing(), 20, "the visitor's video")
    visitor.hang_up()
    visitor.wait_state("ended")
    assert visitor_b.storage() == {"local": 0, "session": 0}, "nothing kept after the call"
    assert visitor_b.cookies() == []


@pytest.mark.timeout(150)
def test_a_reload_in_the_call_reconnects(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    tenant = control.bootstrap(media=["video", "voice"])
    console = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    visitor = CallPage(open_browser(), control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.video_call()
    console.answer()
    visitor.wait_state("in-call", timeout=30)
    visitor.d.refresh()
    assert visitor.wait_state("reconnecting", "in-call") in ("reconnecting", "in-call")
    visitor.wait_state("in-call", timeout=30)
    visitor.until(lambda: visitor.remote_video_playing(), 20, "the staff member's video again")
    console.until(lambda: console.remote_video_playing(), 20, "the visitor's video again")
    assert console.state == "in-call"
    console.hang_up()
    visitor.wait_state("ended")


UFRAG = (
    "const pc = {pc}; const m = pc && pc.localDescription"
    " && /a=ice-ufrag:(\\S+)/.exec(pc.localDescription.sdp); return m ? m[1] : null;"
)
VISITOR_PC = "document.querySelector('clickacall-call').session?.peer?.pc"
STAFF_PC = "document.querySelector('clickacall-console').call?.peer?.pc"


def _ice_answers(b: Browser) -> list[int]:
    """The statuses of every fresh-ICE-servers request the browser made."""
    return [r["status"] for r in b.responses() if re.search(r"/v1/calls/[^/]+/ice$", r["url"])]


@pytest.mark.timeout(180)
def test_a_network_change_in_the_call_restarts_ice_with_fresh_credentials(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    """The device says it changed networks (``online``, or the Network Information API's
    ``change``): each side fetches fresh relay credentials and restarts ICE (a new ufrag),
    and the call goes on with video both ways, through the relay only."""
    tenant = control.bootstrap(media=["video", "voice"])
    staff_b, visitor_b = open_browser(), open_browser()
    console = ConsolePage(staff_b, control.url).open(tenant.login).wait_ready()
    visitor = CallPage(visitor_b, control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.video_call()
    console.answer()
    console.in_call()
    visitor.wait_state("in-call", timeout=30)
    visitor.until(lambda: visitor.remote_video_playing(), 20, "the staff member's video")
    console.until(lambda: console.remote_video_playing(), 20, "the visitor's video")
    assert _ice_answers(visitor_b) == [] and _ice_answers(staff_b) == []

    for page, b, pc in ((visitor, visitor_b, VISITOR_PC), (console, staff_b, STAFF_PC)):
        before = page.d.execute_script(UFRAG.format(pc=pc))
        assert before, "no local description"
        page.d.execute_script("window.dispatchEvent(new Event('online'))")
        page.until(lambda b=b: 200 in _ice_answers(b), 15, "fresh ICE servers")
        page.until(
            lambda p=page, pc=pc, u=before: (
                p.d.execute_script(UFRAG.format(pc=pc)) not in (u, None)
            ),
            15,
            "an ICE restart (a new ufrag)",
        )
    visitor.until(lambda: visitor.video_flowing(), 30, "the staff member's video after")
    console.until(lambda: console.video_flowing(), 30, "the visitor's video after")
    assert visitor.state == "in-call" and console.call_state == "in-call"
    for b in (visitor_b, staff_b):
        for line in candidates_received(b):
            assert " typ relay" in line, line
    visitor.hang_up()
    visitor.wait_state("ended")
    console.wait_ready()


@pytest.mark.timeout(120)
def test_a_closed_link_shows_when_it_opens_and_offers_a_callback(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    # open only for an hour two days from now: closed while the test runs
    weekday = (datetime.datetime.now(datetime.UTC).weekday() + 2) % 7
    hours = {"timezone": "UTC", "windows": [[weekday, 8 * 60, 9 * 60]]}
    tenant = control.bootstrap(media=["video", "voice"], hours=hours)
    b = open_browser()
    with HostSite(host_page(control.url, tenant.link["public_id"])) as site:
        host = EmbedHost(b, control.url).open(site.url).wait_button()
        assert host.wait_status() == "closed"
        assert host.status_text.startswith("Closed, opens ")
        screenshot(host.d, "widget-closed")
    page = CallPage(b, control.url).open(tenant.link["public_id"]).wait_ready()
    page.until(lambda: page.status_line.startswith("We are closed right now. We open "), 10)
    assert page.button("Video call").get_attribute("disabled") is not None
    page.button("Ask for a call back").click()
    page.wait_state("callback")
    assert page.text("[data-screen='callback'] h2") == "We are closed right now"
    assert axe_violations(page.d) == []


def _wait_healthy(control: WebControl, node_id: str, healthy: bool, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = httpx.get(f"{control.url}/v1/nodes", headers=control.oh, timeout=5).json()
        if any(n["id"] == node_id and n["healthy"] == healthy for n in nodes):
            return
        time.sleep(0.2)
    pytest.fail(f"the relay node {node_id} did not become {'healthy' if healthy else 'unhealthy'}")


@pytest.mark.timeout(240)
def test_a_relay_restart_mid_call_restarts_ice_and_media_flows_again(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    """The relay node goes away in the middle of a video call and comes back on the same
    address: both sides say they are reconnecting, restart ICE with fresh credentials from the
    control plane, and see each other again through the new relay process."""
    tenant = control.bootstrap(media=["video", "voice"])
    staff_b, visitor_b = open_browser(), open_browser()
    console = ConsolePage(staff_b, control.url).open(tenant.login).wait_ready()
    console.arm()
    visitor = CallPage(visitor_b, control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.video_call()
    console.answer()
    console.in_call()
    visitor.wait_state("in-call", timeout=30)
    visitor.until(lambda: visitor.remote_video_playing(), 20, "the staff member's video")
    console.until(lambda: console.remote_video_playing(), 20, "the visitor's video")
    assert visitor.video_flowing() and console.video_flowing()
    call_id = visitor.d.execute_script(
        "return document.querySelector('clickacall-call').session?.state?.callId ?? null"
    )

    port = node.port
    try:
        node.stop()
        # ICE consent checks fail, then 3 s of "disconnected": both sides say so
        visitor.wait_state("reconnecting", timeout=40)
        console.until(lambda: console.call_state == "reconnecting", 40, "the console reconnecting")
        assert "Reconnecting" in " ".join(visitor.banners()), visitor.banners()
        assert "Reconnecting" in " ".join(console.banners()), console.banners()
        # the quality indicators no longer show the last good numbers
        visitor.until(lambda: visitor.quality == "poor", 10, "the visitor's quality poor")
        console.until(lambda: console.quality == "poor", 10, "the console's quality poor")
        screenshot(visitor.d, "reconnecting-visitor")
        screenshot(console.d, "reconnecting-console")
        for page in (visitor, console):  # two banners (each side lost it) never overlap
            shown = [
                b.rect
                for b in page.d.find_elements(By.CSS_SELECTOR, ".cc-banner, .cs-banner")
                if b.is_displayed()
            ]
            for i, a in enumerate(shown):
                for b in shown[i + 1 :]:
                    assert (
                        a["y"] + a["height"] <= b["y"]
                        or b["y"] + b["height"] <= a["y"]
                        or a["x"] + a["width"] <= b["x"]
                        or b["x"] + b["width"] <= a["x"]
                    ), (a, b)
    finally:
        with pytest.MonkeyPatch.context() as env:  # same address and node id: it registers again
            env.setenv("CLICKACALL_NODE_SECRET", control.node_secret)
            node.start(port=port)
    _wait_healthy(control, "web-1", True)

    visitor.wait_state("in-call", timeout=60)
    console.until(lambda: console.call_state == "in-call", 60, "the console back in the call")
    visitor.until(lambda: visitor.video_flowing(), 30, "the staff member's video again")
    console.until(lambda: console.video_flowing(), 30, "the visitor's video again")
    visitor.until(lambda: not visitor.banners(), 15, "the visitor's banners gone")
    visitor.until(lambda: visitor.quality != "poor", 15, "the visitor's quality back")
    console.until(lambda: not console.banners(), 15, "the console's banners gone")

    # both asked the control plane for fresh relay credentials (503 while no relay was
    # usable); a restart with fresh ones brought the call back (the other side may have
    # reconnected through that restart before its own next try)
    fresh = {}
    for side, b in (("visitor", visitor_b), ("staff", staff_b)):
        ice = [
            (r["url"], r["status"])
            for r in b.responses()
            if re.search(r"/v1/calls/[^/]+/ice$", r["url"])
        ]
        assert ice, f"the {side} did not ask for fresh ICE servers"
        assert {status for _, status in ice} <= {200, 503}, ice
        if call_id:
            assert all(f"/v1/calls/{call_id}/ice" in u for u, _ in ice), ice
        fresh[side] = [status for _, status in ice]
    assert any(200 in statuses for statuses in fresh.values()), fresh
    # still relay only after the restart
    for b in (visitor_b, staff_b):
        for line in candidates_received(b):
            assert " typ relay" in line, line

    visitor.hang_up()
    visitor.wait_state("ended")
    console.wait_ready()


@pytest.mark.timeout(150)
def test_nobody_answers_the_visitor_leaves_a_callback_and_staff_mark_it_done(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    """The call rings out (a 5 s ring timeout); the visitor asks for a call back with a name
    and a phone number; the console lists it until the member marks it done. The request is
    the call's visitor reference, and the connection check's verdict is stored on the call."""
    tenant = control.bootstrap(media=["video", "voice"], ring_timeout=5)
    console = ConsolePage(open_browser(), control.url).open(tenant.login).wait_ready()
    console.arm()
    assert console.callbacks() == []
    visitor = CallPage(open_browser(), control.url).open(tenant.link["public_id"]).wait_ready()
    visitor.voice_call()
    visitor.wait_state("ringing")
    console.wait_ringing()
    visitor.until(lambda: visitor.check in ("ok", "partial", "blocked"), 15, "the relay check")
    assert visitor.check == "ok"
    call_id = visitor.d.execute_script(
        "return document.querySelector('clickacall-call').session.state.callId"
    )

    visitor.wait_state("callback", timeout=30)  # nobody answered in 5 s
    console.wait_quiet()
    assert visitor.text("[data-screen='callback'] h2") == "Nobody answered"
    assert "only to call you back" in visitor.text(".cc-notice")
    assert axe_violations(visitor.d) == []
    screenshot(visitor.d, "callback-form")
    visitor.request_callback("Ada Lovelace", "+44 20 7946 0958")
    visitor.wait_state("ended")
    assert visitor.text("[data-screen='ended'] h2") == "Thank you, we will call you back"
    assert visitor.call_ref

    # the call carries the request and the check's verdict
    call = httpx.get(f"{control.url}/v1/calls/{call_id}", headers=tenant.th, timeout=10).json()
    assert call["status"] == "missed" and call["callback_state"] == "open", call
    assert call["visitor_check"] and call["visitor_check"]["verdict"] == "ok", call
    assert call["call_ref"] == visitor.call_ref
    assert "visitor_ref" not in call  # personal data: only the subject access API shows it
    assert subject_ref(control, tenant, call_id) == "Ada Lovelace · +44 20 7946 0958"

    # the console lists it (pushed over the staff events socket) until marked done
    console.until(lambda: len(console.callbacks()) == 1, 20, "the callback in the console")
    (item,) = console.callbacks()
    assert item.get_attribute("data-call") == call_id
    assert "Ada Lovelace · +44 20 7946 0958" in item.text and "Sales" in item.text
    assert axe_violations(console.d) == []
    screenshot(console.d, "console-callback")
    console.mark_done()
    console.until(lambda: console.callbacks() == [], 10, "the callback gone")
    console.until(lambda: "Call-back marked done." in console.live_text(), 10, "the announcement")
    open_ = httpx.get(f"{control.url}/v1/callbacks", headers=tenant.sh, timeout=10)
    assert open_.status_code == 200 and open_.json() == [], open_.text
    call = httpx.get(f"{control.url}/v1/calls/{call_id}", headers=tenant.th, timeout=10).json()
    assert call["callback_state"] == "done" and call["callback_done_by"] == tenant.staff_id
    # the visitor reference stays on the call (export, correction and erasure find it)
    assert subject_ref(control, tenant, call_id) == "Ada Lovelace · +44 20 7946 0958"


def subject_ref(control: WebControl, tenant: Staffed, call_id: str) -> str | None:
    """The call's visitor reference, through the tenant's subject access export."""
    r = httpx.get(
        f"{control.url}/v1/subjects", params={"call_id": call_id}, headers=tenant.th, timeout=10
    )
    r.raise_for_status()
    (call,) = r.json()["calls"]
    return call["visitor_ref"]  # type: ignore[no-any-return]
