"""The dashboard's Analytics section in real Chromium. Calls are made through the real API
over the last week (clicks on two links, answers by two members, hang-ups, the relay's
summaries for the volume), with the in-process control plane's clock moved back for each;
the admin opens Analytics: the four charts are drawn with uPlot (pixels in the series' colour
on each canvas), their tables hold exactly the API's numbers (``GET /v1/analytics`` with the
business's key), and switching the period or the lines (per link, per staff member) redraws
both; an empty range says so, a bad one is explained beside its field. uPlot is served from
our own origin, byte for byte node_modules' copy, with no CSP violation. On a phone (German)
the charts fit the screen and follow its width. axe-core, the cookie audit and screenshots
(build/screenshots/dashboard-analytics*) on each view."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.controlproc import bearer
from tests.test_calllogs import flow, summary
from tests.web.browser import Browser, console_errors, missing, screenshot
from tests.web.dashpages import AnalyticsSection
from tests.web.test_web_dashboard import become_admin, business, check_page
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).parents[2]
UPLOT = ROOT / "node_modules/uplot/dist"
UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"}
DAY = 86400
SEQ = itertools.count(1)  # the node's summary numbers, rising across this module's tests
# (days ago, link, who answers or None, seconds talked, packets relayed each way)
PLAN = [
    (6, "Sales", "Ann", 300.0, 4000),
    (4, "Sales", None, 0.0, 0),
    (4, "Support", "Ben", 120.0, 1500),
    (2, "Sales", "Ben", 600.0, 20000),
    (1, "Support", "Ann", 60.0, 800),
    (1, "Support", None, 0.0, 0),
]


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


def seed(control: WebControl, key: str) -> None:
    """:data:`PLAN`'s calls through the API, each at noon (UTC) of its day: the control
    plane's clock (``app.state.clock``) is moved back for them, then given back."""
    th, nh = bearer(key), bearer(control.node_secret)
    today = int(time.time() // DAY) * DAY
    now = [float(today - 7 * DAY)]
    real = control.app.state.clock
    control.app.state.clock = lambda: now[0]
    try:
        with httpx.Client(base_url=control.url, timeout=10) as c:
            staff = {}
            for name in ("Ann", "Ben"):
                r = c.post("/v1/staff", json={"name": name}, headers=th)
                r.raise_for_status()
                staff[name] = r.json()["id"]
            links = {}
            for name in ("Sales", "Support"):
                r = c.post(
                    "/v1/links", json={"name": name, "ring_staff": list(staff.values())}, headers=th
                )
                r.raise_for_status()
                links[name] = r.json()["public_id"]
            for i, (back, link, who, talk, packets) in enumerate(PLAN):
                now[0] = today - back * DAY + 12 * 3600 + i * 60
                beat = {"node_id": "n1", "region": "eu", "urls": ["turn:n1.example:3478"]}
                c.post("/v1/nodes/heartbeat", json=beat, headers=nh).raise_for_status()
                r = c.post(f"/v1/links/{links[link]}/calls", json={}, headers=UA)
                r.raise_for_status()
                v = r.json()
                if who is None:  # nobody answers: it rings out
                    continue
                now[0] += 5
                r = c.post(f"/v1/staff/{staff[who]}/token", headers=th)
                r.raise_for_status()
                r = c.post(f"/v1/calls/{v['call_id']}/answer", headers=bearer(r.json()["token"]))
                r.raise_for_status()
                now[0] += talk
                r = c.post(f"/v1/calls/{v['call_id']}/hangup", headers=bearer(v["token"]))
                r.raise_for_status()
                seq = next(SEQ)
                sums = [
                    summary(
                        seq,
                        v["token_id"],
                        f"a{seq}",
                        started=now[0] - talk,
                        at=now[0],
                        final=True,
                        up=flow(packets),
                        down=flow(packets),
                    )
                ]
                r = c.post(
                    "/v1/nodes/summaries", json={"node_id": "n1", "summaries": sums}, headers=nh
                )
                r.raise_for_status()
                assert r.json()["stored"] == 1, r.text
    finally:
        control.app.state.clock = real


def api(control: WebControl, key: str, url: str) -> dict[str, Any]:
    """``GET /v1/analytics`` with the business's key, for the query the page's URL holds."""
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items() if k in ("period", "by")}
    r = httpx.get(f"{control.url}/v1/analytics", params=q, headers=bearer(key), timeout=10)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def same_numbers(sec: AnalyticsSection, answer: dict[str, Any]) -> None:
    """Every chart's table holds exactly the API's figures, period by period and series by
    series, and the API's totals in its footer."""
    grouped = answer["by"] != "none"
    starts = sorted({b["start"] for b in answer["buckets"]})
    for figure in sec.FIGURES:
        table: Any = sec.table(figure)
        assert sorted(float(s) for s in table["rows"]) == starts, figure
        for b in answer["buckets"]:
            value, text = table["rows"][str(int(b["start"]))][b["key"] or ""]
            want = b[figure]
            assert (float(value) if value != "" else None) == want, (figure, b)
            if figure == "calls":
                assert text == str(want)
        # the totals: the API's, in the "all" column when grouped
        value, _ = table["foot"]["*" if grouped else ""]
        want = answer["totals"][figure]
        assert (float(value) if value != "" else None) == want, figure
        if grouped:  # each series' own total adds up to the API's
            keys = {b["key"] or "" for b in answer["buckets"]}
            per = [int(table["foot"][k][0]) for k in keys] if figure == "calls" else []
            assert sum(per) == (answer["totals"]["calls"] if figure == "calls" else 0)


def drawn(sec: AnalyticsSection) -> None:
    """Each chart's canvas holds the axes and, in the series' colours, their lines."""
    for figure in sec.FIGURES:
        ink = sec.ink(figure)
        assert ink["ink"] > 2000, (figure, ink)
        assert ink["series"] > 60, (figure, ink)
        assert ink["width"] > 150 and ink["height"] >= 200, (figure, ink)


@pytest.mark.timeout(300)
def test_an_admin_reads_the_charts_and_their_numbers(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Acme Bikes", "olivia@charts.test")
    seed(control, key)
    admin = open_browser()
    become_admin(admin, control, url, "olivia's long password")
    sec = AnalyticsSection(admin, control.url)
    sec.go("Analytics", "analytics")
    sec.wait_charts()
    assert sec.heading == "Analytics" and sec.current == "analytics"
    assert not sec.errors()
    answer = api(control, key, admin.driver.current_url)
    assert answer["totals"]["calls"] == len(PLAN)
    same_numbers(sec, answer)
    drawn(sec)
    totals = sec.totals()
    assert totals["Calls"] == "6"
    assert totals["Answered"] == "66.7% (4 of 6)"
    assert totals["Minutes talked"] == "18"  # 300 + 120 + 600 + 60 seconds
    assert totals["Volume our relays carried"] == "8.4 MB"  # 2 × 26,300 packets × 160 bytes
    assert sec.legend("calls") == ["Day", "All calls"]
    table: Any = sec.table("calls")
    assert table["caption"] == "Calls per day; total 6."
    # uPlot came from our origin, byte for byte the npm package's; nothing from elsewhere
    for name in ("uPlot.esm.js", "uPlot.min.css"):
        r = httpx.get(f"{control.url}/static/vendor/uplot/{name}", timeout=10)
        assert r.status_code == 200 and r.content == (UPLOT / name).read_bytes(), name
    requests = admin.requests()
    for name in ("uPlot.esm.js", "uPlot.min.css"):
        assert f"{control.url}/static/vendor/uplot/{name}" in requests, name
    web = [u for u in requests if u.startswith(("http:", "https:", "ws:", "wss:"))]
    assert all(u.startswith(control.url + "/") for u in web), web
    errors = console_errors(admin.driver)
    assert errors == [], errors  # no CSP violation, nor anything else
    check_page(admin, "dashboard-analytics")
    admin.driver.execute_script("document.querySelector('.dash-chart-card').scrollIntoView()")
    screenshot(admin.driver, "dashboard-analytics-charts")

    # one line per link: the legend names them, the tables split by link as the API does
    sec.choose("an-by", "Per link")
    assert "by=link" in admin.driver.current_url
    answer = api(control, key, admin.driver.current_url)
    same_numbers(sec, answer)
    drawn(sec)
    assert sec.legend("calls") == ["Day", "Sales", "Support"]  # the busiest first (3 each: by name)
    assert sec.table("minutes")["head"] == ["Day", "Sales", "Support", "All"]  # type: ignore[index]

    # per week, then per month and staff member (calls nobody answered are a line too)
    sec.choose("an-period", "Week")
    assert "period=week" in admin.driver.current_url
    same_numbers(sec, api(control, key, admin.driver.current_url))
    drawn(sec)
    sec.choose("an-period", "Month")
    sec.choose("an-by", "Per staff member")
    answer = api(control, key, admin.driver.current_url)
    assert answer["period"] == "month" and answer["by"] == "staff"
    same_numbers(sec, answer)
    drawn(sec)
    assert sorted(sec.legend("calls")[1:]) == ["Ann", "Ben", "Not answered"]
    assert sec.legend("calls")[-1] == "Not answered"
    check_page(admin, "dashboard-analytics-staff-month")
    admin.driver.execute_script("document.querySelector('.dash-chart-card').scrollIntoView()")
    screenshot(admin.driver, "dashboard-analytics-staff-month-charts")

    # the numbers as a table, opened
    admin.driver.execute_script(
        "const d = document.querySelector('.dash-chart-card[data-figure=bytes] details');"
        "d.open = true; d.scrollIntoView();"
    )
    screenshot(admin.driver, "dashboard-analytics-table")

    # Back: the choices before (per month, by link) again
    admin.driver.back()
    sec.until(lambda: "by=link" in admin.driver.current_url, 10, "the URL of before")
    sec.until(lambda: sec.legend("calls") == ["Month", "Sales", "Support"], 10, "by link")
    sec.wait_charts()
    same_numbers(sec, api(control, key, admin.driver.current_url))

    # a range with no calls: says so; the end before the start: beside "To"
    admin.driver.get(f"{control.url}/dashboard/analytics?from=2020-01-01&to=2020-01-31")
    sec.wait_charts()
    assert sec.text(".dash-charts > p") == "No calls in this range."
    assert sec.totals()["Calls"] == "0"
    assert not admin.driver.find_elements("css selector", ".dash-chart-card")
    check_page(admin, "dashboard-analytics-empty")
    admin.driver.execute_script(
        "document.getElementById('an-from').value = '2026-03-10';"
        "document.getElementById('an-to').value = '2026-03-01';"
    )
    sec.button("Show").click()
    sec.until(lambda: sec.errors(), 10, "the date error")
    assert sec.errors() == ["the end is before the start"]
    to = admin.driver.find_element("id", "an-to")
    assert to.get_attribute("aria-invalid") == "true" and sec.focused() == to

    # the charts follow their container's width (two columns on a wide screen, one on a narrow)
    admin.driver.get(f"{control.url}/dashboard/analytics")
    sec.wait_charts()
    before = sec.ink("calls")
    assert before["plot"] - 2 <= before["width"] <= before["plot"] + 1, before
    admin.driver.set_window_size(700, 900)

    def followed() -> bool:
        ink = sec.ink("calls")
        return abs(ink["width"] - before["width"]) > 50 and abs(ink["width"] - ink["plot"]) <= 2

    sec.until(followed, 10, "the chart to take its container's new width")
    drawn(sec)


@pytest.mark.timeout(240)
def test_the_charts_on_a_phone_in_german(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Kaffee Klatsch", "inhaber@charts.test")
    seed(control, key)
    b = open_browser(phone=True, flags=("--lang=de",))
    become_admin(b, control, url, "ein langes Passwort")
    sec = AnalyticsSection(b, control.url)
    b.driver.get(f"{control.url}/dashboard/analytics?by=link&lang=de")
    sec.wait_charts()
    assert sec.heading == "Auswertungen"
    same_numbers(sec, api(control, key, b.driver.current_url))
    drawn(sec)
    assert sec.legend("calls") == ["Tag", "Sales", "Support"]
    totals = sec.totals()
    assert totals["Anrufe"] == "6" and totals["Von unseren Relays übertragen"] == "8,4 MB"
    assert sec.table("calls")["caption"] == "Anrufe pro Tag; insgesamt 6."  # type: ignore[index]
    # the charts fit the phone: no sideways scrolling, each as wide as its card allows
    width = b.driver.execute_script("return document.documentElement.clientWidth")
    assert b.driver.execute_script("return document.documentElement.scrollWidth") <= width
    for figure in sec.FIGURES:
        ink = sec.ink(figure)
        assert 200 <= ink["width"] <= ink["plot"] + 1 and ink["width"] < width, (figure, ink)
    errors = console_errors(b.driver)
    assert errors == [], errors
    check_page(b, "dashboard-analytics-phone-de")
    b.driver.execute_script("document.querySelector('.dash-chart-card').scrollIntoView()")
    screenshot(b.driver, "dashboard-analytics-phone-de-chart")
    b.driver.execute_script(
        "const d = document.querySelector('.dash-chart-card[data-figure=minutes] details');"
        "d.open = true; d.scrollIntoView();"
    )
    screenshot(b.driver, "dashboard-analytics-phone-de-table")
