"""``clickacall control`` / ``python -m control``: flags and environment in, uvicorn out.

Secrets may come from flags or the environment (flags win): ``--operator-key-hash ID:SHA256HEX``
(repeatable) and ``CLICKACALL_OPERATOR_KEY`` (an operator key itself, hashed on start),
``--token-key`` / ``CLICKACALL_TOKEN_KEY`` (repeatable for rotation: the first signs),
``--relay-secret`` / ``CLICKACALL_AUTH_SECRET`` (the relays' TURN REST secret) and
``--node-secret`` / ``CLICKACALL_NODE_SECRET`` (relay enrolment and older nodes' heartbeats),
``--audit-key`` / ``CLICKACALL_AUDIT_KEY`` (the audit log's subject HMAC). Bad input exits 2
with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import sys
import tomllib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from control.keys import OperatorKey, Unauthorized, hash_key, new_operator_key, parse_key
from control.selection import HEARTBEAT_TIMEOUT, NO_REGIONS, RegionMap
from control.settings import (
    DEFAULT_AWAY_AFTER,
    DEFAULT_CLICK_ENTRIES,
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_HOOK_CONCURRENCY,
    DEFAULT_HOOK_ENDPOINTS,
    DEFAULT_HOOK_QUEUE,
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_HOOK_WINDOW,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_PREFIX,
    DEFAULT_REVOCATION_WINDOW,
    DEFAULT_RING_TIMEOUT,
    DEFAULT_SESSION_IDLE,
    DEFAULT_SESSION_MAX,
    DEFAULT_SIGNIN_CODE_WINDOW,
    DEFAULT_SUMMARY_SEQ_JUMP,
    DEFAULT_THROTTLE_BURST,
    DEFAULT_THROTTLE_ENTRIES,
    DEFAULT_THROTTLE_INTERVAL,
    DEFAULT_WRAPUP,
    DEFAULT_WS_AUTH_TIMEOUT,
    DEFAULT_WS_MAX_SIZE,
    DEFAULT_WS_UNAUTH,
    DEFAULT_WS_UNAUTH_PER_PREFIX,
    ClickLimits,
    ControlSettings,
)
from control.tokens import MIN_KEY_LEN
from relay.config import REGION_PATTERN

if TYPE_CHECKING:
    from starlette.applications import Starlette

EXIT_USAGE = 2
WS_MAX_QUEUE = 16  # WebSocket messages uvicorn queues per socket before it stops reading
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_METRICS = "127.0.0.1:9642"
DEFAULT_DB = "sqlite:///clickacall.db"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Run the Clickacall control plane (HTTP API).")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT")
    p.add_argument(
        "--metrics",
        default=DEFAULT_METRICS,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on this separate listener (default %(default)s; "
        "'off': none); the API's own port has no /metrics",
    )
    p.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="URL",
        help="sqlite:///PATH (default %(default)s) or postgresql://...",
    )
    p.add_argument("--operator-key-hash", action="append", default=[], metavar="ID:SHA256HEX")
    p.add_argument("--token-key", action="append", default=[], metavar="KEY")
    p.add_argument(
        "--audit-key",
        action="append",
        default=[],
        metavar="KEY",
        help="HMAC key of the audit log's subjects (repeatable: the first writes, all match; "
        "env CLICKACALL_AUDIT_KEY; default: derived from the token keys)",
    )
    p.add_argument("--relay-secret", action="append", default=[], metavar="SECRET")
    p.add_argument(
        "--relay-secret-for",
        action="append",
        default=[],
        metavar="REGION=SECRET",
        help="a region's own TURN REST secret, shared only with that region's "
        "nodes (repeatable; the first per region signs)",
    )
    p.add_argument("--node-secret", action="append", default=[], metavar="SECRET")
    p.add_argument("--ring-timeout", type=float, default=DEFAULT_RING_TIMEOUT, metavar="SECONDS")
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=HEARTBEAT_TIMEOUT,
        metavar="SECONDS",
        help="a relay node with no heartbeat for this long is not chosen (default %(default)g)",
    )
    p.add_argument(
        "--session-idle",
        type=float,
        default=DEFAULT_SESSION_IDLE,
        metavar="SECONDS",
        help="a console session unused this long ends (default %(default)g)",
    )
    p.add_argument(
        "--session-max",
        type=float,
        default=DEFAULT_SESSION_MAX,
        metavar="SECONDS",
        help="any console session ends this long after sign-in (default %(default)g)",
    )
    p.add_argument(
        "--signin-code-window",
        type=float,
        default=DEFAULT_SIGNIN_CODE_WINDOW,
        metavar="SECONDS",
        help="after the right password, this long to type a two-factor code (default %(default)g)",
    )
    p.add_argument(
        "--wrapup-seconds",
        type=float,
        default=DEFAULT_WRAPUP,
        metavar="SECONDS",
        help="after an answered call the member is rung again only after this (default %(default)g)",
    )
    p.add_argument(
        "--away-after-rings",
        type=int,
        default=DEFAULT_AWAY_AFTER,
        metavar="N",
        help="a console member who leaves this many rings in a row unanswered is set away "
        "(default %(default)d)",
    )
    p.add_argument(
        "--public-url",
        metavar="URL",
        help="the base URL people reach the control plane at, for invitation links "
        "(default: the request's own)",
    )
    p.add_argument(
        "--throttle-burst",
        type=int,
        default=DEFAULT_THROTTLE_BURST,
        metavar="N",
        help="sign-in tries and anonymous callback requests at once, per email and per "
        "client /24 or /48 (default %(default)d) ...",
    )
    p.add_argument(
        "--throttle-interval",
        type=float,
        default=DEFAULT_THROTTLE_INTERVAL,
        metavar="SECONDS",
        help="... then one per this many seconds (default %(default)g)",
    )
    p.add_argument(
        "--throttle-entries",
        type=int,
        default=DEFAULT_THROTTLE_ENTRIES,
        metavar="N",
        help="keys the throttle remembers in memory (default %(default)d)",
    )
    d = ClickLimits()
    for flag, kind, default, metavar, text in (
        ("--click-visitor-burst", int, d.visitor_burst, "N", "clicks one visitor may make at once"),
        ("--click-visitor-interval", float, d.visitor_interval, "SECONDS", "... then one per"),
        ("--click-link-burst", int, d.link_burst, "N", "clicks on one link at once"),
        ("--click-link-interval", float, d.link_interval, "SECONDS", "... then one per"),
        (
            "--click-ringing-per-link",
            int,
            d.ringing_per_link,
            "N",
            "calls ringing at once on a link",
        ),
        ("--click-ringing-per-tenant", int, d.ringing_per_tenant, "N", "... in a tenant (0: none)"),
    ):
        p.add_argument(
            flag,
            type=kind,
            default=default,
            metavar=metavar,
            help=f"{text} (default %(default)g; a tenant's click_limits override it)",
        )
    p.add_argument(
        "--click-entries",
        type=int,
        default=DEFAULT_CLICK_ENTRIES,
        metavar="N",
        help="visitor keys and links the click throttle remembers (default %(default)d)",
    )
    p.add_argument(
        "--max-body",
        type=int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="largest request body; larger ones get 413 (default %(default)d)",
    )
    p.add_argument(
        "--ws-max-size",
        type=int,
        default=DEFAULT_WS_MAX_SIZE,
        metavar="BYTES",
        help="largest WebSocket message; a larger one closes the socket with 1009 "
        "(default %(default)d)",
    )
    p.add_argument(
        "--ws-auth-timeout",
        type=float,
        default=DEFAULT_WS_AUTH_TIMEOUT,
        metavar="SECONDS",
        help="a WebSocket that has not authenticated by then is closed (default %(default)g)",
    )
    p.add_argument(
        "--ws-unauthenticated",
        type=int,
        default=DEFAULT_WS_UNAUTH,
        metavar="N",
        help="WebSockets waiting to authenticate, in all (default %(default)d) ...",
    )
    p.add_argument(
        "--ws-unauthenticated-per-prefix",
        type=int,
        default=DEFAULT_WS_UNAUTH_PER_PREFIX,
        metavar="N",
        help="... and from one client /24 or /48 (default %(default)d)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="HTTP requests in progress plus WebSockets open; past it 503 (default %(default)d)",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        default=DEFAULT_HEAD_TIMEOUT,
        metavar="SECONDS",
        help="a request's head (its headers) must arrive within this, else the connection "
        "is closed (default %(default)g)",
    )
    p.add_argument(
        "--max-connections-per-prefix",
        type=int,
        default=DEFAULT_MAX_PER_PREFIX,
        metavar="N",
        help="... of them from one client /24 or /48 (default %(default)d)",
    )
    p.add_argument(
        "--revocation-window",
        type=float,
        default=DEFAULT_REVOCATION_WINDOW,
        metavar="SECONDS",
        help="a relay node away longer than this gets only the revocations that could still "
        "matter, not all since it was last seen (default %(default)g)",
    )
    p.add_argument(
        "--summary-seq-jump",
        type=int,
        default=DEFAULT_SUMMARY_SEQ_JUMP,
        metavar="N",
        help="a relay node's summaries whose seq is more than this past its highest are "
        "refused (default %(default)d)",
    )
    p.add_argument(
        "--new-operator-key",
        action="store_true",
        help="print a fresh operator key and its --operator-key-hash value, then exit",
    )
    p.add_argument(
        "--region-map",
        metavar="FILE.toml",
        help="visitor prefixes to regions and region preferences for relay "
        "selection and call logs (docs/control-plane.md)",
    )
    p.add_argument(
        "--migrate", action="store_true", help="apply pending schema migrations to --db, then exit"
    )
    _webhook_flags(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-json",
        action="store_true",
        help="write logs as JSON lines instead of key=value (the relay's format)",
    )
    return p


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r} must be HOST:PORT with a port of 1-65535")
    return host, int(port)


_PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?$")


def parse_metrics(text: str) -> tuple[str, int] | None:
    if text == "off":
        return None
    try:
        return parse_listen(text)
    except UsageError:
        raise UsageError(f"--metrics {text!r} must be HOST:PORT (port 1-65535) or off") from None


def _public_url(url: str | None) -> str | None:
    if url is None:
        return None
    if not _PUBLIC_URL.match(url):
        raise UsageError(f"--public-url {url!r} must be http(s)://HOST[:PORT][/PATH]")
    return url.rstrip("/")


def _webhook_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--webhook-concurrency",
        type=int,
        default=DEFAULT_HOOK_CONCURRENCY,
        metavar="N",
        help="webhook deliveries in flight at once (default %(default)d)",
    )
    p.add_argument(
        "--webhook-timeout",
        type=float,
        default=DEFAULT_HOOK_TIMEOUT,
        metavar="SECONDS",
        help="time one webhook delivery attempt may take, all told (default %(default)g)",
    )
    p.add_argument(
        "--webhook-window",
        type=float,
        default=DEFAULT_HOOK_WINDOW,
        metavar="SECONDS",
        help="a webhook delivery is retried until this long after it was queued "
        "(default %(default)g: 24 hours)",
    )
    p.add_argument(
        "--webhook-queue",
        type=int,
        default=DEFAULT_HOOK_QUEUE,
        metavar="N",
        help="webhook deliveries one business may have waiting; more are recorded as "
        "failed (default %(default)d)",
    )
    p.add_argument(
        "--webhook-endpoints",
        type=int,
        default=DEFAULT_HOOK_ENDPOINTS,
        metavar="N",
        help="webhook endpoints one business may register (default %(default)d)",
    )
    p.add_argument(
        "--webhook-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="let webhook endpoints be in this network although it is on the deny list "
        "(private, loopback, ...; repeatable)",
    )
    p.add_argument(
        "--webhook-allow-http",
        action="store_true",
        help="accept plain http:// webhook endpoints (tests and labs only)",
    )
    p.add_argument(
        "--webhook-ca",
        metavar="FILE.pem",
        help="certificate authorities webhook endpoints may use besides the system's",
    )


def _check_limits(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--session-idle", args.session_idle),
        ("--session-max", args.session_max),
        ("--signin-code-window", args.signin_code_window),
        ("--throttle-interval", args.throttle_interval),
        ("--revocation-window", args.revocation_window),
        ("--click-visitor-interval", args.click_visitor_interval),
        ("--click-link-interval", args.click_link_interval),
        ("--ws-auth-timeout", args.ws_auth_timeout),
        ("--head-timeout", args.head_timeout),
        ("--webhook-timeout", args.webhook_timeout),
        ("--webhook-window", args.webhook_window),
    ):
        if not 0 < value < float("inf"):
            raise UsageError(f"{flag} must be a positive number of seconds")
    if not 0 <= args.wrapup_seconds <= 3600:
        raise UsageError("--wrapup-seconds must be 0-3600 seconds")
    for flag, value, low in (
        ("--away-after-rings", args.away_after_rings, 1),
        ("--throttle-burst", args.throttle_burst, 1),
        ("--throttle-entries", args.throttle_entries, 1),
        ("--summary-seq-jump", args.summary_seq_jump, 1),
        ("--click-visitor-burst", args.click_visitor_burst, 1),
        ("--click-link-burst", args.click_link_burst, 1),
        ("--click-ringing-per-link", args.click_ringing_per_link, 0),
        ("--click-ringing-per-tenant", args.click_ringing_per_tenant, 0),
        ("--click-entries", args.click_entries, 1),
        ("--max-body", args.max_body, 1024),
        ("--ws-max-size", args.ws_max_size, 1024),
        ("--ws-unauthenticated", args.ws_unauthenticated, 1),
        ("--ws-unauthenticated-per-prefix", args.ws_unauthenticated_per_prefix, 1),
        ("--max-connections", args.max_connections, 1),
        ("--max-connections-per-prefix", args.max_connections_per_prefix, 1),
        ("--webhook-concurrency", args.webhook_concurrency, 1),
        ("--webhook-queue", args.webhook_queue, 1),
        ("--webhook-endpoints", args.webhook_endpoints, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}")
    for cidr in args.webhook_allow:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise UsageError(f"--webhook-allow {cidr!r} is not a network (CIDR)") from None


def _check_db(url: str) -> None:
    if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise UsageError(f"--db {url!r} must be sqlite:///PATH or postgresql://...")


def _operator_hash(text: str) -> OperatorKey:
    key_id, sep, digest = text.partition(":")
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raw = b""
    if not sep or not key_id.startswith("ck_") or len(raw) != 32:
        raise UsageError(
            f"--operator-key-hash {text!r} must be ID:SHA256HEX (ck_<12 hex>:<64 hex>)"
        )
    return OperatorKey(id=key_id, key_hash=raw)


def load_region_map(path: str) -> RegionMap:
    """``--region-map FILE.toml``: ``default = "eu"``, a ``[prefixes]`` table of CIDR =
    region and a ``[preferences]`` table of region = [nearer regions, ...]."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise UsageError(f"--region-map {path!r}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--region-map {path!r}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"default", "prefixes", "preferences"})
    if unknown:
        raise UsageError(
            f"--region-map {path!r}: unknown key(s) {', '.join(unknown)}; "
            "expected default, [prefixes], [preferences]"
        )
    try:
        return RegionMap.from_config(data)
    except ValueError as e:
        raise UsageError(f"--region-map {path!r}: {e}") from None


REGION_RE = re.compile(REGION_PATTERN)


def region_secrets(entries: list[str]) -> dict[str, list[bytes]]:
    """``--relay-secret-for REGION=SECRET`` entries, by region, in the order given."""
    out: dict[str, list[bytes]] = {}
    for entry in entries:
        region, sep, secret = entry.partition("=")
        if not sep or not REGION_RE.fullmatch(region) or not secret:
            named = f" (region {region!r})" if sep and region else ""  # never echo a secret
            raise UsageError(
                f"--relay-secret-for{named}: give REGION=SECRET, a region of lowercase "
                "letters, digits and dashes starting with a letter, and a non-empty secret"
            )
        out.setdefault(region, []).append(secret.encode())
    return out


def _env_list(name: str) -> list[str]:
    value = os.environ.get(name, "")
    return [value] if value else []


class LogOptions(NamedTuple):
    level: str
    json: bool


def load_settings(
    argv: list[str], prog: str
) -> tuple[ControlSettings, tuple[str, int], LogOptions]:
    """(settings, (host, port), logging) from flags and environment; UsageError otherwise."""
    args = build_parser(prog).parse_args(argv)
    listen = parse_listen(args.listen)
    metrics = parse_metrics(args.metrics)
    if metrics is not None and metrics[1] == listen[1] and metrics[0] == listen[0]:
        raise UsageError("--metrics must be another address than --listen")
    _check_db(args.db)
    operators = [_operator_hash(t) for t in args.operator_key_hash]
    for key in _env_list("CLICKACALL_OPERATOR_KEY"):
        try:
            operators.append(OperatorKey(id=parse_key(key).key_id, key_hash=hash_key(key)))
        except Unauthorized:
            raise UsageError("CLICKACALL_OPERATOR_KEY is not an operator key (ck_op_...)") from None
    token_keys = args.token_key or _env_list("CLICKACALL_TOKEN_KEY")
    if not token_keys:
        raise UsageError("a token signing key is required: --token-key or CLICKACALL_TOKEN_KEY")
    if any(len(k.encode()) < MIN_KEY_LEN for k in token_keys):
        raise UsageError(f"token signing keys must be at least {MIN_KEY_LEN} bytes")
    audit_keys = args.audit_key or _env_list("CLICKACALL_AUDIT_KEY")
    if any(len(k.encode()) < MIN_KEY_LEN for k in audit_keys):
        raise UsageError(f"audit keys must be at least {MIN_KEY_LEN} bytes")
    if not args.ring_timeout > 0:
        raise UsageError("--ring-timeout must be a positive number of seconds")
    if not 0 < args.heartbeat_timeout < float("inf"):
        raise UsageError("--heartbeat-timeout must be a positive number of seconds")
    _check_limits(args)
    region_map = load_region_map(args.region_map) if args.region_map else NO_REGIONS
    settings = ControlSettings(
        db_url=args.db,
        token_keys=[k.encode() for k in token_keys],
        operator_keys=operators,
        relay_secrets=[
            s.encode() for s in args.relay_secret or _env_list("CLICKACALL_AUTH_SECRET")
        ],
        region_secrets=region_secrets(args.relay_secret_for),
        node_secrets=list(args.node_secret or _env_list("CLICKACALL_NODE_SECRET")),
        ring_timeout=args.ring_timeout,
        heartbeat_timeout=args.heartbeat_timeout,
        region_map=region_map,
        session_idle=args.session_idle,
        signin_code_window=args.signin_code_window,
        session_max=args.session_max,
        wrapup_seconds=args.wrapup_seconds,
        away_after_rings=args.away_after_rings,
        public_url=_public_url(args.public_url),
        throttle_burst=args.throttle_burst,
        throttle_interval=args.throttle_interval,
        throttle_entries=args.throttle_entries,
        revocation_window=args.revocation_window,
        audit_keys=[k.encode() for k in audit_keys],
        summary_seq_jump=args.summary_seq_jump,
        metrics_listen=metrics,
        click_limits=ClickLimits(
            visitor_burst=args.click_visitor_burst,
            visitor_interval=args.click_visitor_interval,
            link_burst=args.click_link_burst,
            link_interval=args.click_link_interval,
            ringing_per_link=args.click_ringing_per_link,
            ringing_per_tenant=args.click_ringing_per_tenant,
        ),
        click_entries=args.click_entries,
        max_body=args.max_body,
        ws_max_size=args.ws_max_size,
        ws_auth_timeout=args.ws_auth_timeout,
        ws_unauth=args.ws_unauthenticated,
        ws_unauth_per_prefix=args.ws_unauthenticated_per_prefix,
        max_connections=args.max_connections,
        max_per_prefix=args.max_connections_per_prefix,
        head_timeout=args.head_timeout,
        hook_concurrency=args.webhook_concurrency,
        hook_timeout=args.webhook_timeout,
        hook_window=args.webhook_window,
        hook_queue=args.webhook_queue,
        hook_endpoints=args.webhook_endpoints,
        hook_allow=list(args.webhook_allow),
        hook_allow_http=bool(args.webhook_allow_http),
        hook_ca=args.webhook_ca,
    )
    return settings, listen, LogOptions(str(args.log_level), bool(args.log_json))


def _migrate(url: str, prog: str) -> int:
    """``--migrate``: bring the schema up to date by hand (a process also does it on start)."""
    import asyncio

    from control.store import StoreError, migrate

    try:
        applied = asyncio.run(migrate(url))
    except StoreError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)  # noqa: T201
        return 1
    done = ", ".join(f"{v:04d}" for v in applied) if applied else "none (already up to date)"
    print(f"migrations applied: {done}")  # noqa: T201
    return 0


def run_control(argv: list[str], prog: str = "clickacall control") -> int:
    """Parse ``argv`` and serve the API until stopped; 2 with one stderr line on bad input."""
    if "--new-operator-key" in argv:
        key, op = new_operator_key()
        print(f"operator key (shown once; keep it secret): {key}")  # noqa: T201
        print(f"--operator-key-hash {op.id}:{op.key_hash.hex()}")  # noqa: T201
        return 0
    if "--migrate" in argv:
        try:
            args = build_parser(prog).parse_args(argv)
            _check_db(args.db)
        except UsageError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)  # noqa: T201
            return EXIT_USAGE
        return _migrate(args.db, prog)
    try:
        settings, (host, port), logs = load_settings(argv, prog)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)

    from relay.logs import setup_logging

    metrics_sock = None
    if settings.metrics_listen is not None:
        try:
            metrics_sock = _bind(*settings.metrics_listen)
        except OSError as e:
            mhost, mport = settings.metrics_listen
            print(f"{prog}: error: --metrics {mhost}:{mport}: {e.strerror or e}", file=sys.stderr)  # noqa: T201
            return EXIT_USAGE
    setup_logging(logs.level, json=logs.json, also=("uvicorn",))
    try:
        _serve(settings, host, port, metrics_sock)
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on
        pass
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The metrics listener's socket, bound before anything starts (a port in use is a
    clear error at once, not a log line from a server task)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _serve(
    settings: ControlSettings, host: str, port: int, metrics_sock: socket.socket | None
) -> None:
    """The API on ``host:port`` and, on ``metrics_sock``, the metrics listener: two uvicorn
    servers on one uvloop loop. The API's server owns the signals and the lifespan; the
    listener stops when it does."""
    import uvicorn
    import uvloop

    from control.app import create_app
    from control.metrics import metrics_listener

    app = create_app(settings)
    common: dict[str, Any] = {
        "loop": "none",
        "http": "httptools",
        "log_config": None,  # uvicorn's records go through the one setup above
        "access_log": False,
    }
    bounded = {**common, **serve_options(settings, app)}  # the API's: bounded for strangers
    api = uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on", **bounded))

    class Listener(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the API's server handles SIGINT/SIGTERM and stops this one

    async def main() -> None:
        if metrics_sock is None:
            await api.serve()
            return
        listener = Listener(uvicorn.Config(metrics_listener(app), lifespan="off", **common))
        task = asyncio.create_task(listener.serve(sockets=[metrics_sock]))
        try:
            await api.serve()
        finally:
            listener.should_exit = True
            await asyncio.wait({task}, timeout=5)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def serve_options(settings: ControlSettings, app: Starlette) -> dict[str, Any]:
    """uvicorn's options that bound what a stranger can send: httptools with a deadline for
    each request head (:func:`control.bounds.guarded_http`), WebSocket messages at most
    ``ws_max_size`` bytes, refused by the protocol (close 1009) before they are buffered
    whole, and few of them queued per socket. (Connections and request bodies are bounded
    by :class:`control.bounds.Bounds` inside the app.) Refusals count in ``app``'s metrics."""
    from control.bounds import guarded_http
    from control.metrics import metrics_of

    return {
        "http": guarded_http(metrics_of(app), settings.head_timeout),
        "ws_max_size": settings.ws_max_size,
        "ws_max_queue": WS_MAX_QUEUE,
    }
