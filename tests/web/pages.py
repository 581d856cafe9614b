"""Page objects for the browser tests (Selenium's page-object pattern): one class per page,
knowing its selectors, so tests read as the user's story and a markup change touches one
place.

- :class:`CallPage`: the visitor's call page ``/c/{public_id}`` (also inside the widget's
  iframe: :meth:`EmbedHost.call`).
- :class:`ConsolePage`: the staff console ``/console`` once signed in.
- :class:`SignInPage`: the console's sign-in form (and :class:`InvitePage`, the set-password
  form of an invitation).
- :class:`EmbedHost`: a business's page on another origin with the embed snippet, served by
  :class:`HostSite`.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable
from typing import Any

from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from tests.web.browser import Browser


def _xq(text: str) -> str:
    """``text`` as an XPath string literal."""
    if "'" not in text:
        return f"'{text}'"
    return "concat('" + text.replace("'", "',\"'\",'") + "')"


class Page:
    """What every page object shares: waiting, finding buttons by their accessible name."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.b = browser
        self.d = browser.driver
        self.base = base_url.rstrip("/")

    def until(self, check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        def probe(_: Any) -> Any:
            try:
                return check()
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        try:
            return self.b.wait(timeout).until(probe)
        except TimeoutException:
            raise AssertionError(f"timed out waiting for {what or check}") from None

    def button(self, name: str, root: WebElement | None = None) -> WebElement:
        """The visible button whose text or aria-label is ``name``."""
        q = _xq(name)
        xpath = f".//button[normalize-space(.)={q} or @aria-label={q}]"
        for b in (root or self.d).find_elements(By.XPATH, xpath):
            if b.is_displayed():
                return b
        raise NoSuchElementException(f"no visible button named {name!r}")

    def has_button(self, name: str) -> bool:
        try:
            self.button(name)
            return True
        except NoSuchElementException:
            return False

    def text(self, css: str) -> str:
        return str(self.d.find_element(By.CSS_SELECTOR, css).text)

    @property
    def title(self) -> str:
        return str(self.d.title)

    def meta(self, key: str) -> str | None:
        """The content of ``<meta property=key>`` or ``<meta name=key>``."""
        for attr in ("property", "name"):
            found = self.d.find_elements(By.CSS_SELECTOR, f'meta[{attr}="{key}"]')
            if found:
                return str(found[0].get_attribute("content"))
        return None

    def focused(self) -> WebElement:
        return self.d.switch_to.active_element


class CallPage(Page):
    """The visitor's call page and its ``<clickacall-call>`` element."""

    def open(self, public_id: str, *, lang: str | None = None, embed: bool = False) -> CallPage:
        query = "&".join(
            p for p in (f"lang={lang}" if lang else "", "embed=1" if embed else "") if p
        )
        self.d.get(f"{self.base}/c/{public_id}" + (f"?{query}" if query else ""))
        return self

    @property
    def root(self) -> WebElement:
        return self.d.find_element(By.CSS_SELECTOR, "clickacall-call .cc")

    @property
    def state(self) -> str:
        return str(self.root.get_attribute("data-state"))

    def wait_state(self, *names: str, timeout: float = 20.0) -> str:
        self.until(lambda: self.state in names, timeout, f"call state {names}")
        return self.state

    def wait_ready(self, timeout: float = 15.0) -> CallPage:
        """The pre-call screen, with the preview playing when the link offers video."""
        self.wait_state("idle", timeout=timeout)
        self.until(
            lambda: self.d.execute_script(
                "const v = document.querySelector('.cc-preview');"
                "return v && (v.hidden || (v.readyState >= 2 && v.videoWidth > 0));"
            ),
            timeout,
            "the camera preview",
        )
        return self

    @property
    def heading(self) -> str:
        return self.text(".cc-title")

    def preview_size(self) -> tuple[int, int]:
        w, h = self.d.execute_script(
            "const v = document.querySelector('.cc-preview');"
            "return v && !v.hidden ? [v.videoWidth, v.videoHeight] : [0, 0];"
        )
        return int(w), int(h)

    def mic_level(self) -> float:
        return float(self.d.execute_script("return document.querySelector('#cc-meter').value"))

    @property
    def status_line(self) -> str:
        return self.text(".cc-status")

    @property
    def problem(self) -> str:
        els = self.d.find_elements(By.CSS_SELECTOR, ".cc-problem")
        return str(els[0].text) if els and els[0].is_displayed() else ""

    def live_text(self) -> str:
        return str(
            self.d.find_element(By.CSS_SELECTOR, ".cc [aria-live]").get_attribute("textContent")
        )

    # actions (by accessible name, English)
    def video_call(self) -> CallPage:
        self.button("Video call").click()
        return self

    def voice_call(self) -> CallPage:
        self.button("Voice call").click()
        return self

    def cancel(self) -> None:
        self.button("Cancel").click()

    def hang_up(self) -> None:
        self.button("Hang up").click()

    def toggle(self, name: str) -> bool:
        """Press Mute / Camera / Share screen; returns its aria-pressed afterwards."""
        b = self.button(name)
        before = b.get_attribute("aria-pressed")
        b.click()
        self.until(lambda: self.button(name).get_attribute("aria-pressed") != before, 10, name)
        return self.button(name).get_attribute("aria-pressed") == "true"

    def pressed(self, name: str) -> bool:
        return self.button(name).get_attribute("aria-pressed") == "true"

    @property
    def check(self) -> str:
        """The relay check shown while ringing: running, ok, partial or blocked."""
        return str(self.d.find_element(By.CSS_SELECTOR, ".cc-check").get_attribute("data-check"))

    @property
    def quality(self) -> str:
        return str(self.d.find_element(By.CSS_SELECTOR, ".cc-quality").get_attribute("data-level"))

    @property
    def timer(self) -> str:
        return self.text(".cc-timer")

    @property
    def staff_name(self) -> str:
        return self.text(".cc-with")

    def remote_video_playing(self, kind: str = "video") -> bool:
        """Whether the other side's camera (``video``) or screen (``screen``) shows frames."""
        css = ".cc-remote-screen" if kind == "screen" else ".cc-remote-video"
        return bool(
            self.d.execute_script(
                f"const v = document.querySelector('{css}');"
                "return !!v && !v.hidden && v.readyState >= 2 && v.videoWidth > 0;"
            )
        )

    def frames(self, kind: str = "video") -> int:
        """How many frames the other side's camera (or screen) element has decoded so far."""
        css = ".cc-remote-screen" if kind == "screen" else ".cc-remote-video"
        return int(
            self.d.execute_script(
                f"const v = document.querySelector('{css}');"
                "return v ? v.getVideoPlaybackQuality().totalVideoFrames : 0;"
            )
        )

    def video_flowing(self, kind: str = "video", within: float = 1.5) -> bool:
        """Whether new frames of the other side's video arrive (not a frozen last frame)."""
        before = self.frames(kind)
        time.sleep(within)
        return self.frames(kind) > before

    def banners(self) -> list[str]:
        """The visible reconnecting banners' texts."""
        return [
            str(b.text)
            for b in self.d.find_elements(By.CSS_SELECTOR, ".cc-banner")
            if b.is_displayed()
        ]

    @property
    def call_ref(self) -> str:
        return self.text(".cc-ref")

    @property
    def end_text(self) -> str:
        return self.text("[data-screen='ended'] p")

    def request_callback(self, name: str, contact: str) -> None:
        self.wait_state("callback")
        self.d.find_element(By.ID, "cc-cb-name").send_keys(name)
        self.d.find_element(By.ID, "cc-cb-contact").send_keys(contact)
        self.button("Ask for a call back").click()

    def close(self) -> None:
        self.button("Close").click()


class SignInPage(Page):
    """The console's sign-in form (a plain HTML form)."""

    def open(self, path: str = "/console") -> SignInPage:
        self.d.get(self.base + path)
        return self

    @property
    def form(self) -> WebElement:
        return self.d.find_element(By.CSS_SELECTOR, "form[action='/console/signin']")

    def sign_in(self, email: str, password: str) -> None:
        self.form.find_element(By.CSS_SELECTOR, "input[type=email]").send_keys(email)
        field = self.form.find_element(By.CSS_SELECTOR, "input[type=password]")
        field.send_keys(password)
        field.send_keys(Keys.ENTER)

    @property
    def error(self) -> str:
        els = self.d.find_elements(By.CSS_SELECTOR, ".error")
        return str(els[0].text) if els else ""


class InvitePage(Page):
    """The set-password form of an invitation link."""

    def open(self, url: str) -> InvitePage:
        self.d.get(url)
        return self

    def set_password(self, password: str, again: str | None = None) -> None:
        self.d.find_element(By.ID, "password").send_keys(password)
        field = self.d.find_element(By.ID, "password2")
        field.send_keys(password if again is None else again)
        field.send_keys(Keys.ENTER)

    @property
    def error(self) -> str:
        els = self.d.find_elements(By.CSS_SELECTOR, ".error")
        return str(els[0].text) if els else ""


class ConsolePage(Page):
    """The staff console's ``<clickacall-console>`` once signed in."""

    def open(self, login: tuple[str, str] | None = None) -> ConsolePage:
        """The console; signed in first through the real sign-in form when ``login`` is given."""
        self.d.get(self.base + "/console")
        if login is not None and self.d.find_elements(
            By.CSS_SELECTOR, "form[action='/console/signin']"
        ):
            SignInPage(self.b, self.base).sign_in(*login)
            self.until(
                lambda: bool(self.d.find_elements(By.CSS_SELECTOR, "clickacall-console")),
                20,
                "the console after signing in",
            )
        return self

    @property
    def root(self) -> WebElement:
        return self.d.find_element(By.CSS_SELECTOR, "clickacall-console .cs")

    @property
    def state(self) -> str:
        """``loading``, ``ready`` (listening), ``in-call``, ``offline`` or ``signed-out``."""
        return str(self.root.get_attribute("data-state"))

    def wait_state(self, *names: str, timeout: float = 20.0) -> str:
        self.until(lambda: self.state in names, timeout, f"console state {names}")
        return self.state

    def wait_ready(self, timeout: float = 20.0) -> ConsolePage:
        self.wait_state("ready", timeout=timeout)
        return self

    def arm(self) -> None:
        """The first click that unlocks sound (the browser's autoplay policy)."""
        if self.has_button("Turn on call alerts"):
            self.button("Turn on call alerts").click()

    @property
    def available(self) -> bool:
        return self.button("Available").get_attribute("aria-pressed") == "true"

    def set_available(self, on: bool) -> None:
        if self.available != on:
            self.button("Available").click()
            self.until(lambda: self.available == on, 10, "presence")

    def ringing(self) -> list[WebElement]:
        return list(self.d.find_elements(By.CSS_SELECTOR, ".cs-ringing li[data-call]"))

    def wait_ringing(self, count: int = 1, timeout: float = 20.0) -> list[WebElement]:
        self.until(lambda: len(self.ringing()) >= count, timeout, f"{count} ringing call(s)")
        return self.ringing()

    def wait_quiet(self, timeout: float = 20.0) -> None:
        self.until(lambda: not self.ringing(), timeout, "no ringing call")

    def answer(self, index: int = 0) -> None:
        self.button("Answer", self.wait_ringing(index + 1)[index]).click()

    def decline(self, index: int = 0) -> None:
        self.button("Decline", self.wait_ringing(index + 1)[index]).click()

    @property
    def page_title(self) -> str:
        return str(self.d.title)

    def ringer_title(self) -> bool:
        """Whether the page title alternates to "Ringing: ..." (checked over a few seconds)."""
        try:
            self.until(lambda: self.d.title.startswith("Ringing"), 8, "the ringing title")
            return True
        except AssertionError:
            return False

    def callbacks(self) -> list[WebElement]:
        return list(self.d.find_elements(By.CSS_SELECTOR, ".cs-callbacks li[data-call]"))

    def live_text(self) -> str:
        """What the console last announced (its polite live region)."""
        return str(
            self.d.find_element(By.CSS_SELECTOR, ".cs [aria-live]").get_attribute("textContent")
        )

    def mark_done(self, index: int = 0) -> None:
        self.button("Mark done", self.callbacks()[index]).click()

    @property
    def call_state(self) -> str:
        """The answered call's state: ``connecting``, ``in-call``, ``reconnecting`` ("" if
        none)."""
        return str(self.root.get_attribute("data-call") or "")

    @property
    def quality(self) -> str:
        """The call's quality level: good, fair, poor or unknown."""
        return str(self.d.find_element(By.CSS_SELECTOR, ".cs-quality").get_attribute("data-level"))

    def in_call(self, timeout: float = 20.0) -> ConsolePage:
        self.wait_state("in-call", timeout=timeout)
        return self

    def remote_video_playing(self, kind: str = "video") -> bool:
        css = ".cs-remote-screen" if kind == "screen" else ".cs-remote-video"
        return bool(
            self.d.execute_script(
                f"const v = document.querySelector('{css}');"
                "return !!v && !v.hidden && v.readyState >= 2 && v.videoWidth > 0;"
            )
        )

    def frames(self, kind: str = "video") -> int:
        """How many frames the other side's camera (or screen) element has decoded so far."""
        css = ".cs-remote-screen" if kind == "screen" else ".cs-remote-video"
        return int(
            self.d.execute_script(
                f"const v = document.querySelector('{css}');"
                "return v ? v.getVideoPlaybackQuality().totalVideoFrames : 0;"
            )
        )

    def video_flowing(self, kind: str = "video", within: float = 1.5) -> bool:
        """Whether new frames of the other side's video arrive (not a frozen last frame)."""
        before = self.frames(kind)
        time.sleep(within)
        return self.frames(kind) > before

    def banners(self) -> list[str]:
        """The visible reconnecting banners' texts."""
        return [
            str(b.text)
            for b in self.d.find_elements(By.CSS_SELECTOR, ".cs-banner")
            if b.is_displayed()
        ]

    def area(self, css: str) -> float:
        """The on-screen area (CSS pixels) of the element ``css`` in the console, 0 if hidden."""
        return float(
            self.d.execute_script(
                "const e = document.querySelector(arguments[0]);"
                "if (!e || e.hidden) return 0;"
                "const r = e.getBoundingClientRect(); return r.width * r.height;",
                css,
            )
        )

    @property
    def timer(self) -> str:
        return str(self.d.find_element(By.CSS_SELECTOR, ".cs-timer").text)

    @property
    def armed(self) -> bool:
        """Whether the alerts are on (the "Turn on call alerts" box is gone)."""
        return not self.d.find_element(By.CSS_SELECTOR, ".cs-arm").is_displayed()

    @property
    def wrapping_up(self) -> bool:
        """Whether the wrap-up after a call shows (its countdown and Ready)."""
        return bool(self.d.find_element(By.CSS_SELECTOR, ".cs-wrapup").is_displayed())

    def toggle(self, name: str) -> bool:
        b = self.button(name)
        before = b.get_attribute("aria-pressed")
        b.click()
        self.until(lambda: self.button(name).get_attribute("aria-pressed") != before, 10, name)
        return self.button(name).get_attribute("aria-pressed") == "true"

    def hang_up(self) -> None:
        self.button("Hang up").click()

    def ready(self) -> None:
        """End the wrap-up now."""
        self.button("Ready").click()

    def sign_out(self) -> None:
        self.button("Sign out").click()


class HostSite:
    """A business's site on another origin (another loopback port): one page embedding the
    button with the snippet businesses paste, with the response ``headers`` given (a CSP).
    ``with HostSite(html) as site: site.url``."""

    def __init__(self, html: str, headers: dict[str, str] | None = None) -> None:
        body = html.encode()
        extra = dict(headers or {})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200 if self.path in ("/", "/index.html") else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> HostSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def snippet(control_url: str, public_id: str, **attrs: str) -> str:
    """The embed snippet a business pastes (attributes: label, color, position, lang, mode)."""
    extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return (
        f'<script async src="{control_url}/embed.js"></script>\n'
        f'<clickacall-button link="{public_id}"{extra}></clickacall-button>'
    )


def host_page(control_url: str, public_id: str, **attrs: str) -> str:
    """A small shop page with the snippet, for :class:`HostSite`."""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Demo shop</title></head><body>"
        "<main><h1>Demo shop</h1><p>Questions about an order? Talk to us.</p>"
        f"{snippet(control_url, public_id, **attrs)}</main></body></html>"
    )


class EmbedHost(Page):
    """The business's page with ``<clickacall-button>``; the button lives in a shadow root."""

    def open(self, url: str) -> EmbedHost:
        self.d.get(url)
        return self

    @property
    def host(self) -> WebElement:
        return self.d.find_element(By.CSS_SELECTOR, "clickacall-button")

    def _shadow(self) -> Any:
        return self.host.shadow_root

    @property
    def call_button(self) -> WebElement:
        return self._shadow().find_element(By.CSS_SELECTOR, "button.cc-open")

    def wait_button(self, timeout: float = 15.0) -> EmbedHost:
        self.until(lambda: self.call_button.is_displayed(), timeout, "the embed button")
        return self

    @property
    def state(self) -> str:
        """The link state the button shows: open, closed, unavailable, inactive, unknown."""
        return str(self.host.get_attribute("data-state") or "")

    def wait_status(self, timeout: float = 15.0) -> str:
        self.until(lambda: self.state not in ("", "loading"), timeout, "the button's status")
        return self.state

    @property
    def label(self) -> str:
        return str(self.call_button.text)

    @property
    def status_text(self) -> str:
        return str(self._shadow().find_element(By.CSS_SELECTOR, ".cc-status").text)

    def click(self) -> None:
        self.call_button.click()

    def overlay_open(self) -> bool:
        found = self._shadow().find_elements(By.CSS_SELECTOR, "iframe")
        return bool(found) and found[0].is_displayed()

    def wait_overlay(self, timeout: float = 10.0) -> WebElement:
        self.until(self.overlay_open, timeout, "the call overlay")
        return self._shadow().find_element(By.CSS_SELECTOR, "iframe")

    def call(self) -> CallPage:
        """Switch into the overlay's iframe; the call page object then works inside it
        (:meth:`leave_call` switches back)."""
        self.d.switch_to.frame(self.wait_overlay())
        return CallPage(self.b, self.base)

    def leave_call(self) -> None:
        self.d.switch_to.default_content()

    def close_with_escape(self) -> None:
        self.d.switch_to.active_element.send_keys(Keys.ESCAPE)

    @property
    def button_colour(self) -> str:
        """The button's computed background colour (styles applied inside the shadow root)."""
        return str(
            self.d.execute_script(
                "return getComputedStyle(arguments[0]).backgroundColor", self.call_button
            )
        )

    def close_button(self) -> WebElement:
        return self._shadow().find_element(By.CSS_SELECTOR, "button.cc-x")
