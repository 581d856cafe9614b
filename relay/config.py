"""Relay node configuration: one dataclass, filled from defaults, a TOML file, then flags.

Every command-line flag has a key of the same name (dashes become underscores) in the
``[relay]`` table of the TOML file given with ``--config``. Flags win over the file; a
repeatable flag given on the command line replaces the file's array rather than adding to
it. The auth secrets come from ``--auth-secret``, else from the environment variable
``CLICKACALL_AUTH_SECRET`` (comma-separated for several), else from the file; the node
secret (for ``--control``) likewise from ``--node-secret``, ``CLICKACALL_NODE_SECRET``, the file.

:func:`load_config` turns an argument list into a checked :class:`RelayConfig`; every
mistake raises :class:`ConfigError` with one line naming the flag or key and the bad value.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from relay import configvalues as cv
from relay.configvalues import Address, Raw
from relay.configvalues import ConfigError as ConfigError  # re-exported: the one error
from relay.configvalues import parse_bandwidth as parse_bandwidth  # re-exported

ENV_AUTH_SECRET = "CLICKACALL_AUTH_SECRET"
ENV_NODE_SECRET = "CLICKACALL_NODE_SECRET"
HEARTBEAT_RANGE = (0.2, 60.0)  # seconds between the node agent's heartbeats
SUMMARY_RANGE = (0.2, 300.0)  # seconds between the node agent's quality summaries
MAX_ICE_URLS = 16  # the control plane keeps at most this many URLs per node
REGION_PATTERN = r"[a-z][a-z0-9-]{0,31}"  # a region name, here and in the control plane
STREAM_MESSAGE_RANGE = (1024, 65540)  # bytes: a full ChannelData (4 + 65535, padded) at most
STREAM_BUFFER_RANGE = (4096, 16 * 1024 * 1024)  # bytes queued per connection
STREAM_TIMEOUT_RANGE = (0.5, 3600.0)  # seconds, for the stream timeouts
MIN_PORTS_PER_WORKER = 2  # an even/odd pair, so EVEN-PORT can be served by every worker
LOG_LEVELS = ("debug", "info", "warning", "error")
TOML_TABLES = ("relay", "control")  # top-level tables a shared config file may hold


def default_workers() -> int:
    """One worker per CPU this process may run on (honours cpusets and taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass(slots=True)
class RelayConfig:
    """A node's settings. Its field defaults are the defaults: the help, the README's table
    and the TURN core (:func:`relay.node.turn_config`) take them from here."""

    listen: list[Address] = field(default_factory=lambda: [("0.0.0.0", 3478)])
    listen_tcp: list[Address] = field(default_factory=list)  # TURN over TCP (RFC 8656)
    listen_tls: list[Address] = field(default_factory=list)  # TURN over TLS, e.g. port 443
    tls_cert: str | None = None  # PEM certificate chain for --listen-tls (reloaded on SIGHUP)
    tls_key: str | None = None  # PEM private key (None: in the --tls-cert file)
    tls_name: str | None = None  # host name of the turns: URLs the node registers
    relay_ip: list[str] = field(default_factory=list)  # one IPv4 and/or one IPv6 address
    external_ip: str | None = None  # address advertised in XOR-RELAYED-ADDRESS (1:1 NAT)
    ports: tuple[int, int] = (49152, 65535)
    strict_port_range: bool = False  # refuse to start when --ports overlaps the ephemeral range
    realm: str = "clickacall"
    auth_secrets: list[str] = field(default_factory=list)  # TURN REST secrets, first is newest
    users: dict[str, str] = field(default_factory=dict)  # static long-term credentials
    allow_peer: list[str] = field(default_factory=list)  # CIDRs opened despite the deny list
    deny_peer: list[str] = field(default_factory=list)  # CIDRs denied on top of the defaults
    workers: int = field(default_factory=default_workers)
    metrics: Address | None = None
    control: str | None = None
    node_id: str | None = None
    region: str = "eu"
    node_secret: str | None = None  # the node agent's bearer secret towards --control
    heartbeat_interval: float = 5.0  # seconds between heartbeats to --control
    summary_interval: float = 5.0  # seconds between per-allocation summaries to --control
    spool: str | None = None  # directory of the summary spool (None: relay.spool.default_dir)
    max_allocations: int = 10000  # total per node (508 beyond)
    user_quota: int = 10  # allocations per username (486 beyond)
    bandwidth: int = 0  # bytes/s per allocation and direction, 0 = no cap
    unauth_rate: float = 20.0  # unauthenticated requests/s per client /24 or /48; 0 = no limit
    unauth_burst: float = 100.0  # unauthenticated requests a client /24 or /48 may burst
    drain_timeout: float = 600.0  # seconds a draining node keeps allocations
    alternate_server: Address | None = None  # sent with 300 Try Alternate while draining
    log_full_ips: bool = False  # operator opt-in to full client IPs in logs
    log_level: str = "info"
    software: str = "Clickacall"
    log_json: bool = False  # JSON lines instead of key=value on stderr
    quality: bool = True  # RTP/RTCP inspection in the fast path (--quality on|off)
    gso: bool = True  # UDP segmentation offload for same-destination sends (--gso on|off)
    # one shared peer-facing UDP socket per worker and family instead of one per allocation
    # (opt-in; RFC 8656 wants a relayed address per allocation: docs/security.md)
    multiplex_peer: bool = False
    # microseconds a worker waits, after a wake-up that relayed packets, before it reads again
    # (while packets keep coming): fewer wake-ups per packet for up to that much more latency
    coalesce_us: int = 0
    # limits of the TCP and TLS listeners (relay/server.py, ext/_stream.pyx)
    stream_max_connections: int = 10000  # per node, split evenly between workers
    stream_max_per_source: int = 200  # per client /24 (IPv4) or /48 (IPv6), per worker
    tls_handshake_timeout: float = 10.0  # seconds a TLS handshake may take
    stream_idle_timeout: float = 60.0  # seconds a connection without allocation may stay quiet
    stream_max_message: int = 4096  # bytes: a STUN or ChannelData message longer closes it
    stream_partial_timeout: float = 10.0  # seconds a message may take to arrive (slow-loris)
    stream_send_buffer: int = 65536  # bytes queued towards a slow reader; media beyond is dropped


DEFAULTS = RelayConfig()
COALESCE_MAX_US = 1000  # --coalesce-us: a longer wait would hold up the worker's other work
SWITCHES = frozenset({"quality", "gso"})  # on|off values rather than --flag/--no-flag


def show(value: object) -> str:
    """A configuration value as a person writes it on the command line."""
    if value is None or value in ([], {}):
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}-{value[1]}"
    if isinstance(value, list):
        return ", ".join(show(v) for v in value)
    if isinstance(value, tuple):
        host, port = value
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(value)


# ---------------------------------------------------------------------------------------
# The options: one row per flag / TOML key.


@dataclass(frozen=True, slots=True)
class Option:
    key: str  # TOML key; the flag is "--" + key with "_" -> "-"
    metavar: str | None  # None for on/off switches
    help: str
    repeatable: bool = False
    default: str | None = None  # said of the default where RelayConfig's value is not it

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default as a person writes it: from :class:`RelayConfig`, the one place."""
        return self.default if self.default is not None else show(getattr(DEFAULTS, self.key))

    @property
    def help_text(self) -> str:
        return f"{self.help} (default: {self.default_text})"


OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        "HOST:PORT",
        "UDP address to serve TURN/STUN on; IPv6 as [::1]:3478",
        True,
    ),
    Option(
        "listen_tcp",
        "HOST:PORT",
        "TCP address to serve TURN/STUN on (RFC 8656 over a stream; relayed traffic stays UDP)",
        True,
    ),
    Option(
        "listen_tls",
        "HOST:PORT",
        "TLS address to serve TURN/STUN on (TLS 1.2/1.3), e.g. 0.0.0.0:443; needs --tls-cert",
        True,
    ),
    Option(
        "tls_cert",
        "FILE",
        "PEM certificate chain for --listen-tls; SIGHUP reloads it (and the key)",
    ),
    Option("tls_key", "FILE", "PEM private key for --tls-cert", default="in the --tls-cert file"),
    Option(
        "tls_name",
        "NAME",
        "host name the node's turns: URLs carry, the one its certificate names",
        default="the advertised address",
    ),
    Option(
        "relay_ip",
        "IP",
        "address relayed sockets bind to: at most one IPv4 and one IPv6",
        True,
        "the --listen address of each family when it is a specific IP",
    ),
    Option(
        "external_ip", "IP", "public address to advertise instead of the relay IP, behind 1:1 NAT"
    ),
    Option(
        "ports",
        "LOW-HIGH",
        "UDP port range for relayed sockets, split between workers",
    ),
    Option(
        "strict_port_range",
        None,
        "refuse to start when --ports overlaps the kernel's ephemeral port range "
        "(net.ipv4.ip_local_port_range) instead of warning",
    ),
    Option("realm", "REALM", "realm of the long-term credentials"),
    Option(
        "auth_secret",
        "SECRET",
        f"TURN REST shared secret; repeat to rotate, newest first (env {ENV_AUTH_SECRET}, comma-separated)",
        True,
        "none",
    ),
    Option("user", "NAME:PASSWORD", "static long-term credential", True, "none"),
    Option(
        "allow_peer",
        "CIDR",
        "peer range to open despite the default deny list (e.g. 10.0.0.0/8)",
        True,
    ),
    Option("deny_peer", "CIDR", "peer range to deny on top of the default deny list", True),
    Option("workers", "N", "worker processes sharing the listen ports", default="one per CPU"),
    Option(
        "metrics", "HOST:PORT", "serve Prometheus metrics over HTTP on this address", default="off"
    ),
    Option(
        "control",
        "URL",
        "control plane base URL the node agent registers with",
        default="standalone",
    ),
    Option("node_id", "ID", "this node's name towards the control plane", default="the host name"),
    Option("region", "REGION", "region this node serves, e.g. eu"),
    Option(
        "node_secret",
        "SECRET",
        f"secret the node agent authenticates to --control with (env {ENV_NODE_SECRET}); required with --control",
    ),
    Option(
        "heartbeat_interval",
        "SECONDS",
        "seconds between heartbeats to --control, 0.2 to 60",
    ),
    Option(
        "summary_interval",
        "SECONDS",
        "seconds between per-allocation quality summaries to --control, 0.2 to 300",
    ),
    Option(
        "spool",
        "DIR",
        "directory where summaries wait until --control has them",
        default="$STATE_DIRECTORY/spool/NODE, else $XDG_STATE_HOME or ~/.local/state, clickacall/spool/NODE",
    ),
    Option("max_allocations", "N", "allocations the node holds at once; 508 beyond"),
    Option(
        "user_quota",
        "N",
        "allocations one credential holds at once; 486 beyond; 0 = no cap",
    ),
    Option(
        "bandwidth",
        "RATE",
        "per allocation and direction cap in bytes/s, suffixes k/M/G (e.g. 2M); 0 = none",
    ),
    Option(
        "unauth_rate",
        "PER_SECOND",
        "unauthenticated requests (Binding, first Allocates, failed ones) answered per second "
        "per client /24 or /48; more are dropped; 0 = no limit",
    ),
    Option(
        "unauth_burst",
        "N",
        "unauthenticated requests a client /24 or /48 may send at once above --unauth-rate",
    ),
    Option(
        "drain_timeout",
        "SECONDS",
        "how long a draining node keeps existing allocations",
    ),
    Option(
        "alternate_server",
        "HOST:PORT",
        "relay to send clients to (300 Try Alternate) while draining",
    ),
    Option(
        "log_full_ips", None, "log full client and peer IP addresses instead of their /24 or /48"
    ),
    Option("log_level", "LEVEL", "one of debug, info, warning, error"),
    Option("log_json", None, "write logs as JSON lines instead of key=value"),
    Option(
        "quality",
        "on|off",
        "passive RTP/RTCP quality inspection in the fast path: loss, jitter, kind, MOS per call",
    ),
    Option(
        "gso",
        "on|off",
        "send runs of datagrams to one destination as one UDP_SEGMENT message where the kernel supports it",
    ),
    Option(
        "multiplex_peer",
        None,
        "one shared relayed UDP socket per worker and family instead of one per allocation: "
        "allocations share its address, a peer IP:port belongs to one allocation, EVEN-PORT "
        "and RESERVATION-TOKEN get 400 (docs/security.md)",
    ),
    Option(
        "coalesce_us",
        "MICROSECONDS",
        "after a wake-up that relayed packets, wait this long and read again while packets keep "
        "coming, so one wake-up serves many: less CPU per packet for up to this much (plus the "
        f"kernel's timer slack) more latency per hop; 0 = off, at most {COALESCE_MAX_US}",
    ),
    Option(
        "software",
        "TEXT",
        "SOFTWARE attribute sent in responses; empty to omit",
    ),
    Option(
        "stream_max_connections",
        "N",
        "TCP and TLS connections the node holds at once (split between workers); more are closed at once",
    ),
    Option(
        "stream_max_per_source",
        "N",
        "TCP and TLS connections per client /24 or /48 in each worker; more are closed at once",
    ),
    Option(
        "tls_handshake_timeout",
        "SECONDS",
        "seconds a TLS handshake may take before the connection is closed",
    ),
    Option(
        "stream_idle_timeout",
        "SECONDS",
        "seconds a TCP or TLS connection holding no allocation may send nothing before it is closed",
    ),
    Option(
        "stream_max_message",
        "BYTES",
        "longest STUN or ChannelData message on a TCP or TLS connection; a longer one closes it",
    ),
    Option(
        "stream_partial_timeout",
        "SECONDS",
        "seconds one message on a TCP or TLS connection may take to arrive whole (slow-loris)",
    ),
    Option(
        "stream_send_buffer",
        "BYTES",
        "bytes queued towards a TCP or TLS client that reads slowly; media beyond is dropped",
    ),
)
OPTIONS_BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def build_parser(prog: str = "clickacall relay") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Run a Clickacall TURN/STUN relay node.",
        epilog=(
            "Every flag has a key of the same name (dashes as underscores) in the [relay] "
            "table of the --config file; flags win over the file."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    for opt in OPTIONS:
        if opt.metavar is None:
            parser.add_argument(
                opt.flag,
                dest=opt.key,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=opt.help_text,
            )
        else:
            parser.add_argument(
                opt.flag,
                dest=opt.key,
                metavar=opt.metavar,
                default=None,
                action="append" if opt.repeatable else "store",
                help=opt.help_text,
            )
    return parser


# ---------------------------------------------------------------------------------------
# Loading.


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> RelayConfig:
    """Parse ``argv`` (flags only, no subcommand), read ``--config``, check everything.

    ``env`` defaults to ``os.environ``. Raises :class:`ConfigError`. ``--help`` prints the
    help and raises ``SystemExit(0)`` as argparse does.
    """
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    file_values = read_toml(args.config) if args.config is not None else {}
    return build_config(
        flags, file_values, os.environ if env is None else env, file_label=args.config or ""
    )


def read_toml(path: str) -> dict[str, object]:
    """The ``[relay]`` table of ``path``, with its keys checked against the options."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {path!r} does not exist") from None
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path!r}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config: {path!r} is not valid TOML: {e}") from None
    for name, value in doc.items():
        if name in TOML_TABLES and isinstance(value, dict):
            continue
        if name in OPTIONS_BY_KEY:
            raise ConfigError(f"{path}: key {name!r} must be inside the [relay] table")
        raise ConfigError(
            f"{path}: unknown top-level key {name!r}{_did_you_mean(name, TOML_TABLES)}"
        )
    table = doc.get("relay", {})
    for key in table:
        if key not in OPTIONS_BY_KEY:
            raise ConfigError(
                f"{path}: unknown key {key!r} in [relay]{_did_you_mean(key, OPTIONS_BY_KEY)}"
            )
    return dict(table)


def _did_you_mean(name: str, choices: Sequence[str] | Mapping[str, object]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def build_config(
    flags: Mapping[str, object],
    file_values: Mapping[str, object],
    env: Mapping[str, str],
    *,
    file_label: str = "config",
) -> RelayConfig:
    """Merge flags over environment over file over defaults, then check and convert."""
    raw: dict[str, Raw] = {}
    for key, value in file_values.items():
        raw[key] = (value, f"{file_label} [relay] {key}")
    env_secret = env.get(ENV_AUTH_SECRET, "")
    if env_secret.strip():
        raw["auth_secret"] = (env_secret.split(","), ENV_AUTH_SECRET)
    env_node_secret = env.get(ENV_NODE_SECRET, "")
    if env_node_secret.strip():
        raw["node_secret"] = (env_node_secret, ENV_NODE_SECRET)
    for key, value in flags.items():
        raw[key] = (value, OPTIONS_BY_KEY[key].flag)

    cfg = RelayConfig()

    listen = [
        cv.check_address(v, w)
        for v, w in cv.items_of(raw.get("listen", ([show(a) for a in DEFAULTS.listen], "--listen")))
    ]
    dupes = {a for a in listen if listen.count(a) > 1}
    if dupes:
        raise ConfigError(
            f"{cv.where_of(raw, 'listen', '--listen')}: {cv.fmt_address(dupes.pop())} is given twice"
        )
    cfg.listen = listen
    streams: dict[Address, str] = {}
    for key in ("listen_tcp", "listen_tls"):
        addrs = [cv.check_address(v, w) for v, w in cv.items_of(raw[key])] if key in raw else []
        for addr in addrs:
            if addr in streams:
                where = raw[key][1]
                raise ConfigError(
                    f"{where}: {cv.fmt_address(addr)} is given twice (TCP and TLS listeners need their own ports)"
                )
            streams[addr] = key
        setattr(cfg, key, addrs)
    for key in ("tls_cert", "tls_key"):
        if key in raw:
            value, where = raw[key]
            setattr(cfg, key, cv.check_readable_file(value, where))
    if "tls_name" in raw:
        cfg.tls_name = cv.check_token(
            *raw["tls_name"],
            pattern=r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
            what="a DNS host name, e.g. turn.example.com",
        )
    if cfg.listen_tls and cfg.tls_cert is None:
        raise ConfigError(
            f"{raw['listen_tls'][1]} needs a certificate: give --tls-cert FILE (and --tls-key "
            "FILE unless the key is in the same PEM file)"
        )
    for key in ("tls_cert", "tls_key", "tls_name"):
        if key in raw and not cfg.listen_tls:
            raise ConfigError(f"{raw[key][1]} is only used with --listen-tls, which is not given")
    for key, bounds in (
        ("stream_max_message", STREAM_MESSAGE_RANGE),
        ("stream_send_buffer", STREAM_BUFFER_RANGE),
    ):
        if key in raw:
            setattr(cfg, key, cv.check_int_within(*raw[key], bounds))
    for key in ("stream_max_connections", "stream_max_per_source"):
        if key in raw:
            setattr(cfg, key, cv.check_int(*raw[key], minimum=1))
    for key in ("tls_handshake_timeout", "stream_idle_timeout", "stream_partial_timeout"):
        if key in raw:
            setattr(cfg, key, cv.check_seconds_within(*raw[key], STREAM_TIMEOUT_RANGE))

    if "relay_ip" in raw:
        cfg.relay_ip = cv.relay_ips_of(raw["relay_ip"])
    external = None
    if "external_ip" in raw:
        value, where = raw["external_ip"]
        external = cv.check_ip(value, where)
        if external.is_unspecified or external.is_multicast:
            raise ConfigError(
                f"{where}: {value!r} cannot be advertised to clients; give the public address"
            )
        cfg.external_ip = str(external)
    if "ports" in raw:
        cfg.ports = cv.check_port_range(*raw["ports"])
    cfg.workers = (
        cv.check_int(*raw["workers"], minimum=1) if "workers" in raw else default_workers()
    )

    if "realm" in raw:
        cfg.realm = cv.check_text(*raw["realm"], max_len=127, allow_empty=False)

    if "auth_secret" in raw:
        secrets_ = [
            cv.check_text(v, w, allow_empty=True).strip()
            for v, w in cv.items_of(raw["auth_secret"])
        ]
        cfg.auth_secrets = list(dict.fromkeys(s for s in secrets_ if s))  # dedupe, keep order
        if not cfg.auth_secrets:
            raise ConfigError(f"{raw['auth_secret'][1]}: no secret given (empty value)")
    if "user" in raw:
        for value, where in cv.items_of(raw["user"]):
            name, password = cv.check_user(value, where)
            if name in cfg.users:
                raise ConfigError(f"{where}: user {name!r} is given twice")
            cfg.users[name] = password

    cfg.allow_peer = (
        [cv.check_cidr(v, w) for v, w in cv.items_of(raw["allow_peer"])]
        if "allow_peer" in raw
        else []
    )
    cfg.deny_peer = (
        [cv.check_cidr(v, w) for v, w in cv.items_of(raw["deny_peer"])]
        if "deny_peer" in raw
        else []
    )

    if "metrics" in raw:
        cfg.metrics = cv.check_address(*raw["metrics"])
    if "control" in raw:
        cfg.control = cv.check_url(*raw["control"])
    if "node_id" in raw:
        cfg.node_id = cv.check_token(
            *raw["node_id"],
            pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
            what="1-64 letters, digits, '.', '_' or '-'",
        )
    if "region" in raw:
        cfg.region = cv.check_token(
            *raw["region"],
            pattern=REGION_PATTERN,
            what="1-32 of a-z, 0-9 and '-', starting with a letter, e.g. eu or us-east",
        )
    if "node_secret" in raw:
        value, where = raw["node_secret"]
        cfg.node_secret = cv.check_text(value, where, allow_empty=True).strip()
        if not cfg.node_secret:
            raise ConfigError(f"{where}: no secret given (empty value)")
    if "heartbeat_interval" in raw:
        cfg.heartbeat_interval = cv.check_seconds_within(
            *raw["heartbeat_interval"], HEARTBEAT_RANGE
        )
    if "summary_interval" in raw:
        cfg.summary_interval = cv.check_seconds_within(*raw["summary_interval"], SUMMARY_RANGE)
    if "spool" in raw:
        value, where = raw["spool"]
        cfg.spool = cv.check_text(value, where).strip()
        if not cfg.spool:
            raise ConfigError(f"{where}: must not be empty")
    if "max_allocations" in raw:
        cfg.max_allocations = cv.check_int(*raw["max_allocations"], minimum=1)
    if "user_quota" in raw:
        cfg.user_quota = cv.check_int(*raw["user_quota"], minimum=0)
    if "bandwidth" in raw:
        cfg.bandwidth = cv.check_bandwidth(*raw["bandwidth"])
    if "unauth_rate" in raw:
        cfg.unauth_rate = cv.check_number(*raw["unauth_rate"], "requests per second")
    if "unauth_burst" in raw:
        cfg.unauth_burst = float(cv.check_int(*raw["unauth_burst"], minimum=1))
    if "drain_timeout" in raw:
        cfg.drain_timeout = cv.check_seconds(*raw["drain_timeout"])
    if "alternate_server" in raw:
        value, where = raw["alternate_server"]
        cfg.alternate_server = cv.check_address(value, where)
        if ipaddress.ip_address(cfg.alternate_server[0]).is_unspecified:
            raise ConfigError(
                f"{where}: {value!r} is a wildcard address; give the other relay's address"
            )
    if "strict_port_range" in raw:
        cfg.strict_port_range = cv.check_bool(*raw["strict_port_range"])
    if "log_full_ips" in raw:
        cfg.log_full_ips = cv.check_bool(*raw["log_full_ips"])
    if "log_json" in raw:
        cfg.log_json = cv.check_bool(*raw["log_json"])
    if "log_level" in raw:
        value, where = raw["log_level"]
        level = cv.check_text(value, where).lower()
        if level not in LOG_LEVELS:
            raise ConfigError(
                f"{where}: {value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}"
            )
        cfg.log_level = level
    if "quality" in raw:
        cfg.quality = cv.check_on_off(*raw["quality"])
    if "gso" in raw:
        cfg.gso = cv.check_on_off(*raw["gso"])
    if "multiplex_peer" in raw:
        cfg.multiplex_peer = cv.check_bool(*raw["multiplex_peer"])
    if "coalesce_us" in raw:
        cfg.coalesce_us = cv.check_int_within(*raw["coalesce_us"], (0, COALESCE_MAX_US))
    if "software" in raw:
        cfg.software = cv.check_text(*raw["software"], max_len=127, allow_empty=True)

    # Checks that involve several settings, once every value is known to be well formed.
    if "relay_ip" not in raw:
        cfg.relay_ip = cv.default_relay_ips(listen)
    if external is not None and not any(
        ipaddress.ip_address(r).version == external.version for r in cfg.relay_ip
    ):
        where = raw["external_ip"][1]
        raise ConfigError(
            f"{where}: {cfg.external_ip} is IPv{external.version} but no relay IP "
            f"({', '.join(cfg.relay_ip)}) is IPv{external.version}"
        )
    low, high = cfg.ports
    if high - low + 1 < cfg.workers * MIN_PORTS_PER_WORKER:
        where = cv.where_of(raw, "ports", "--ports")
        raise ConfigError(
            f"{where}: {low}-{high} has {high - low + 1} ports, too few for {cfg.workers} workers "
            f"(each needs at least {MIN_PORTS_PER_WORKER}); widen the range or lower --workers"
        )
    if not cfg.auth_secrets and not cfg.users:
        raise ConfigError(
            "no credentials: give --auth-secret SECRET (or set "
            f"{ENV_AUTH_SECRET}, or auth_secret in the [relay] table of --config) "
            "for TURN REST credentials, or --user NAME:PASSWORD for a static one"
        )
    if cfg.control is not None:
        where = raw["control"][1]
        if cfg.node_secret is None:
            raise ConfigError(
                f"{where} needs a node secret: set {ENV_NODE_SECRET} (or give --node-secret "
                "SECRET, or node_secret in the [relay] table of --config)"
            )
        if not advertised_urls(cfg):
            raise ConfigError(
                f"{where}: no address to advertise to clients: a wildcard --listen needs a "
                "--relay-ip or --external-ip of the same family"
            )
    return cfg


def advertised_urls(cfg: RelayConfig) -> list[str]:
    """The TURN and STUN URLs clients should use: UDP first, then TCP, then TLS (so a browser
    that tries them in order falls back by itself), then STUN.

    The host is ``--external-ip`` when it has the listen address's family (1:1 NAT), else
    the listen address itself when it is a specific IP, else the relay IP of that family;
    a wildcard address with neither is skipped. ``turns:`` URLs carry ``--tls-name`` when
    it is given (browsers check the certificate against the URL's host). ``turn:``/``turns:``
    URLs come first, so if more than :data:`MAX_ICE_URLS` are made it is the ``stun:`` ones
    that are left out.
    """
    turn: list[str] = []
    stun: list[str] = []
    for scheme, transport, listen in (
        ("turn", "udp", cfg.listen),
        ("turn", "tcp", cfg.listen_tcp),
        ("turns", "tcp", cfg.listen_tls),
    ):
        for host, port in listen:
            advertised = _advertised_host(cfg, host)
            if advertised is None:
                continue
            where = f"[{advertised}]:{port}" if ":" in advertised else f"{advertised}:{port}"
            if scheme == "turns" and cfg.tls_name is not None:
                where = f"{cfg.tls_name}:{port}"
            url = f"{scheme}:{where}?transport={transport}"
            if url not in turn:
                turn.append(url)
            if transport == "udp" and f"stun:{where}" not in stun:
                stun.append(f"stun:{where}")
    return (turn + stun)[:MAX_ICE_URLS]


def _advertised_host(cfg: RelayConfig, host: str) -> str | None:
    family = ipaddress.ip_address(host).version
    external = cfg.external_ip
    if external is not None and ipaddress.ip_address(external).version == family:
        return external
    if not ipaddress.ip_address(host).is_unspecified:
        return host
    return next((ip for ip in cfg.relay_ip if ipaddress.ip_address(ip).version == family), None)
