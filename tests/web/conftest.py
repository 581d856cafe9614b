"""Fixtures of the browser tests: a real control plane (``python -m control``) with a tenant
and a link, and fresh headless Chromium browsers (tests/web/browser.py) that are closed after
each test. Tests skip, saying why, only when Chromium or axe-core is not installed (``make
test`` installs both)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.controlproc import ControlProcess, Tenant
from tests.web.browser import Browser, launch, missing


@pytest.fixture(scope="module")
def control() -> Iterator[ControlProcess]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    with ControlProcess() as proc:
        yield proc


@pytest.fixture(scope="module")
def tenant(control: ControlProcess) -> Tenant:
    """A business ("Acme Bikes") with one staff member and a video-or-voice link."""
    return control.bootstrap(name="Acme Bikes", media=["video", "voice"])


@pytest.fixture
def open_browser() -> Iterator[Callable[..., Browser]]:
    """``open_browser(phone=False, size=..., flags=...)``: as many browsers as a test needs."""
    opened: list[Browser] = []

    def make(**kw: object) -> Browser:
        b = launch(**kw)  # type: ignore[arg-type]
        opened.append(b)
        return b

    yield make
    for b in opened:
        b.quit()


@pytest.fixture
def browser(open_browser: Callable[..., Browser]) -> Browser:
    return open_browser()
