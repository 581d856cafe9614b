"""A staff member's account in the browser: an invitation sets the first password (a mismatch
is refused with a message naming the field, and nothing is set), the console opens signed
in, and signing out ends the session and every console token minted under it at once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urljoin

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.controlproc import bearer
from tests.web.browser import Browser, axe_violations, missing, screenshot
from tests.web.pages import ConsolePage, InvitePage, SignInPage
from tests.web.webcontrol import WebControl

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


class EventsSocket:
    """A staff events socket (``/v1/staff/events``) held open with a console token from
    another thread; :attr:`closed` says with which code the server closed it."""

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url.replace("http", "ws", 1) + "/v1/staff/events"
        self.token = token
        self.opened = threading.Event()
        self.closed: int | None = None
        self.messages: list[dict[str, object]] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        async with connect(self.url, open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "auth", "token": self.token}))
            try:
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    self.messages.append(msg)
                    self.opened.set()
            except ConnectionClosed as e:
                self.closed = e.rcvd.code if e.rcvd else -1
            except TimeoutError:
                self.closed = 0  # never closed by the server

    def wait_closed(self, timeout: float = 15) -> int | None:
        self.thread.join(timeout)
        return self.closed


@pytest.mark.timeout(120)
def test_an_invited_member_sets_a_password_signs_in_and_signs_out(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    tenant = control.bootstrap()
    r = httpx.post(f"{control.url}/v1/staff", json={"name": "Ben"}, headers=tenant.th, timeout=10)
    r.raise_for_status()
    ben = r.json()["id"]
    email = f"ben-{ben}@example.test"
    r = httpx.post(
        f"{control.url}/v1/staff/{ben}/invitation",
        json={"email": email},
        headers=tenant.th,
        timeout=10,
    )
    r.raise_for_status()
    url = urljoin(control.url + "/", r.json()["url"])
    b = open_browser()

    # a second password that differs: a message naming the field, and nothing set
    invite = InvitePage(b, control.url).open(url)
    assert axe_violations(invite.d) == []
    screenshot(invite.d, "invitation")
    invite.set_password("first-password-1", "first-password-2")
    invite.until(lambda: invite.error, 10, "the invitation form's error")
    assert invite.error.startswith("Password again: this is not the same password"), invite.error
    again = invite.d.find_element("id", "password2")
    assert again.get_attribute("aria-invalid") == "true"
    assert again.get_attribute("aria-describedby") == "form-error"
    assert invite.d.find_element("id", "password").get_attribute("aria-invalid") is None
    assert axe_violations(invite.d) == []
    screenshot(invite.d, "invitation-mismatch")
    assert b.cookies() == [], "not signed in"
    signin = SignInPage(b, control.url).open()
    signin.sign_in(email, "first-password-1")  # the refused password was not set
    signin.until(lambda: signin.error, 10, "the sign-in error")
    assert b.cookies() == []

    # the same invitation, a valid password: signed in to the console
    password = "a-good-password-for-ben"
    invite.open(url).set_password(password)
    console = ConsolePage(b, control.url)
    console.until(lambda: console.d.current_url.endswith("/console"), 15, "the console")
    console.wait_ready()
    assert console.available is not None
    (cookie,) = b.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    token = console.d.execute_script(
        "return document.querySelector('clickacall-console').desk.token"
    )
    assert token
    assert httpx.get(f"{control.url}/v1/callbacks", headers=bearer(token), timeout=10).is_success
    events = EventsSocket(control.url, token)
    assert events.opened.wait(10), "the events socket did not open"
    screenshot(console.d, "console-signed-in")

    # sign out: the sign-in form again, and the token and its socket are dead at once
    console.sign_out()
    page = SignInPage(b, control.url)
    page.until(lambda: page.form.is_displayed(), 15, "the sign-in form after signing out")
    assert not console.d.find_elements("css selector", "clickacall-console")
    assert b.cookies() == []
    code = events.wait_closed()
    assert code is not None and code >= 4000, code
    r = httpx.get(f"{control.url}/v1/callbacks", headers=bearer(token), timeout=10)
    assert r.status_code == 401, r.text
    # the console page still shows the sign-in form (no session to resume)
    page.open()
    assert page.form.is_displayed()
    # and the password set through the invitation signs in again
    page.sign_in(email, password)
    console.until(
        lambda: bool(console.d.find_elements("css selector", "clickacall-console")), 15, "console"
    )
    console.wait_ready()
