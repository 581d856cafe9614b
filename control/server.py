"""``clickacall control`` / ``python -m control``: flags and environment in, uvicorn out.

Secrets may come from flags or the environment (flags win): ``--operator-key-hash ID:SHA256HEX``
(repeatable) and ``CLICKACALL_OPERATOR_KEY`` (an operator key itself, hashed on start),
``--token-key`` / ``CLICKACALL_TOKEN_KEY`` (repeatable for rotation: the first signs),
``--relay-secret`` / ``CLICKACALL_AUTH_SECRET`` (the relays' TURN REST secret) and
``--node-secret`` / ``CLICKACALL_NODE_SECRET`` (relay heartbeats). Bad input exits 2 with one
line on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from typing import NamedTuple, NoReturn

from control.keys import OperatorKey, Unauthorized, hash_key, new_operator_key, parse_key
from control.selection import HEARTBEAT_TIMEOUT, NO_REGIONS, RegionMap
from control.settings import (
    DEFAULT_AWAY_AFTER,
    DEFAULT_RING_TIMEOUT,
    DEFAULT_SESSION_IDLE,
    DEFAULT_SESSION_MAX,
    DEFAULT_SIGNIN_CODE_WINDOW,
    DEFAULT_THROTTLE_BURST,
    DEFAULT_THROTTLE_ENTRIES,
    DEFAULT_THROTTLE_INTERVAL,
    DEFAULT_WRAPUP,
    ControlSettings,
)
from control.tokens import MIN_KEY_LEN

EXIT_USAGE = 2
DEFAULT_LISTEN = "127.0.0.1:8080"
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
        "--db",
        default=DEFAULT_DB,
        metavar="URL",
        help="sqlite:///PATH (default %(default)s) or postgresql://...",
    )
    p.add_argument("--operator-key-hash", action="append", default=[], metavar="ID:SHA256HEX")
    p.add_argument("--token-key", action="append", default=[], metavar="KEY")
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


def _public_url(url: str | None) -> str | None:
    if url is None:
        return None
    if not _PUBLIC_URL.match(url):
        raise UsageError(f"--public-url {url!r} must be http(s)://HOST[:PORT][/PATH]")
    return url.rstrip("/")


def _check_limits(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--session-idle", args.session_idle),
        ("--session-max", args.session_max),
        ("--signin-code-window", args.signin_code_window),
        ("--throttle-interval", args.throttle_interval),
    ):
        if not 0 < value < float("inf"):
            raise UsageError(f"{flag} must be a positive number of seconds")
    if not 0 <= args.wrapup_seconds <= 3600:
        raise UsageError("--wrapup-seconds must be 0-3600 seconds")
    for flag, value, low in (
        ("--away-after-rings", args.away_after_rings, 1),
        ("--throttle-burst", args.throttle_burst, 1),
        ("--throttle-entries", args.throttle_entries, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}")


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


REGION_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")  # as control/schemas.py Region


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

    import uvicorn

    from control.app import create_app
    from relay.logs import setup_logging

    setup_logging(logs.level, json=logs.json, also=("uvicorn",))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,  # uvicorn's records go through the one setup above
        access_log=False,
    )
    return 0
