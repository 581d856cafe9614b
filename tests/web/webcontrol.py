"""The real control plane in this process for the browser tests, with staff who sign in.

:class:`WebControl` runs ``create_app`` under uvicorn in a thread on a loopback port.
:meth:`WebControl.bootstrap` creates a tenant with a staff member and a link through the API
(``tests/controlproc.py``'s bootstrap), then gives the member an email and a password the way a
person gets them: an invitation from the tenant's API, accepted through the invitation form.
Tests sign in through the console's real sign-in form (``ConsolePage.open(login)``).
"""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from control.app import create_app
from control.keys import new_operator_key
from control.settings import ControlSettings
from tests.controlproc import TEST_CLICK_LIMITS, ControlProcess, Tenant, bearer, free_port


@dataclass
class Staffed(Tenant):
    """A bootstrapped tenant whose staff member can sign in."""

    email: str = ""
    password: str = ""

    @property
    def login(self) -> tuple[str, str]:
        return self.email, self.password


@dataclass
class WebControl:
    relay_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    node_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    host: str = (
        "127.0.0.1"  # or a host's address in a test network (tests/web/test_web_firewall.py)
    )
    extra: dict[str, Any] = field(default_factory=dict)  # more settings (ControlSettings fields)

    def __post_init__(self) -> None:
        self.op_key, op = new_operator_key()
        self._dir = tempfile.TemporaryDirectory(prefix="clickacall-web-")
        settings = ControlSettings(
            db_url=f"sqlite:///{self.db_path}",
            token_keys=[secrets.token_bytes(24)],
            operator_keys=[op],
            relay_secrets=[self.relay_secret.encode()],
            node_secrets=[self.node_secret],
            heartbeat_timeout=3.0,
            click_limits=TEST_CLICK_LIMITS,  # one browser calls many times in a test module
            # every browser, the relay's agent and the test itself come from 127.0.0.1
            max_connections=10_000,
            max_per_prefix=10_000,
            ws_unauth_per_prefix=1_000,
            **self.extra,
        )
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        """The control plane's SQLite database (a test may write rows as older code did)."""
        return Path(self._dir.name) / "control.db"

    @property
    def oh(self) -> dict[str, str]:
        return bearer(self.op_key)

    def start(self) -> WebControl:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the in-process control plane did not start")

    def bootstrap(self, name: str = "Acme Bikes", **link: Any) -> Staffed:
        t = ControlProcess.bootstrap(self, name, **link)  # type: ignore[arg-type]
        email, password = self.invite(t, t.staff_id)
        return Staffed(**vars(t), email=email, password=password)

    def invite(self, t: Tenant, staff_id: str) -> tuple[str, str]:
        """The member's email and password, set through an invitation as a person would."""
        email, password = f"staff-{staff_id}@example.test", secrets.token_urlsafe(12)
        with httpx.Client(base_url=self.url, timeout=10) as c:
            r = c.post(f"/v1/staff/{staff_id}/invitation", json={"email": email}, headers=t.th)
            r.raise_for_status()
            r = c.post(
                r.json()["url"],
                data={"password": password, "password2": password},
                headers={"Origin": self.url},
            )
            assert r.status_code == 303, r.text
        return email, password

    def add_member(self, t: Tenant, name: str) -> tuple[str, tuple[str, str]]:
        """Another staff member the tenant's link rings too: (staff id, login)."""
        with httpx.Client(base_url=self.url, timeout=10) as c:
            r = c.post("/v1/staff", json={"name": name}, headers=t.th)
            r.raise_for_status()
            staff_id = r.json()["id"]
            rung = [*t.link["ring_staff"], staff_id]
            r = c.patch(f"/v1/links/{t.link['id']}", json={"ring_staff": rung}, headers=t.th)
            r.raise_for_status()
            t.link["ring_staff"] = rung
        return staff_id, self.invite(t, staff_id)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self._dir.cleanup()
