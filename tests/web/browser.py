"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Debian's
``chromedriver`` through Selenium 4, with fake camera, microphone and screen, a fresh profile
per browser, and Chrome's performance log on so tests can read every network request and
WebSocket frame (:meth:`Browser.requests`, :meth:`Browser.ws_frames`).

Also here: the axe-core check (:func:`axe_violations`, axe from ``node_modules``) and
:func:`screenshot` (PNGs under ``build/screenshots/``, the README's source).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.netns import NetHost

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "build" / "screenshots"
DESKTOP = (1280, 900)
PHONE = (375, 812)

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    # getDisplayMedia picks the (fake) screen without a picker
    "--auto-select-desktop-capture-source=Entire screen",
    "--enable-features=WebRtcAllowInputVolumeAdjustment",
)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def only_from(browser: Browser, *origins: str) -> list[str]:
    """Network requests (http, https, ws, wss) to any origin but ``origins``."""
    allowed = {o.replace("http", "ws", 1) for o in origins} | set(origins)
    return [
        u
        for u in browser.requests()
        if u.split(":", 1)[0] in ("http", "https", "ws", "wss") and origin(u) not in allowed
    ]


def block_third_party(platform: str, site: str) -> dict[str, Any]:
    """Profile preferences of a browser that refuses the ``platform`` origin's frames in
    ``site``'s pages every cookie and all storage (``sessionStorage`` and ``localStorage``
    throw a SecurityError there), as strict browsers do to third-party frames. Chromium's own
    "Block third-party cookies" (also set) still lets such frames use partitioned storage, so a
    site-data exception for the platform embedded in ``site`` does the blocking."""
    return {
        "profile.cookie_controls_mode": 1,
        "profile.block_third_party_cookies": True,
        "profile.content_settings.exceptions.cookies": {f"{platform},{site}": {"setting": 2}},
    }


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return "Debian's chromium and chromium-driver are not installed (make debs)"
    if not AXE.exists():
        return "node_modules/axe-core is not installed (make deps runs npm ci)"
    return None


@dataclass
class Browser:
    """A Chromium with its own profile; ``driver`` is the Selenium WebDriver."""

    driver: WebDriver
    profile: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    service: subprocess.Popen[bytes] | None = None  # a ChromeDriver in a network namespace

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            if self.service is not None:
                self.service.terminate()
                try:
                    self.service.wait(10)
                except subprocess.TimeoutExpired:
                    self.service.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- the performance log -------------------------------------------------------------

    def log(self) -> list[dict[str, Any]]:
        """Every DevTools event so far (the driver's log is drained, so they are kept here)."""
        for entry in self.driver.get_log("performance"):  # type: ignore[no-untyped-call]
            self.events.append(json.loads(entry["message"])["message"])
        return self.events

    def requests(self) -> list[str]:
        """The URL of every request the pages made (documents, scripts, fetches, sockets)."""
        urls = []
        for e in self.log():
            if e.get("method") == "Network.requestWillBeSent":
                urls.append(e["params"]["request"]["url"])
            elif e.get("method") == "Network.webSocketCreated":
                urls.append(e["params"]["url"])
        return urls

    def ws_frames(self) -> list[tuple[str, str]]:
        """``("sent" | "received", payload)`` of every WebSocket text frame."""
        out = []
        for e in self.log():
            method = e.get("method", "")
            if method in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
                kind = "sent" if method.endswith("Sent") else "received"
                out.append((kind, e["params"]["response"]["payloadData"]))
        return out

    def responses(self) -> Iterator[dict[str, Any]]:
        """``Network.responseReceived`` params (url, status, headers) of every response."""
        for e in self.log():
            if e.get("method") == "Network.responseReceived":
                yield e["params"]["response"]

    # --- state a page left behind -----------------------------------------------------------

    def cookies(self) -> list[dict[str, Any]]:
        """Every cookie of the browser (all origins), through DevTools."""
        got = self.driver.execute_cdp_cmd("Storage.getCookies", {})  # type: ignore[attr-defined]
        return list(got.get("cookies", []))

    def storage(self) -> dict[str, int]:
        """How many localStorage and sessionStorage entries the current document has."""
        counts: dict[str, int] = self.driver.execute_script(
            "return {local: localStorage.length, session: sessionStorage.length}"
        )
        return counts

    def permit(self, origin: str, setting: str, *names: str) -> None:
        """Set permissions (Permissions API names: ``"camera"``, ``"microphone"``) of
        ``origin`` to ``"granted"`` or ``"denied"``. Use a browser launched with
        ``prompts=False``: the fake prompt would grant everything."""
        for name in names:
            self.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
                "Browser.setPermission",
                {"permission": {"name": name}, "setting": setting, "origin": origin},
            )

    def wait(self, timeout: float = 10.0) -> WebDriverWait[WebDriver]:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1)


def launch(
    *,
    size: tuple[int, int] = DESKTOP,
    phone: bool = False,
    flags: tuple[str, ...] = (),
    prompts: bool = True,
    netns: NetHost | None = None,
    prefs: dict[str, Any] | None = None,
) -> Browser:
    """A new headless Chromium. ``phone``: a 375×812 touch viewport (mobile emulation).
    ``prompts=False``: no fake permission prompt that grants everything; prompts are denied
    and :meth:`Browser.permit` decides (camera denied, microphone granted, ...).
    ``netns``: ChromeDriver and Chromium run on that test host (tests/netns.py); the driver
    listens on the host's address, for this machine's end of the link only. Chrome DevTools
    commands need a local driver. ``prefs``: profile preferences (:func:`block_third_party`)."""
    profile = Path(tempfile.mkdtemp(prefix="clickacall-chromium-"))
    options = Options()
    options.binary_location = str(CHROMIUM)
    chosen = (
        FLAGS
        if prompts
        else (
            *(f for f in FLAGS if f != "--use-fake-ui-for-media-stream"),
            "--deny-permission-prompts",
        )
    )
    for flag in (*chosen, *flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if phone:
        width, height = PHONE
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": True}},
        )
        options.add_argument(f"--window-size={width},{height}")
    else:
        options.add_argument(f"--window-size={size[0]},{size[1]}")
    if prefs:
        options.add_experimental_option("prefs", prefs)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    options.add_experimental_option(
        "perfLoggingPrefs", {"enableNetwork": True, "enablePage": False}
    )
    service = None
    try:
        if netns is None:
            driver: WebDriver = webdriver.Chrome(
                service=Service(str(CHROMEDRIVER)), options=options
            )
        else:
            service, url = _driver_on(netns)
            driver = webdriver.Remote(command_executor=url, options=options)
    except Exception:
        if service is not None:
            service.kill()
        shutil.rmtree(profile, ignore_errors=True)
        raise
    driver.set_script_timeout(120)  # axe-core on a busy 2-core machine can take long
    return Browser(driver, profile, service=service)


def _driver_on(host: NetHost) -> tuple[subprocess.Popen[bytes], str]:
    """A ChromeDriver on test host ``host``: (its process, its URL)."""
    port = random.randint(20000, 29999)  # a new namespace has every port free
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host.name,
            str(CHROMEDRIVER),
            f"--port={port}",
            f"--allowed-ips={host.gateway}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{host.address}:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/status", timeout=1).json()["value"]["ready"]:
                return proc, url
        except (httpx.HTTPError, ValueError, KeyError):
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"ChromeDriver did not start on test host {host.name}")


def axe_violations(driver: WebDriver, include: str | None = None) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the current document (or under the
    ``include`` CSS selector), each with its id, impact, help and the failing nodes."""
    if not driver.execute_script("return !!window.axe"):
        driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        """
        const [include, done] = arguments;
        axe.run(include ? {include: [[include]]} : document, {resultTypes: ["violations"]})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(" ") + " :: " + n.failureSummary)}))))
          .catch(e => done({error: String(e)}));
        """,
        include,
    )
    if isinstance(result, dict):
        raise RuntimeError(f"axe-core failed: {result['error']}")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the viewport as ``build/screenshots/NAME.png``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def console_errors(driver: WebDriver) -> list[str]:
    """The page's console errors so far (CSP violations show up here)."""
    logs = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [e["message"] for e in logs if e.get("level") == "SEVERE"]
