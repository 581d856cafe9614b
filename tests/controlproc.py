"""Start a real control plane (``python -m control``) as a subprocess on loopback for tests.

``ControlProcess`` picks a free port, configures an operator key, a token signing key, a relay
secret and a node secret, waits for ``/healthz`` and keeps the process's output for failure
reports. ``bootstrap()`` creates a tenant, a staff member with a console token and a call link
through the real API, which is what most integration tests need first.

``stop(keep=True)`` stops the process but keeps its directory (the SQLite database and the
log); a later ``start()`` runs a new process on the same database and port, as an outage
and a restart of the control plane would.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from control.keys import new_operator_key
from control.settings import ClickLimits

ROOT = Path(__file__).resolve().parent.parent
# Integration tests make many calls from one address (a browser, a retry loop): they run
# with click limits far above the defaults; tests/test_abuse_click.py tests the limits.
CLICK_ARGS = [
    "--click-visitor-burst=1000",
    "--click-link-burst=1000",
    "--click-ringing-per-link=1000",
    "--click-ringing-per-tenant=1000",
]
TEST_CLICK_LIMITS = ClickLimits(
    visitor_burst=1000, link_burst=1000, ringing_per_link=1000, ringing_per_tenant=1000
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Tenant:
    id: str
    key: str  # the tenant API key
    staff_id: str
    staff_token: str  # a console token for that staff member
    link: dict[str, Any]

    @property
    def th(self) -> dict[str, str]:
        return bearer(self.key)

    @property
    def sh(self) -> dict[str, str]:
        return bearer(self.staff_token)


@dataclass
class ControlProcess:
    db_url: str | None = None  # default: a SQLite file in a private temporary directory
    extra_args: list[str] = field(default_factory=list)
    relay_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    node_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    token_key: str = field(default_factory=lambda: secrets.token_hex(24))
    port: int = 0
    metrics_port: int = 0  # the control plane's separate metrics listener (--metrics)
    proc: subprocess.Popen[bytes] | None = None
    _dir: tempfile.TemporaryDirectory[str] | None = None

    def __post_init__(self) -> None:
        self.op_key, op = new_operator_key()
        self._op_hash = f"{op.id}:{op.key_hash.hex()}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def oh(self) -> dict[str, str]:
        return bearer(self.op_key)

    @property
    def db_path(self) -> Path | None:
        """The SQLite database file, when the control plane uses one."""
        if self.db_url is None or not self.db_url.startswith("sqlite:///"):
            return None
        return Path(self.db_url.removeprefix("sqlite://"))

    def start(self, timeout: float = 30.0) -> ControlProcess:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="clickacall-control-")
        if self.db_url is None:
            self.db_url = f"sqlite:///{self._dir.name}/control.db"
        self.port = self.port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self._log = open(Path(self._dir.name) / "control.log", "ab")  # noqa: SIM115
        env = {
            **os.environ,
            "CLICKACALL_TOKEN_KEY": self.token_key,
            "CLICKACALL_AUTH_SECRET": self.relay_secret,
            "CLICKACALL_NODE_SECRET": self.node_secret,
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "control",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--db",
                self.db_url,
                "--operator-key-hash",
                self._op_hash,
                "--metrics",
                f"127.0.0.1:{self.metrics_port}",
                *CLICK_ARGS,
                *self.extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.output()
                self.stop()
                raise RuntimeError(f"control plane did not start (rc={self.proc.poll()}):\n{out}")
            time.sleep(0.1)

    def output(self) -> str:
        if self._dir is None:
            return ""
        try:
            return (Path(self._dir.name) / "control.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, *, keep: bool = False) -> None:
        """Stop the process; with ``keep``, leave its database and log for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._dir is not None:
            self._log.close()
            if not keep:
                self._dir.cleanup()
                self._dir = None

    def __enter__(self) -> ControlProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- API shortcuts -----------------------------------------------------------------------

    def bootstrap(self, name: str = "Acme", **link: Any) -> Tenant:
        """A tenant (EU only), one staff member with a console token and a link ringing them."""
        with httpx.Client(base_url=self.url, timeout=10) as c:
            r = c.post("/v1/tenants", json={"name": name}, headers=self.oh)
            r.raise_for_status()
            body = r.json()
            tid, key = body["tenant"]["id"], body["api_key"]["key"]
            r = c.post("/v1/staff", json={"name": "Ann"}, headers=bearer(key))
            r.raise_for_status()
            staff = r.json()["id"]
            r = c.post(f"/v1/staff/{staff}/token", headers=bearer(key))
            r.raise_for_status()
            console = r.json()["token"]
            r = c.post(
                "/v1/links",
                json={"name": "Sales", "ring_staff": [staff], **link},
                headers=bearer(key),
            )
            r.raise_for_status()
            return Tenant(tid, key, staff, console, r.json())
