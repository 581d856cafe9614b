"""The pages in real Chromium: sign-in, the call page (desktop and phone), a 404 link, the
embed button on another origin. Screenshots go to build/screenshots/."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from websockets.sync.client import connect

from tests.controlproc import ControlProcess, Tenant
from tests.web.browser import (
    Browser,
    axe_violations,
    console_errors,
    only_from,
    origin,
    screenshot,
)
from tests.web.pages import CallPage, EmbedHost, HostSite, SignInPage, host_page, snippet

SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(self), microphone=(self), display-capture=(self)",
}


def test_signin_page(control: ControlProcess, browser: Browser) -> None:
    r = httpx.get(f"{control.url}/console")
    assert r.status_code == 200
    for name, value in SECURITY.items():
        assert r.headers[name] == value
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    assert "set-cookie" not in r.headers

    page = SignInPage(browser, control.url).open()
    email = page.form.find_element(By.CSS_SELECTOR, "input[type=email]")
    password = page.form.find_element(By.CSS_SELECTOR, "input[type=password]")
    for field in (email, password):  # each input has its <label>
        assert page.d.find_element(
            By.CSS_SELECTOR, f"label[for='{field.get_attribute('id')}']"
        ).text
    assert page.has_button("Sign in")
    assert axe_violations(page.d) == []
    assert browser.cookies() == []
    assert console_errors(page.d) == []
    screenshot(page.d, "signin")


def test_signin_page_in_german(control: ControlProcess, browser: Browser) -> None:
    page = SignInPage(browser, control.url).open("/console?lang=de")
    assert page.d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "de"
    assert page.has_button("Anmelden")


def test_unknown_link_is_a_404_page(control: ControlProcess, browser: Browser) -> None:
    r = httpx.get(f"{control.url}/c/no-such-link")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = CallPage(browser, control.url).open("no-such-link")
    assert page.text("h1") == "This call link does not exist"
    assert axe_violations(page.d) == []


def _check_call_page(page: CallPage, tenant: Tenant, control: ControlProcess, name: str) -> None:
    public_id = tenant.link["public_id"]
    page.open(public_id).wait_ready()
    assert page.heading == "Call Acme Bikes"
    assert page.meta("og:title") == "Call Acme Bikes"
    assert page.meta("og:description") == "Sales"
    assert page.meta("og:type") == "website"
    assert page.meta("og:url") == f"{control.url}/c/{public_id}"
    width, height = page.preview_size()
    assert width > 0 and height > 0, "the fake camera shows in the preview"
    assert page.has_button("Video call") and page.has_button("Voice call")
    page.until(lambda: page.mic_level() > 0, 10, "the microphone level meter moves")
    # the device pickers, each with its label, list the fake camera and microphone(s)
    for picker in ("cc-camera", "cc-mic"):
        assert page.d.find_element(By.CSS_SELECTOR, f"label[for='{picker}']").text
        page.until(
            lambda p=picker: page.d.find_elements(By.CSS_SELECTOR, f"#{p} option"), 10, picker
        )
    assert axe_violations(page.d) == []
    assert page.b.cookies() == []
    assert page.b.storage() == {"local": 0, "session": 0}
    assert only_from(page.b, control.url) == []
    assert [e for e in console_errors(page.d) if "Content Security Policy" in e] == []
    screenshot(page.d, name)


def test_call_page_desktop(control: ControlProcess, tenant: Tenant, browser: Browser) -> None:
    _check_call_page(CallPage(browser, control.url), tenant, control, "precall-desktop")


def test_call_page_phone(
    control: ControlProcess, tenant: Tenant, open_browser: Callable[..., Browser]
) -> None:
    phone = open_browser(phone=True)
    page = CallPage(phone, control.url)
    _check_call_page(page, tenant, control, "precall-phone")
    # the two call buttons fit the phone's width without scrolling sideways
    assert page.d.execute_script("return document.documentElement.scrollWidth") <= 375


def test_call_page_in_german(control: ControlProcess, tenant: Tenant, browser: Browser) -> None:
    page = CallPage(browser, control.url).open(tenant.link["public_id"], lang="de").wait_ready()
    assert page.heading == "Acme Bikes anrufen"
    assert page.has_button("Videoanruf")


def test_embed_button_on_another_origin(
    control: ControlProcess, tenant: Tenant, browser: Browser
) -> None:
    with HostSite(host_page(control.url, tenant.link["public_id"])) as site:
        host = EmbedHost(browser, control.url).open(site.url).wait_button()
        assert host.label == "Video call"
        host.wait_status()
        assert axe_violations(host.d) == []
        screenshot(host.d, "widget")
        assert browser.cookies() == []
        assert browser.storage() == {"local": 0, "session": 0}
        assert only_from(browser, origin(site.url), control.url) == []

        host.click()
        call = host.call()
        call.wait_ready()
        host.leave_call()
        screenshot(host.d, "widget-overlay")
        host.close_button().click()  # asks the call page, which hangs up and says close
        host.until(lambda: not host.overlay_open(), 10, "the overlay to close")
        assert host.d.execute_script(
            "return document.activeElement === document.querySelector('clickacall-button')"
        ), "focus returns to the button"
        # the business's page still has no cookie or storage of ours
        assert browser.cookies() == []
        assert browser.storage() == {"local": 0, "session": 0}
        assert only_from(browser, origin(site.url), control.url) == []


def test_embed_attributes_and_custom_properties_and_the_sites_css_cannot_break_it(
    control: ControlProcess, tenant: Tenant, browser: Browser
) -> None:
    """Label, position and the CSS custom properties set the button; a site whose CSS hides,
    recolours and resizes every button does not reach into its Shadow DOM, and the button
    adds no style to the site's document."""
    hostile = (
        "<style>button{display:none!important;background:red!important;border-radius:0!important}"
        "*{font-size:40px!important;color:red!important}</style>"
    )
    button = snippet(control.url, tenant.link["public_id"], label="Talk to us",
                     position="bottom-left").replace(
        "<clickacall-button ",
        '<clickacall-button style="--clickacall-color:#0a7d3b;--clickacall-text:#111111;'
        '--clickacall-radius:4px" ',
    )  # fmt: skip
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Hostile shop</title>"
        f"{hostile}</head><body><main><h1>Shop</h1><button id='own'>Buy</button>{button}"
        "</main></body></html>"
    )
    with HostSite(html) as site:
        host = EmbedHost(browser, control.url).open(site.url).wait_button()
        assert host.label == "Talk to us"
        style = host.d.execute_script(
            "const s = getComputedStyle(arguments[0]), h = getComputedStyle(arguments[1]);"
            "return {bg: s.backgroundColor, fg: s.color, radius: s.borderRadius,"
            " size: s.fontSize, position: h.position, left: h.left, bottom: h.bottom};",
            host.call_button,
            host.host,
        )
        assert style == {
            "bg": "rgb(10, 125, 59)",
            "fg": "rgb(17, 17, 17)",
            "radius": "4px",
            "size": "16px",
            "position": "fixed",
            "left": "16px",
            "bottom": "16px",
        }, style
        host.wait_status()
        assert host.d.execute_script(
            "return document.adoptedStyleSheets.length === 0"
            " && document.querySelectorAll('style, link[rel=stylesheet]').length === 1"
            " && getComputedStyle(document.getElementById('own')).display === 'none'"
        ), "the button added style to the site's document"


def test_embed_overlay_closes_with_escape(
    control: ControlProcess, tenant: Tenant, open_browser: Callable[..., Browser]
) -> None:
    phone = open_browser(phone=True)
    with HostSite(
        host_page(control.url, tenant.link["public_id"], position="bottom-right")
    ) as site:
        host = EmbedHost(phone, control.url).open(site.url).wait_button()
        screenshot(host.d, "widget-phone")
        host.click()
        frame = host.wait_overlay()
        assert frame.get_attribute("allow") == (
            "camera; microphone; display-capture; autoplay; fullscreen"
        )
        assert frame.size["width"] == 375, "the overlay fills a phone's screen"
        call = host.call()
        call.wait_ready()
        host.leave_call()
        screenshot(host.d, "widget-overlay-phone")
        host.call()
        call.d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        host.leave_call()
        host.until(lambda: not host.overlay_open(), 10, "the overlay to close on Escape")


def test_camera_denied_offers_a_voice_call(
    control: ControlProcess, tenant: Tenant, open_browser: Callable[..., Browser]
) -> None:
    phone = open_browser(phone=True, prompts=False)
    phone.permit(control.url, "granted", "microphone")
    phone.permit(control.url, "denied", "camera")
    with staff_console(control, tenant):  # someone is there to take the call
        _camera_denied(phone, control, tenant)


@contextlib.contextmanager
def staff_console(control: ControlProcess, tenant: Tenant) -> Iterator[None]:
    """The tenant's staff member connected to the console socket (so the link is available)."""
    with connect(f"{control.ws_url}/v1/staff/events") as ws:
        ws.send(json.dumps({"type": "auth", "token": tenant.staff_token}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ringing"
        yield


def _camera_denied(phone: Browser, control: ControlProcess, tenant: Tenant) -> None:
    page = CallPage(phone, control.url).open(tenant.link["public_id"])
    page.wait_state("idle")
    page.until(lambda: page.problem, 10, "the camera problem")
    assert page.problem == "Your browser blocks this page from using the camera."
    help_text = page.text(".cc-help")
    assert "camera icon" in help_text and "voice call" in help_text
    assert page.button("Voice call").get_attribute("disabled") is None
    assert page.button("Video call").get_attribute("disabled") is not None
    assert axe_violations(page.d) == []
    screenshot(page.d, "camera-denied-phone")


def _strict_csp(control_url: str, frames: bool) -> dict[str, str]:
    policy = (
        f"default-src 'none'; script-src {control_url}; connect-src {control_url}; "
        "style-src 'none'; img-src 'none'"
    )
    if frames:
        policy += f"; frame-src {control_url}"
    return {"Content-Security-Policy": policy}


def test_embed_on_a_site_with_a_strict_csp(
    control: ControlProcess, tenant: Tenant, browser: Browser
) -> None:
    html = host_page(control.url, tenant.link["public_id"], color="#0a7d3b")
    with HostSite(html, _strict_csp(control.url, frames=True)) as site:
        host = EmbedHost(browser, control.url).open(site.url).wait_button()
        # the button's styles are constructed stylesheets: no 'unsafe-inline' needed
        assert host.button_colour == "rgb(10, 125, 59)"
        assert [e for e in console_errors(host.d) if "Content Security Policy" in e] == []
        host.click()
        call = host.call()
        call.wait_ready()
        host.leave_call()


def test_embed_opens_a_tab_where_framing_is_blocked(
    control: ControlProcess, tenant: Tenant, browser: Browser
) -> None:
    html = host_page(control.url, tenant.link["public_id"])
    with HostSite(html, _strict_csp(control.url, frames=False)) as site:
        host = EmbedHost(browser, control.url).open(site.url).wait_button()
        first = host.d.current_window_handle
        host.click()
        host.until(lambda: len(host.d.window_handles) == 2, 10, "a new tab")
        assert not host.overlay_open()
        tab = next(h for h in host.d.window_handles if h != first)
        host.d.switch_to.window(tab)
        page = CallPage(browser, control.url)
        page.wait_ready()
        assert host.d.current_url.startswith(f"{control.url}/c/{tenant.link['public_id']}?lang=")
        assert "embed" not in host.d.current_url


def test_embed_mode_tab(control: ControlProcess, tenant: Tenant, browser: Browser) -> None:
    with HostSite(host_page(control.url, tenant.link["public_id"], mode="tab")) as site:
        host = EmbedHost(browser, control.url).open(site.url).wait_button()
        host.click()
        host.until(lambda: len(host.d.window_handles) == 2, 10, "a new tab")
        assert not host.overlay_open()
