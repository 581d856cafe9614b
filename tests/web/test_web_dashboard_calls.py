"""The dashboard's Calls section in real Chromium. Three calls are made through the real API
(clicks with a connection check, answers, declines, hang-ups) and the relay's quality
summaries posted as a node's agent posts them; the admin filters the log by outcome and by
MOS (a bad MOS is explained beside its field), opens a call's detail page and reads its
timeline and quality figures, and downloads the CSV, which is exactly the API's CSV for the
same filters. axe-core, the cookie audit and screenshots (build/screenshots/dashboard-calls*)
on each page, on a desktop and on a phone in German."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.controlproc import bearer
from tests.test_calllogs import flow, summary
from tests.web.browser import Browser, missing, screenshot
from tests.web.dashpages import CallsSection
from tests.web.test_web_dashboard import become_admin, business, check_page, fetch_status
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]

UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"}


# calls a page of the list holds (calls.js PAGE_SIZE)
JS = Path(__file__).parents[2] / "control/web/static/dashboard/calls.js"
PAGE = int(re.search(r"PAGE_SIZE = (\d+);", JS.read_text())[1])  # type: ignore[index]
SEQ = itertools.count(1)  # the node's summary numbers, rising across this module's tests


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


@dataclass
class Seeded:
    good: str  # answered by Ann, clean audio
    poor: str  # answered by Ben, lossy audio and video (MOS 2.4 from the visitor)
    declined: str  # Ann and Ben both declined


def seed(control: WebControl, key: str) -> Seeded:
    """Three calls through the API, as visitors, staff and the relay make them."""
    th, nh = bearer(key), bearer(control.node_secret)
    made: list[str] = []
    with httpx.Client(base_url=control.url, timeout=10) as c:
        staff = {}
        for name in ("Ann", "Ben"):
            r = c.post("/v1/staff", json={"name": name}, headers=th)
            r.raise_for_status()
            staff[name] = r.json()["id"]
        body = {"name": "Sales desk", "ring_staff": list(staff.values())}
        link = c.post("/v1/links", json=body, headers=th)
        link.raise_for_status()
        public = link.json()["public_id"]

        def console(who: str) -> dict[str, str]:
            r = c.post(f"/v1/staff/{staff[who]}/token", headers=th)
            r.raise_for_status()
            return bearer(r.json()["token"])

        for who in ("Ann", "Ben", None):
            beat = {"node_id": "n1", "region": "eu", "urls": ["turn:n1.example:3478"]}
            c.post("/v1/nodes/heartbeat", json=beat, headers=nh).raise_for_status()
            r = c.post(f"/v1/links/{public}/calls", json={"media": "voice"}, headers=UA)
            r.raise_for_status()
            v = r.json()
            visitor = bearer(v["token"])
            check = {"verdict": "partial", "transports": {"udp": "fail", "tcp": "ok"}, "ms": 1200}
            r = c.post(f"/v1/calls/{v['call_id']}/check", json=check, headers=visitor)
            assert r.status_code == 204, r.text
            if who is None:
                for name in ("Ann", "Ben"):
                    r = c.post(f"/v1/calls/{v['call_id']}/reject", headers=console(name))
                    r.raise_for_status()
                made.append(v["call_id"])
                continue
            r = c.post(f"/v1/calls/{v['call_id']}/answer", headers=console(who))
            r.raise_for_status()
            staff_token = r.json()["token_id"]
            r = c.post(f"/v1/calls/{v['call_id']}/hangup", headers=visitor)
            r.raise_for_status()
            if who == "Ann":
                up, down, kinds = flow(3000), flow(3000, jitter=4.0), ("audio",)
            else:
                up, down = flow(1500, lost=150, jitter=30.0, mos=2.4), flow(1500, mos=3.9)
                kinds = ("audio", "video")
            now = time.time()
            sums: list[dict[str, Any]] = []
            for token, a, b in ((v["token_id"], up, down), (staff_token, down, up)):
                seq = next(SEQ)
                sums.append(
                    summary(
                        seq,
                        token,
                        f"a{seq}",
                        started=now - 60,
                        at=now,
                        final=True,
                        up=a,
                        down=b,
                        kinds=kinds,
                    )
                )
            r = c.post("/v1/nodes/summaries", json={"node_id": "n1", "summaries": sums}, headers=nh)
            r.raise_for_status()
            assert r.json()["stored"] == 2, r.text
            made.append(v["call_id"])
    return Seeded(*made)


def ring(control: WebControl, key: str, n: int) -> list[str]:
    """``n`` clicks on a new link of the business that nobody answers: their call ids."""
    th, nh = bearer(key), bearer(control.node_secret)
    out = []
    with httpx.Client(base_url=control.url, timeout=10) as c:
        r = c.post("/v1/staff", json={"name": "Cleo"}, headers=th)
        r.raise_for_status()
        body = {"name": "Shop", "ring_staff": [r.json()["id"]]}
        r = c.post("/v1/links", json=body, headers=th)
        r.raise_for_status()
        public = r.json()["public_id"]
        for _ in range(n):
            beat = {"node_id": "n1", "region": "eu", "urls": ["turn:n1.example:3478"]}
            c.post("/v1/nodes/heartbeat", json=beat, headers=nh).raise_for_status()
            r = c.post(f"/v1/links/{public}/calls", json={}, headers=UA)
            r.raise_for_status()
            out.append(r.json()["call_id"])
    return out


def fetch_text(b: Browser, url: str) -> str:
    """What the signed-in page gets for ``url`` (its session cookie, as a download would)."""
    text: str = b.driver.execute_async_script(
        """
        const [url, done] = arguments;
        fetch(url).then(r => r.text()).then(done).catch(e => done("failed: " + e));
        """,
        url,
    )
    return text


@pytest.mark.timeout(300)
def test_an_admin_finds_a_poor_call_reads_it_and_downloads_the_csv(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Acme Bikes", "olivia@calls.test")
    s = seed(control, key)
    admin = open_browser()
    dash = become_admin(admin, control, url, "olivia's long password")
    calls = CallsSection(admin, control.url)
    calls.go("Calls", "calls")
    calls.wait_list()
    assert admin.driver.current_url.endswith("/dashboard/calls")
    assert calls.heading == "Calls" and calls.current == "calls"
    assert [u.rsplit("/", 1)[1] for u in calls.call_links()] == [s.declined, s.poor, s.good]
    check_page(admin, "dashboard-calls")

    # by outcome: only the declined call
    calls.choose("calls-outcome", "Declined")
    calls.apply()
    assert [u.rsplit("/", 1)[1] for u in calls.call_links()] == [s.declined]
    assert "outcome=rejected" in admin.driver.current_url  # the filters are in the URL
    rows = calls.rows()
    assert rows[0][1] == "Declined" and rows[0][6] == "not measured"

    # a MOS that is no number: a message beside its field, the list not shown
    calls.choose("calls-outcome", "Any outcome")
    calls.fill("calls-mos", "bad")
    calls.button("Show calls").click()
    calls.until(lambda: calls.errors(), 10, "the MOS error")
    mos = admin.driver.find_element("id", "calls-mos")
    assert mos.get_attribute("aria-invalid") == "true"
    assert "calls-mos-error" in str(mos.get_attribute("aria-describedby"))
    assert calls.errors() == ["must be a number from 1 to 5, such as 3.5"]
    assert calls.call_links() == []
    check_page(admin, "dashboard-calls-bad-filter")

    # an end date before the start date: the message beside "To"
    calls.fill("calls-mos", "")
    admin.driver.execute_script(
        "document.getElementById('calls-from').value = '2026-03-10';"
        "document.getElementById('calls-to').value = '2026-03-01';"
    )
    calls.button("Show calls").click()
    calls.until(lambda: calls.errors(), 10, "the date error")
    assert calls.errors() == ["the end is before the start"]
    to = admin.driver.find_element("id", "calls-to")
    assert to.get_attribute("aria-invalid") == "true" and calls.focused() == to
    calls.button("Clear filters").click()
    calls.wait_list()
    assert calls.errors() == [] and len(calls.call_links()) == 3

    # MOS below 3: the poor call only
    calls.fill("calls-mos", "3")
    calls.apply()
    assert calls.errors() == []
    assert [u.rsplit("/", 1)[1] for u in calls.call_links()] == [s.poor]
    assert calls.rows()[0][3] == "Ben" and calls.rows()[0][6] == "2.4 poor"
    check_page(admin, "dashboard-calls-filtered")

    # the CSV is the API's for exactly these filters
    href = calls.csv_href
    assert "/v1/dashboard/calls.csv?" in href and "mos_below=3" in href
    downloaded = fetch_text(admin, href)
    theirs = httpx.get(
        f"{control.url}/v1/calllogs.csv", params={"mos_below": "3"}, headers=bearer(key), timeout=10
    )
    assert theirs.status_code == 200
    assert downloaded == theirs.text
    assert len(downloaded.strip().splitlines()) == 2 and s.poor in downloaded

    # its detail page: timeline, quality, media, region, retention
    admin.driver.find_element("css selector", ".dash-table a.dash-call-link").click()
    calls.wait_detail()
    assert admin.driver.current_url.endswith(f"/dashboard/calls/{s.poor}")
    assert calls.current == "calls"
    steps = calls.timeline()
    assert steps[0] == "The visitor clicked for a voice call"
    assert steps[1].startswith("Connection check: some ways to our relay are blocked in 1.2 s")
    assert "UDP blocked, TCP works" in steps[1]
    assert steps[2:] == ["Rang Ann, Ben", "Answered by Ben", "Ended: visitor hung up"]
    assert calls.fact("Media our relay carried") == "audio, video"
    assert calls.fact("Relay region the media stayed in") == "eu"
    assert calls.fact("The visitor chose") == "voice call"
    assert "then deleted (your retention: 60 months)" in calls.fact("Kept until")
    quality = {r[0]: r[1:] for r in calls.rows()}
    assert quality["From the visitor"] == ["9.09 %", "30 ms", "2.4 poor"]
    assert quality["To the visitor"][2] == "3.9 fair"
    check_page(admin, "dashboard-call-detail")
    admin.driver.execute_script("document.getElementById('call-timeline-title').scrollIntoView()")
    screenshot(admin.driver, "dashboard-call-detail-quality")
    # the nav from a detail page loads the section
    calls.d.find_element("link text", "Calls").click()
    calls.until(lambda: admin.driver.current_url.endswith("/dashboard/calls"), 10, "the list")
    calls.wait_list()
    assert len(calls.call_links()) == 3
    # another business's admin: the call's page is the 404 page, its request a 404
    _, other_url = business(control, "Bolt", "owner@bolt-calls.test")
    bolt = open_browser()
    become_admin(bolt, control, other_url, "bolt's long password")
    bolt.driver.get(f"{control.url}/dashboard/calls/{s.good}")
    assert not bolt.driver.find_elements("css selector", "clickacall-dashboard")
    assert fetch_status(bolt, "GET", f"/v1/dashboard/calls/{s.good}") == 404
    assert dash.heading == "Calls"


@pytest.mark.timeout(240)
def test_the_calls_pages_on_a_phone_in_german(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Kaffee Klatsch", "inhaber@kaffee.test")
    s = seed(control, key)
    b = open_browser(phone=True, flags=("--lang=de",))
    become_admin(b, control, url, "ein langes Passwort")
    calls = CallsSection(b, control.url)
    b.driver.get(f"{control.url}/dashboard/calls?mos_below=3&lang=de")
    calls.wait_list()
    assert [u.rsplit("/", 1)[1] for u in calls.call_links()] == [s.poor]
    assert calls.heading == "Anrufe"
    check_page(b, "dashboard-calls-phone-de")
    b.driver.execute_script("document.getElementById('calls-list-title').scrollIntoView()")
    screenshot(b.driver, "dashboard-calls-phone-de-list")
    # more calls than a page holds: Older and Newer walk the API's cursor
    extra = ring(control, key, PAGE - 1)  # with the three above: a page and two calls
    b.driver.get(f"{control.url}/dashboard/calls?lang=de")
    calls.wait_list()
    first = [u.rsplit("/", 1)[1] for u in calls.call_links()]
    assert first == [*extra[::-1], s.declined]
    calls.button("Ältere Anrufe").click()
    calls.until(lambda: calls.text(".dash-pager").find("Seite 2") >= 0, 10, "page 2")
    calls.wait_list()
    rest = [u.rsplit("/", 1)[1] for u in calls.call_links()]
    assert rest == [s.poor, s.good]
    assert not calls.has_button("Ältere Anrufe")
    calls.button("Neuere Anrufe").click()
    calls.until(lambda: calls.text(".dash-pager").find("Seite 1") >= 0, 10, "page 1")
    assert [u.rsplit("/", 1)[1] for u in calls.call_links()] == first
    b.driver.get(f"{control.url}/dashboard/calls/{s.declined}?lang=de")
    calls.wait_detail()
    steps = calls.timeline()
    assert steps[2:4] == ["Klingelte bei Ann, Ben", "Abgelehnt von Ann"]
    assert steps[4] == "Abgelehnt von Ben" and steps[5].startswith("Abgelehnt: ")
    assert "Bei diesem Anruf liefen keine Medien" in calls.text("clickacall-dash-call")
    check_page(b, "dashboard-call-detail-phone-de")
