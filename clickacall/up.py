"""``clickacall up`` (and ``make run``): a control plane and one relay node wired together on
localhost, with a demo tenant, until Ctrl-C.

It starts ``python -m control`` (embedded SQLite in the data directory) and ``python -m relay
--control ...`` (one worker, loopback peers allowed), waits until the relay has registered
with the control plane, creates a demo tenant with its first admin, a staff member and a call
link on the first run (both sign in with generated passwords, set through their invitations
like anyone's), seeds two weeks of made-up calls so the dashboard's call log and charts show
something (:mod:`clickacall.democalls`; ``--no-demo-calls`` leaves them out), serves the demo
business's website on another origin (:mod:`clickacall.demo`), and prints what to do with
them: the call page, the staff console and the dashboard with their sign-ins, the demo site,
the API key, a click with ``curl``, a TURN credential for any WebRTC client, the metrics URLs.

The data directory (``--data``, default ``./clickacall-data``) keeps the SQLite database and
``up.json``: the generated secrets and the demo's ids, so a restart finds the same tenant, and
where everything is (``control_url``, ``call_url``, ``console_url``, ``dashboard_url``,
``embed_html``, ``demo_site_url``, ``staff_email``, ``staff_password``, ``admin_email``,
``admin_password``).
It is written with mode 0600; it holds keys a real deployment would keep in a secret store.
SIGINT and SIGTERM stop both processes; if one of them dies the other is stopped too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx

from clickacall import democalls
from clickacall.demo import DemoSite, embed_html
from control.keys import hash_key, new_operator_key, parse_key
from control.models import ADMIN, Staff
from control.store import Store, open_store
from ext import _stun as stun

HOST = "127.0.0.1"
REALM = "clickacall"
NODE_ID = "local-1"
REGION = "eu"
READY_TIMEOUT = 30.0
STATE_FILE = "up.json"
STOP_TIMEOUT = 10.0
STAFF_EMAIL = "staff@demo.clickacall.test"
ADMIN_EMAIL = "admin@demo.clickacall.test"
BUSINESS = "Demo business"
MAX_DEMO_DAYS = 90
# the demo calls' second link and the members who answer it (they never sign in)
DEMO_SALES_LINK = "Sales line (demo)"
DEMO_SALES_STAFF = ("Alex (demo)", "Sam (demo)")


def pick_port(host: str = HOST) -> int:
    """A UDP port free on ``host`` right now: 3478 if possible, else one below the relay
    range (so the listen port never falls among the relayed ports)."""
    candidates: list[int] = [3478, *range(3479, 3500)]
    candidates += [secrets.randbelow(20000) + 20000 for _ in range(50)]
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free UDP port found on {host}")


def stun_ping(host: str, port: int, timeout: float) -> bool:
    """True if a STUN Binding request to (host, port) gets a response in time."""
    txid = secrets.token_bytes(12)
    request = struct.pack("!HHI", stun.BINDING, 0, stun.MAGIC_COOKIE) + txid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(request, (host, port))
            while True:
                data, _ = s.recvfrom(2048)
                if len(data) >= 20 and data[8:20] == txid:
                    return True
        except OSError:  # timeout, or ICMP port unreachable while the node starts
            return False


class UpError(Exception):
    """Something that stops ``up`` from starting; the message says what and what to do."""


@dataclass
class State:
    """What survives a restart (``up.json``)."""

    token_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    relay_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    node_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    operator_key: str = field(default_factory=lambda: new_operator_key()[0])
    tenant_id: str | None = None
    api_key: str | None = None
    staff_id: str | None = None
    link_public_id: str | None = None
    staff_email: str = STAFF_EMAIL
    staff_password: str | None = None
    admin_email: str = ADMIN_EMAIL
    admin_password: str | None = None
    demo_calls: int = 0  # made-up calls seeded when the tenant was made (0: none)
    # written on every start (the ports may change): where everything is
    control_url: str | None = None
    call_url: str | None = None
    console_url: str | None = None
    dashboard_url: str | None = None
    embed_html: str | None = None
    demo_site_url: str | None = None

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError) as e:
            raise UpError(f"{path} is unreadable ({e}); move it away to start afresh") from None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.__dict__, f, indent=2)
        tmp.replace(path)


def _free_tcp(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise UpError(f"no free TCP port on {HOST}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- TURN over TCP and TLS on loopback ---------------------------------------------------------

CERT_FILE = "relay-cert.pem"  # in the data directory: self-signed, for localhost and 127.0.0.1
KEY_FILE = "relay-key.pem"
CERT_DAYS = 30
TLS_PORT = 5349  # TURN over TLS's own port (a real node also listens on 443)


def make_certificate(data: Path) -> tuple[Path, Path] | None:
    """A self-signed P-256 certificate for ``localhost`` and ``127.0.0.1`` in ``data``, made
    with the ``openssl`` command line (kept while it has more than a day to live); None, with
    a warning, where ``openssl`` is missing. Trusting it for a test browser: README.md."""
    cert, key = data / CERT_FILE, data / KEY_FILE
    openssl = shutil.which("openssl")
    if openssl is None:
        print("clickacall up: no openssl: TURN over TCP but not TLS", file=sys.stderr)
        return None
    if cert.exists() and key.exists():
        check = [openssl, "x509", "-checkend", "86400", "-noout", "-in", str(cert)]
        if subprocess.run(check, capture_output=True, check=False).returncode == 0:
            return cert, key
    made = subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(CERT_DAYS),
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise UpError(f"openssl could not make a certificate: {made.stderr.strip()[-300:]}")
    key.chmod(0o600)
    return cert, key


def stream_args(data: Path, turn_port: int) -> list[str]:
    """The relay's TCP and TLS listeners on free loopback ports (TCP on the UDP port's number
    when it is free, TLS on 5349 when it is)."""
    args = ["--listen-tcp", f"{HOST}:{_free_tcp(turn_port)}"]
    made = make_certificate(data)
    if made is not None:
        cert, key = made
        args += ["--listen-tls", f"{HOST}:{_free_tcp(TLS_PORT)}"]
        args += ["--tls-cert", str(cert.resolve()), "--tls-key", str(key.resolve())]
    return args


class Up:
    def __init__(self, data: Path, http_port: int, metrics_port: int, demo_days: int = 0) -> None:
        self.data = data
        self.demo_days = demo_days  # of made-up calls for a new tenant (0: none)
        self.state_path = data / STATE_FILE
        self.state = State.load(self.state_path)
        self.http_port = _free_tcp(http_port)
        self.metrics_port = _free_tcp(metrics_port)
        self.control_metrics_port = _free_tcp(metrics_port + 1 if metrics_port else 0)
        self.turn_port = pick_port(HOST)
        self.url = f"http://{HOST}:{self.http_port}"
        self.children: list[subprocess.Popen[bytes]] = []
        self.site: DemoSite | None = None

    # --- processes -------------------------------------------------------------------------

    @property
    def db_url(self) -> str:
        return f"sqlite:///{(self.data / 'clickacall.db').resolve()}"

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # own process groups: a terminal's Ctrl-C reaches only us, and we pass it on once
        child = subprocess.Popen(
            [sys.executable, *argv], env={**os.environ, **env}, process_group=0
        )
        self.children.append(child)
        return child

    def start(self) -> None:
        key = self.state.operator_key
        op_hash = f"{parse_key(key).key_id}:{hash_key(key).hex()}"
        secrets_env = {
            "CLICKACALL_TOKEN_KEY": self.state.token_key,
            "CLICKACALL_AUTH_SECRET": self.state.relay_secret,
            "CLICKACALL_NODE_SECRET": self.state.node_secret,
        }
        control = self._spawn(
            [
                "-m",
                "control",
                "--listen",
                f"{HOST}:{self.http_port}",
                "--db",
                self.db_url,
                "--operator-key-hash",
                op_hash,
                "--metrics",
                f"{HOST}:{self.control_metrics_port}",
            ],
            secrets_env,
        )
        self._wait(control, "the control plane", lambda: self._get("/readyz").status_code == 200)
        relay = self._spawn(
            [
                "-m",
                "relay",
                "--listen",
                f"{HOST}:{self.turn_port}",
                "--relay-ip",
                HOST,
                "--workers",
                "1",
                "--realm",
                REALM,
                "--allow-peer",
                "127.0.0.0/8",
                "--drain-timeout",
                "2",
                "--metrics",
                f"{HOST}:{self.metrics_port}",
                "--control",
                self.url,
                "--node-id",
                NODE_ID,
                "--region",
                REGION,
                "--heartbeat-interval",
                "2",
                "--spool",
                str((self.data / "spool").resolve()),
                *stream_args(self.data, self.turn_port),
            ],
            secrets_env,
        )
        self._wait(relay, "the relay node", lambda: stun_ping(HOST, self.turn_port, 0.25))
        self._wait(relay, "the relay node's registration", self._registered)

    def _wait(self, child: subprocess.Popen[bytes], what: str, ready: Any) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise UpError(f"{what} exited with status {child.returncode} (see its log above)")
            with contextlib.suppress(httpx.TransportError):
                if ready():
                    return
            time.sleep(0.2)
        raise UpError(f"{what} was not ready after {READY_TIMEOUT:.0f} s")

    def _registered(self) -> bool:
        r = self._get("/v1/nodes", _bearer(self.state.operator_key))
        return any(n["id"] == NODE_ID and n["healthy"] for n in r.json())

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.site is not None:
            self.site.stop()
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in reversed(self.children):
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    # --- the demo tenant -------------------------------------------------------------------

    def _get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=5)

    def _post(self, path: str, key: str, body: Any = None) -> dict[str, Any]:
        r = httpx.post(f"{self.url}{path}", json=body, headers=_bearer(key), timeout=5)
        if r.status_code >= 400:
            raise UpError(f"POST {path} answered {r.status_code}: {r.text}")
        out: dict[str, Any] = r.json()
        return out

    def demo(self) -> dict[str, Any]:
        s = self.state
        known = s.api_key is not None and s.tenant_id is not None
        if known:
            r = self._get(f"/v1/tenants/{s.tenant_id}", _bearer(s.operator_key))
            known = r.status_code == 200
        if not known:
            body = {"name": BUSINESS, "admin_email": s.admin_email, "admin_name": "Demo admin"}
            made = self._post("/v1/tenants", s.operator_key, body)
            s.tenant_id, s.api_key = made["tenant"]["id"], made["api_key"]["key"]
            s.admin_password = None
            s.demo_calls = 0
            staff = self._post("/v1/staff", s.api_key, {"name": "Demo staff"})
            s.staff_id = staff["id"]
            link = self._post(
                "/v1/links", s.api_key, {"name": "Demo call button", "ring_staff": [s.staff_id]}
            )
            s.link_public_id = link["public_id"]
            s.save(self.state_path)
            self._accept(made["admin"]["invitation_url"], "admin")
            if self.demo_days:
                self._seed_demo_calls()
        assert s.api_key is not None and s.link_public_id is not None
        if s.staff_password is None:
            self._set_staff_password()
        if s.admin_password is None:  # a tenant made by an older ``up``, without an admin
            self._add_admin()
        s.control_url = self.url
        s.call_url = f"{self.url}/c/{s.link_public_id}"
        s.console_url = f"{self.url}/console"
        s.dashboard_url = f"{self.url}/dashboard"
        s.embed_html = embed_html(self.url, s.link_public_id)
        self.site = DemoSite(HOST, 0, self.url, s.link_public_id, BUSINESS).start()
        s.demo_site_url = self.site.url
        s.save(self.state_path)
        console = self._post(f"/v1/staff/{s.staff_id}/token", s.api_key, {"ttl": 4 * 3600})
        creds = self._post("/v1/credentials", s.api_key, {"ttl": 24 * 3600})
        return {"console": console["token"], "ice": creds["iceServers"]}

    def _set_staff_password(self) -> None:
        """The demo staff member's sign-in: an invitation, accepted with a generated password
        through the same form a person would use."""
        s = self.state
        assert s.api_key is not None
        invite = self._post(
            f"/v1/staff/{s.staff_id}/invitation", s.api_key, {"email": s.staff_email}
        )
        self._accept(invite["url"], "staff")

    def _accept(self, url: str, who: str) -> None:
        """Accept an invitation with a generated password (through the same form a person
        uses) and keep it as ``{who}_password``."""
        password = secrets.token_urlsafe(18)  # 144 random bits
        r = httpx.post(
            url,
            data={"password": password, "password2": password},
            headers={"Origin": self.url},
            timeout=10,
        )
        if r.status_code != 303:
            raise UpError(f"setting the demo {who}'s password answered {r.status_code}")
        setattr(self.state, f"{who}_password", password)
        self.state.save(self.state_path)

    def _add_admin(self) -> None:
        """The demo tenant's admin, for a tenant an older ``up`` made without one: created
        in the store (the API makes admins only with a new tenant), then invited."""
        s = self.state
        assert s.api_key is not None and s.tenant_id is not None
        tenant_id = s.tenant_id

        async def create(store: Store) -> str:
            found = await store.find_staff_by_email(s.admin_email)
            if found is not None:
                if found.tenant_id != tenant_id or not found.is_admin:
                    raise UpError(f"{s.admin_email} is taken in {self.db_url}")
                return found.id
            admin = Staff(
                id=uuid.uuid4().hex,
                tenant_id=tenant_id,
                name="Demo admin",
                created_at=time.time(),
                roles=[ADMIN],
            )
            await store.create_staff(admin)
            return admin.id

        staff_id = asyncio.run(self._with_store(create))
        url = f"/v1/staff/{staff_id}/invitation"
        self._accept(self._post(url, s.api_key, {"email": s.admin_email})["url"], "admin")

    def _seed_demo_calls(self) -> None:
        """Two weeks (``--demo-days``) of made-up calls on the demo link and a second one,
        answered by the demo staff member and two more (who never sign in)."""
        s = self.state
        assert s.api_key is not None and s.tenant_id is not None
        team = [self._post("/v1/staff", s.api_key, {"name": n})["id"] for n in DEMO_SALES_STAFF]
        self._post("/v1/links", s.api_key, {"name": DEMO_SALES_LINK, "ring_staff": team})
        tenant_id, days = s.tenant_id, self.demo_days

        async def seed(store: Store) -> int:
            staff = {m.id: m for m in await store.list_staff(tenant_id)}
            teams = [
                democalls.Team(link, [staff[i] for i in link.ring_staff if i in staff])
                for link in await store.list_links(tenant_id)
            ]
            return await democalls.seed(store, teams, time.time(), days)

        s.demo_calls = asyncio.run(self._with_store(seed))
        s.save(self.state_path)

    async def _with_store(self, work: Any) -> Any:
        """``await work(store)`` on the control plane's database (SQLite in WAL mode: this
        process writes beside the running control plane)."""
        store = await open_store(self.db_url)
        try:
            return await work(store)
        finally:
            await store.close()

    def banner(self, demo: dict[str, Any]) -> str:
        s = self.state
        turn = next(x for x in demo["ice"] if any(u.startswith("turn:") for u in x["urls"]))
        ice = json.dumps(turn)
        return "\n".join(
            [
                "",
                "Clickacall is up: a control plane and one relay node on localhost.",
                "",
                f"  control plane   {self.url}   (OpenAPI: {self.url}/openapi.json)",
                f"  relay node      turn:{HOST}:{self.turn_port}?transport=udp   "
                f"(node {NODE_ID}, region {REGION})",
                f"  metrics         http://{HOST}:{self.metrics_port}/metrics (relay), "
                f"http://{HOST}:{self.control_metrics_port}/metrics (control)",
                f"  data            {self.data.resolve()} (SQLite database and {STATE_FILE}: keys)",
                "",
                f"  call page       {s.call_url}",
                f"  staff console   {s.console_url}   (sign in: {s.staff_email} / {s.staff_password})",
                f"  dashboard       {s.dashboard_url}   "
                f"(sign in: {s.admin_email} / {s.admin_password})",
                f"  demo website    {s.demo_site_url}   (another origin, with the call button)",
                "  embed snippet   (what a business pastes into its site; the demo website has it)",
                *(f"    {line}" for line in (s.embed_html or "").splitlines()),
                "",
                f"  operator key    {s.operator_key}",
                f"  tenant API key  {s.api_key}",
                f"  call link       {s.link_public_id} (rings staff member {s.staff_id})",
                f"  demo calls      {s.demo_calls} made-up calls in the call log and charts"
                if s.demo_calls
                else "  demo calls      none (seeded only for a new tenant; --no-demo-calls)",
                f"  staff token     {demo['console']}",
                "",
                "A visitor clicks the call button:",
                f"  curl -s -X POST {self.url}/v1/links/{s.link_public_id}/calls",
                "The staff member sees it ring, and answers (CALL_ID from the click):",
                f"  curl -s -H 'Authorization: Bearer {demo['console']}' {self.url}/v1/ringing",
                f"  curl -s -X POST -H 'Authorization: Bearer {demo['console']}' "
                f"{self.url}/v1/calls/CALL_ID/answer",
                "Both then signal over the WebSocket at the 'signal' path of their response.",
                "",
                "A TURN credential for any WebRTC client (24 hours), as an RTCIceServer:",
                f"  {ice}",
                "",
                "Loopback peers are allowed here (--allow-peer 127.0.0.0/8); a real node denies them.",
                "Press Ctrl-C to stop.",
                "",
            ]
        )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)  # noqa: T201
        sys.exit(2)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--data",
        default="clickacall-data",
        metavar="DIR",
        help="where the SQLite database and keys live (default %(default)s)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=8080,
        metavar="PORT",
        help="control plane port on 127.0.0.1 (default %(default)s, else a free one)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=9641,
        metavar="PORT",
        help="relay metrics port (default %(default)s, else a free one); the control "
        "plane's is the next one",
    )
    p.add_argument(
        "--no-demo-calls",
        action="store_true",
        help="do not seed made-up calls for a new demo tenant (they fill the dashboard's "
        "call log and charts on a first run)",
    )
    p.add_argument(
        "--demo-days",
        type=_demo_days,
        default=democalls.DEFAULT_DAYS,
        metavar="N",
        help="days of made-up calls for a new demo tenant, up to today "
        f"(default %(default)s, 1-{MAX_DEMO_DAYS})",
    )
    return p


def _demo_days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= days <= MAX_DEMO_DAYS:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_DEMO_DAYS}, not {days}")
    return days


def main(argv: list[str] | None = None, prog: str = "clickacall up") -> int:
    args = build_parser(prog).parse_args(argv)
    data = Path(args.data)
    try:
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
    except OSError as e:
        print(f"{prog}: error: cannot use --data {data}: {e}", file=sys.stderr)  # noqa: T201
        return 2
    stopping = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping += 1
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        days = 0 if args.no_demo_calls else args.demo_days
        up = Up(data, args.http_port, args.metrics_port, days)
    except UpError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)  # noqa: T201
        return 1
    try:
        up.start()
        print(up.banner(up.demo()), flush=True)  # noqa: T201
        while all(c.poll() is None for c in up.children):
            time.sleep(0.5)
        dead = next(c for c in up.children if c.poll() is not None)
        print(f"{prog}: a process exited ({dead.returncode}); stopping", file=sys.stderr)  # noqa: T201
        return 1
    except UpError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        up.stop()


if __name__ == "__main__":
    sys.exit(main())
