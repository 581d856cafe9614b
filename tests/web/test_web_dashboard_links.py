"""The dashboard's Links section in real Chromium: an admin creates a link (a bad ring timeout
first: the message beside the field, nothing stored), copies its embed snippet (the real
clipboard), sees the live preview (the real <clickacall-button> from /embed.js, drawn inside the
dashboard under its CSP), edits the opening hours and time zone, and downloads the QR code as
PNG (decoded: the share URL) and SVG; then a visitor rings through the share URL of a link made
in the dashboard, and the member it rings hears it. axe-core, the cookie audit and screenshots as on every
dashboard page (build/screenshots/dashboard-links*)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import segno
from selenium.webdriver.common.by import By

from tests.controlproc import bearer
from tests.relayproc import RelayProcess
from tests.test_dashboard_links import _png_modules
from tests.web import test_web_call
from tests.web.browser import Browser, missing, screenshot
from tests.web.dashpages import LinksSection, StaffSection
from tests.web.pages import CallPage, ConsolePage, InvitePage, SignInPage
from tests.web.test_web_dashboard import become_admin, business, check_page
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]

node = test_web_call.node  # a relay node, for the visitor's call


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


def _downloaded(folder: Path, name: str, timeout: float = 15.0) -> bytes:
    path = folder / name
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and not list(folder.glob("*.crdownload")):
            return path.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded: {sorted(p.name for p in folder.iterdir())}")


@pytest.mark.timeout(240)
def test_an_admin_creates_a_link_copies_its_snippet_edits_hours_and_prints_the_qr(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Linden Dental", "olivia@linden.test")
    b = open_browser()
    dash = become_admin(b, control, url, "olivia's long password")
    staff = StaffSection(b, control.url)
    staff.go("Staff", "staff")
    staff.invite("Ben Baker", "ben@linden.test")
    (ben,) = [
        m["id"]
        for m in httpx.get(f"{control.url}/v1/staff", headers=bearer(key), timeout=10).json()
        if m["name"] == "Ben Baker"
    ]

    links = LinksSection(b, control.url)
    links.go("Links", "links")
    assert links.current == "links" and links.heading == "Links"
    assert "No links yet" in links.text(".dash-links")
    links.button("New link").click()
    assert links.focused().get_attribute("id") == "link-name"
    links.fill("link-name", "Front desk")
    links.tick("link-voice", False)  # video only
    links.tick(f"link-staff-{ben}", True)
    links.d.find_element(By.ID, "link-open-set").click()  # Mon-Fri 09:00-17:00 to start with
    assert len(links.d.find_elements(By.CSS_SELECTOR, ".dash-window")) == 5
    links.choose("link-tz", "Europe/Berlin")
    links.fill("link-timeout", "2")
    check_page(b, "dashboard-links-new")
    # nothing offered: said beside the choice, before asking the server
    links.tick("link-video", False)
    links.button("Create link").click()
    links.until(lambda: links.errors(), 10, "the media error")
    assert links.errors() == ["choose video, voice or both"]
    assert links.d.find_element(By.ID, "link-media").get_attribute("aria-invalid") == "true"
    assert links.focused().get_attribute("id") == "link-video"
    links.tick("link-video", True)
    # bad input: the server's reason in the catalogue's words beside the field, focus on it,
    # nothing stored
    links.button("Create link").click()
    links.until(lambda: links.errors(), 10, "the ring timeout error")
    timeout = links.d.find_element(By.ID, "link-timeout")
    assert timeout.get_attribute("aria-invalid") == "true"
    assert "link-timeout-error" in str(timeout.get_attribute("aria-describedby"))
    assert links.errors() == ["must be at least 5"]
    assert links.focused().get_attribute("id") == "link-timeout"
    screenshot(b.driver, "dashboard-links-error")
    assert httpx.get(f"{control.url}/v1/links", headers=bearer(key), timeout=10).json() == []
    links.fill("link-timeout", "40")
    links.button("Create link").click()
    card = links.card("Front desk")
    (link,) = httpx.get(f"{control.url}/v1/links", headers=bearer(key), timeout=10).json()
    assert link["media"] == ["video"] and link["ring_staff"] == [ben]
    assert link["ring_timeout"] == 40 and link["relay_only"] is True
    assert link["hours"]["timezone"] == "Europe/Berlin"
    assert link["hours"]["windows"] == [[d, 540, 1020] for d in range(5)]
    facts = links.facts("Front desk")
    assert facts["Calls offered"] == "Video" and facts["Rings"] == "Ben Baker"
    assert facts["Opening hours"].startswith("Monday 09:00–17:00, Tuesday 09:00–17:00")
    assert facts["Opening hours"].endswith("(Europe/Berlin)")

    # the snippet, copied to the real clipboard
    public = link["public_id"]
    snippet = (
        f'<script async src="{control.url}/embed.js"></script>'
        f'<clickacall-button link="{public}"></clickacall-button>'
    )
    assert links.copied_value(f"link-snippet-{link['id']}") == snippet
    b.permit(control.url, "granted", "clipboard-read", "clipboard-write")
    card.find_element(By.CSS_SELECTOR, ".dash-link-use button.primary").click()
    pasted = b.driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('! ' + e))"
    )
    assert pasted == snippet
    assert links.copied_value(f"link-share-{link['id']}") == f"{control.url}/c/{public}"

    # the live preview: the real button from /embed.js, asking our server for the link's state
    state = links.until(
        lambda: b.driver.execute_script(
            "const el = document.querySelector(`.dash-preview clickacall-button`);"
            "const s = el && el.getAttribute('data-state');"
            "return s && s !== 'loading' && el.shadowRoot ? s : null;"
        ),
        15,
        "the preview button",
    )
    assert state in ("open", "closed", "unavailable")  # on the clock and Ben's console
    assert any(r.endswith("/embed.js") for r in b.requests())
    check_page(b, "dashboard-links")

    # edit the opening hours: one window, Saturday 10:00-14:00 in New York
    links.button("Edit Front desk").click()
    assert links.focused().get_attribute("id") == "link-name"
    while len(removes := links.d.find_elements(By.CSS_SELECTOR, ".dash-window button")) > 1:
        removes[-1].click()
    assert links.focused().text == "Add hours"  # focus does not get lost with the row
    (row,) = links.d.find_elements(By.CSS_SELECTOR, ".dash-window")
    day = row.find_element(By.CSS_SELECTOR, "select").get_attribute("id")
    links.choose(str(day), "5")
    links.set_time(
        str(row.find_element(By.CSS_SELECTOR, ".link-from").get_attribute("id")), "10:00"
    )
    links.set_time(str(row.find_element(By.CSS_SELECTOR, ".link-to").get_attribute("id")), "14:00")
    links.choose("link-tz", "America/New_York")
    check_page(b, "dashboard-links-edit")
    links.button("Save").click()
    links.until(
        lambda: (
            links.facts("Front desk")["Opening hours"] == "Saturday 10:00–14:00 (America/New_York)"
        ),
        10,
        "the new hours",
    )
    r = httpx.get(f"{control.url}/v1/links/{link['id']}", headers=bearer(key), timeout=10)
    assert r.json()["hours"] == {"timezone": "America/New_York", "windows": [[5, 600, 840]]}
    assert r.json()["media"] == ["video"] and r.json()["ring_timeout"] == 40

    # the QR code for print: PNG and SVG downloads, the PNG's modules are the share URL's
    folder = Path(tempfile.mkdtemp(prefix="clickacall-qr-"))
    b.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
    )
    card = links.card("Front desk")
    img = card.find_element(By.CSS_SELECTOR, "img.dash-qr")
    assert links.until(lambda: b.driver.execute_script("return arguments[0].naturalWidth", img))
    card.find_element(By.LINK_TEXT, "Download PNG").click()
    png = _downloaded(folder, f"clickacall-{public}.png")
    expected = segno.make(f"{control.url}/c/{public}", error="m")
    n = len(expected.matrix)
    pixels = _png_modules(png)
    got = [[pixels[(4 + y) * 10 + 5][(4 + x) * 10 + 5] for x in range(n)] for y in range(n)]
    assert got == [[bool(v) for v in row] for row in expected.matrix]
    card.find_element(By.LINK_TEXT, "Download SVG").click()
    svg = _downloaded(folder, f"clickacall-{public}.svg")
    assert b"<svg" in svg and b'xmlns="http://www.w3.org/2000/svg"' in svg
    check_page(b, "dashboard-links-edited")
    assert dash.current == "links"


@pytest.mark.timeout(180)
def test_a_visitor_rings_through_the_share_url_of_a_link_made_in_the_dashboard(
    control: WebControl, node: RelayProcess, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Birch Opticians", "olivia@birch.test")
    b = open_browser()
    become_admin(b, control, url, "olivia's long password")
    staff = StaffSection(b, control.url)
    staff.go("Staff", "staff")
    invitation = staff.invite("Cara Cole", "cara@birch.test")
    cara = open_browser()
    InvitePage(cara, control.url).open(invitation).set_password("cara's long password")
    console = ConsolePage(cara, control.url)
    console.until(lambda: cara.driver.current_url.endswith("/console"), 15, "Cara's console")
    console.wait_ready()
    console.arm()

    def on_console() -> bool:  # the preview asks for the link's state once when drawn
        team = httpx.get(f"{control.url}/v1/staff", headers=bearer(key), timeout=10).json()
        return any(m["name"] == "Cara Cole" and m["seen_at"] for m in team)

    console.until(on_console, 15, "Cara's console seen")

    # a link made in the dashboard, always open, ringing Cara: the preview says it is open
    links = LinksSection(b, control.url)
    links.go("Links", "links")
    links.button("New link").click()
    links.fill("link-name", "Appointments")
    (box,) = links.d.find_elements(By.CSS_SELECTOR, "#link-staff input[type=checkbox]")
    assert box.is_selected()  # the only one who answers calls is ticked already
    links.button("Create link").click()
    card = links.card("Appointments")
    links.until(
        lambda: (
            b.driver.execute_script(
                "return document.querySelector('.dash-preview clickacall-button')"
                ".getAttribute('data-state')"
            )
            == "open"
        ),
        20,
        "the preview open",
    )
    share = links.copied_value(
        str(card.find_element(By.CSS_SELECTOR, ".dash-link-use input").get_attribute("id"))
    )
    public = share.rsplit("/", 1)[1]

    # a visitor opens the share URL and rings; Cara's console rings
    visitor = CallPage(open_browser(), control.url).open(public).wait_ready()
    visitor.video_call()
    visitor.wait_state("ringing")
    ring = console.wait_ringing()
    assert "Appointments" in ring[0].text
    console.decline()
    console.wait_quiet()
    visitor.wait_state("callback")

    # the admin on a phone, in German: the same link, its labels in German
    phone = open_browser(phone=True)
    SignInPage(phone, control.url).open("/console?lang=de").sign_in(
        "olivia@birch.test", "olivia's long password"
    )
    german = LinksSection(phone, control.url)
    german.until(lambda: phone.driver.current_url.endswith("/dashboard"), 15, "the dashboard")
    german.d.get(control.url + "/dashboard/links?lang=de")
    german.wait_section("links")
    assert german.facts("Appointments")["Angebotene Anrufe"] == "Video, Sprache"
    assert german.heading == "Links"
    check_page(phone, "dashboard-links-phone-de")
    phone.driver.execute_script("document.querySelector('.dash-preview').scrollIntoView()")
    german.until(
        lambda: (
            phone.driver.execute_script(
                "return document.querySelector('.dash-preview clickacall-button')"
                ".getAttribute('data-state')"
            )
            == "open"
        ),
        15,
        "the preview on the phone",
    )
    screenshot(phone.driver, "dashboard-links-phone-de-snippet")

    # bad input in German: the catalogue's German text beside the field, not the server's
    # English (err.<reason> with the error's params)
    german.button("Neuer Link").click()
    german.fill("link-name", "Rezeption")
    german.fill("link-timeout", "2")
    german.button("Link erstellen").click()
    german.until(lambda: german.errors(), 10, "the ring timeout error in German")
    assert german.errors() == ["muss mindestens 5 sein"]
    assert german.focused().get_attribute("id") == "link-timeout"
    check_page(phone, "dashboard-links-phone-de-error")
    screenshot(phone.driver, "dashboard-links-phone-de-error")
    r = httpx.get(f"{control.url}/v1/links", headers=bearer(key), timeout=10)
    assert [k["name"] for k in r.json()] == ["Appointments"]  # nothing stored
