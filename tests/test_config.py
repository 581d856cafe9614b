"""relay.config: flags, the TOML file, the environment, precedence and every error message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.config import (
    ENV_AUTH_SECRET,
    ENV_NODE_SECRET,
    OPTIONS,
    ConfigError,
    RelayConfig,
    advertised_urls,
    build_parser,
    default_workers,
    load_config,
    parse_bandwidth,
)

BASE = ["--listen", "127.0.0.1:3478", "--auth-secret", "s3cret"]


def load(*flags: str, env: dict[str, str] | None = None) -> RelayConfig:
    return load_config(list(flags), env={} if env is None else env)


def fails(*flags: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*flags, env=env)
    message = str(info.value)
    assert "\n" not in message
    return message


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return str(path)


# --- flags ---------------------------------------------------------------------------


def test_minimal_flags_and_defaults() -> None:
    cfg = load(*BASE)
    assert cfg.listen == [("127.0.0.1", 3478)]
    assert cfg.relay_ip == ["127.0.0.1"]  # taken from the specific listen address
    assert cfg.auth_secrets == ["s3cret"]
    assert cfg.users == {}
    assert cfg.ports == (49152, 65535)
    assert cfg.realm == "clickacall"
    assert cfg.workers == default_workers() >= 1
    assert cfg.metrics is None and cfg.control is None and cfg.node_id is None
    assert cfg.region == "eu"
    assert cfg.log_level == "info" and cfg.log_full_ips is False and cfg.log_json is False


def test_design_example_command_line() -> None:
    cfg = load(
        "--listen",
        "127.0.0.1:3478",
        "--relay-ip",
        "127.0.0.1",
        "--realm",
        "example",
        "--auth-secret",
        "S",
        "--allow-peer",
        "127.0.0.0/8",
    )
    assert cfg.realm == "example"
    assert cfg.relay_ip == ["127.0.0.1"]
    assert cfg.allow_peer == ["127.0.0.0/8"]
    assert cfg.auth_secrets == ["S"]


def test_every_flag() -> None:
    cfg = load(
        "--listen",
        "0.0.0.0:3478",
        "--listen",
        "[::1]:3479",
        "--relay-ip",
        "2001:db8::7",
        "--relay-ip",
        "198.51.100.7",
        "--external-ip",
        "203.0.113.7",
        "--ports",
        "40000-40999",
        "--realm",
        "acme",
        "--auth-secret",
        "new",
        "--auth-secret",
        "old",
        "--user",
        "alice:pw:with:colons",
        "--user",
        "bob:x",
        "--allow-peer",
        "10.0.0.0/8",
        "--allow-peer",
        "fd00::/8",
        "--deny-peer",
        "203.0.113.0/24",
        "--workers",
        "4",
        "--metrics",
        "127.0.0.1:9100",
        "--control",
        "https://control.example.com/",
        "--node-id",
        "eu-fra-1",
        "--region",
        "eu-central",
        "--node-secret",
        "node-s3cret",
        "--heartbeat-interval",
        "0.5",
        "--max-allocations",
        "500",
        "--user-quota",
        "3",
        "--bandwidth",
        "2M",
        "--drain-timeout",
        "30.5",
        "--alternate-server",
        "[2001:db8::9]:3478",
        "--log-full-ips",
        "--log-level",
        "DEBUG",
        "--log-json",
        "--software",
        "",
        "--quality",
        "off",
        "--gso",
        "OFF",
    )
    assert cfg.listen == [("0.0.0.0", 3478), ("::1", 3479)]
    assert cfg.relay_ip == ["198.51.100.7", "2001:db8::7"]  # IPv4 first
    assert cfg.external_ip == "203.0.113.7"
    assert cfg.ports == (40000, 40999)
    assert cfg.realm == "acme"
    assert cfg.auth_secrets == ["new", "old"]
    assert cfg.users == {"alice": "pw:with:colons", "bob": "x"}
    assert cfg.allow_peer == ["10.0.0.0/8", "fd00::/8"]
    assert cfg.deny_peer == ["203.0.113.0/24"]
    assert cfg.workers == 4
    assert cfg.metrics == ("127.0.0.1", 9100)
    assert cfg.control == "https://control.example.com"
    assert cfg.node_id == "eu-fra-1"
    assert cfg.region == "eu-central"
    assert cfg.node_secret == "node-s3cret"
    assert cfg.heartbeat_interval == 0.5
    assert cfg.max_allocations == 500
    assert cfg.user_quota == 3
    assert cfg.bandwidth == 2_000_000
    assert cfg.drain_timeout == 30.5
    assert cfg.alternate_server == ("2001:db8::9", 3478)
    assert cfg.log_full_ips is True
    assert cfg.log_level == "debug"
    assert cfg.log_json is True
    assert cfg.software == ""
    assert cfg.quality is False and cfg.gso is False


def test_every_config_field_has_a_flag() -> None:
    keys = {o.key for o in OPTIONS}
    renamed = {"auth_secrets": "auth_secret", "users": "user"}
    fields = set(RelayConfig.__dataclass_fields__)
    assert {renamed.get(f, f) for f in fields} == keys
    flags = build_parser().format_help()
    for o in OPTIONS:
        assert o.flag in flags


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("64000", 64000),
        ("500k", 500_000),
        ("500K", 500_000),
        ("2M", 2_000_000),
        ("1.5M", 1_500_000),
        ("1G", 10**9),
        ("2MB/s", 2_000_000),
        ("250kB", 250_000),
    ],
)
def test_bandwidth_suffixes(text: str, expected: int) -> None:
    assert parse_bandwidth(text) == expected
    assert load(*BASE, "--bandwidth", text).bandwidth == expected


def test_relay_ip_defaults_per_family_from_specific_listen_addresses() -> None:
    cfg = load(
        "--listen",
        "0.0.0.0:3478",
        "--listen",
        "192.0.2.1:3479",
        "--listen",
        "[2001:db8::1]:3478",
        "--auth-secret",
        "s",
    )
    assert cfg.relay_ip == ["192.0.2.1", "2001:db8::1"]


def test_peer_ranges_bare_ip_is_single_host() -> None:
    assert load(*BASE, "--allow-peer", "192.0.2.10").allow_peer == ["192.0.2.10/32"]


# --- environment -----------------------------------------------------------------------


def test_env_secret_comma_separated() -> None:
    cfg = load("--listen", "127.0.0.1:3478", env={ENV_AUTH_SECRET: "new, old,,"})
    assert cfg.auth_secrets == ["new", "old"]


def test_flag_secret_wins_over_env() -> None:
    cfg = load(*BASE, env={ENV_AUTH_SECRET: "from-env"})
    assert cfg.auth_secrets == ["s3cret"]


def test_env_secret_that_is_only_commas() -> None:
    msg = fails("--listen", "127.0.0.1:3478", env={ENV_AUTH_SECRET: " , "})
    assert msg == f"{ENV_AUTH_SECRET}: no secret given (empty value)"


def test_load_config_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_AUTH_SECRET, "a,b")
    assert load_config(["--listen", "127.0.0.1:3478"]).auth_secrets == ["a", "b"]


# --- TOML file -------------------------------------------------------------------------

FULL_TOML = """
[relay]
listen = ["0.0.0.0:3478", "[::]:3478"]
relay_ip = ["198.51.100.7"]
external_ip = "203.0.113.7"
ports = "50000-50999"
realm = "acme"
auth_secret = ["file-new", "file-old"]
user = ["alice:pw"]
allow_peer = ["10.1.0.0/16"]
deny_peer = []
workers = 2
metrics = "127.0.0.1:9100"
control = "http://127.0.0.1:8080"
node_id = "n1"
region = "us-east"
node_secret = "file-node"
heartbeat_interval = 2
max_allocations = 100
user_quota = 5
bandwidth = "500k"
drain_timeout = 60
alternate_server = "198.51.100.8:3478"
log_full_ips = true
log_level = "warning"
log_json = true
software = "X"
quality = "off"
gso = false

[control]
listen = "127.0.0.1:8080"
"""


def test_toml_every_key(tmp_path: Path) -> None:
    cfg = load("--config", write(tmp_path, FULL_TOML))
    assert cfg.listen == [("0.0.0.0", 3478), ("::", 3478)]
    assert cfg.relay_ip == ["198.51.100.7"]
    assert cfg.external_ip == "203.0.113.7"
    assert cfg.ports == (50000, 50999)
    assert cfg.realm == "acme"
    assert cfg.auth_secrets == ["file-new", "file-old"]
    assert cfg.users == {"alice": "pw"}
    assert cfg.allow_peer == ["10.1.0.0/16"]
    assert cfg.deny_peer == []
    assert cfg.workers == 2
    assert cfg.metrics == ("127.0.0.1", 9100)
    assert cfg.control == "http://127.0.0.1:8080"
    assert (cfg.node_id, cfg.region) == ("n1", "us-east")
    assert (cfg.node_secret, cfg.heartbeat_interval) == ("file-node", 2.0)
    assert (cfg.max_allocations, cfg.user_quota) == (100, 5)
    assert cfg.bandwidth == 500_000
    assert cfg.drain_timeout == 60.0
    assert cfg.alternate_server == ("198.51.100.8", 3478)
    assert cfg.log_full_ips is True and cfg.log_json is True
    assert cfg.log_level == "warning"
    assert cfg.software == "X"
    assert cfg.quality is False and cfg.gso is False


def test_toml_alternative_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[relay]\nlisten = "127.0.0.1:3478"\nports = [40000, 40001]\n'
        'auth_secret = "one"\nbandwidth = 1000\nworkers = 1\n',
    )
    cfg = load("--config", path)
    assert cfg.listen == [("127.0.0.1", 3478)]
    assert cfg.ports == (40000, 40001)
    assert cfg.auth_secrets == ["one"]
    assert cfg.bandwidth == 1000


def test_flags_override_file_and_replace_arrays(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_TOML)
    cfg = load(
        "--config",
        path,
        "--workers",
        "3",
        "--auth-secret",
        "flag",
        "--listen",
        "127.0.0.2:4000",
        "--no-log-full-ips",
        "--realm",
        "override",
    )
    assert cfg.workers == 3
    assert cfg.auth_secrets == ["flag"]  # replaces, does not add to, the file's array
    assert cfg.listen == [("127.0.0.2", 4000)]
    assert cfg.log_full_ips is False
    assert cfg.realm == "override"
    assert cfg.ports == (50000, 50999)  # untouched keys still come from the file


def test_env_wins_over_file_and_flag_over_env(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_TOML)
    assert load("--config", path, env={ENV_AUTH_SECRET: "env"}).auth_secrets == ["env"]
    assert load(
        "--config", path, "--auth-secret", "f", env={ENV_AUTH_SECRET: "env"}
    ).auth_secrets == ["f"]
    assert load("--config", path, env={ENV_NODE_SECRET: "env"}).node_secret == "env"
    assert (
        load("--config", path, "--node-secret", "f", env={ENV_NODE_SECRET: "env"}).node_secret
        == "f"
    )


def test_toml_unknown_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, '[relay]\nauth_secrets = ["x"]\n')
    assert fails("--config", path) == (
        f"{path}: unknown key 'auth_secrets' in [relay] (did you mean 'auth_secret' or 'unauth_rate' or 'node_secret'?)"
    )


def test_toml_unknown_key_without_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "[relay]\nzzz = 1\n")
    assert fails("--config", path) == f"{path}: unknown key 'zzz' in [relay]"


def test_toml_key_outside_relay_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = ["127.0.0.1:3478"]\n')
    assert fails("--config", path) == f"{path}: key 'listen' must be inside the [relay] table"


def test_toml_misspelt_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[rely]\nworkers = 1\n")
    assert (
        fails("--config", path) == f"{path}: unknown top-level key 'rely' (did you mean 'relay'?)"
    )


def test_toml_wrong_types(tmp_path: Path) -> None:
    path = write(tmp_path, '[relay]\nworkers = "many"\n')
    assert fails("--config", path, *BASE) == f"{path} [relay] workers: 'many' is not a whole number"
    path = write(tmp_path, "[relay]\nlisten = 3478\n")
    assert (
        fails("--config", path)
        == f"{path} [relay] listen: expected an array of strings, got an integer"
    )
    path = write(tmp_path, '[relay]\nlog_full_ips = "yes"\n')
    assert (
        fails("--config", path, *BASE)
        == f"{path} [relay] log_full_ips: expected true or false, got str"
    )
    path = write(tmp_path, "[relay]\nworkers = true\n")
    assert (
        fails("--config", path, *BASE)
        == f"{path} [relay] workers: expected an integer, got a boolean"
    )


def test_toml_missing_and_invalid_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    assert fails("--config", missing) == f"--config: file {missing!r} does not exist"
    bad = write(tmp_path, "[relay\n")
    assert fails("--config", bad).startswith(f"--config: {bad!r} is not valid TOML: ")


def test_toml_error_names_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[relay]\nports = "9-1"\n')
    assert (
        fails("--config", path, *BASE)
        == f"{path} [relay] ports: '9-1': LOW 9 is greater than HIGH 1"
    )


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--listen", "127.0.0.1:70000"],
            "--listen: '127.0.0.1:70000' has port 70000 out of range 1-65535",
        ),
        (["--listen", "127.0.0.1:0"], "--listen: '127.0.0.1:0' has port 0 out of range 1-65535"),
        (
            ["--listen", "127.0.0.1:http"],
            "--listen: '127.0.0.1:http' has a bad port 'http'; a port is a number 1-65535",
        ),
        (
            ["--listen", "127.0.0.1"],
            "--listen: '127.0.0.1' has no port; expected HOST:PORT, e.g. 0.0.0.0:3478",
        ),
        (
            ["--listen", "::1:3478"],
            "--listen: '::1:3478': put an IPv6 address in brackets, e.g. [::1]:3478",
        ),
        (["--listen", "[::1]3478"], "--listen: '[::1]3478' is not [IPV6]:PORT, e.g. [::1]:3478"),
        (
            ["--listen", "[127.0.0.1]:3478"],
            "--listen: '[127.0.0.1]:3478': only IPv6 addresses go in brackets",
        ),
        (
            ["--listen", "localhost:3478"],
            "--listen: 'localhost:3478': host 'localhost' is not an IP address (names are not resolved)",
        ),
        (
            ["--listen", "127.0.0.1:3478", "--listen", "127.0.0.1:3478"],
            "--listen: 127.0.0.1:3478 is given twice",
        ),
        (["--ports", "6000-5000"], "--ports: '6000-5000': LOW 6000 is greater than HIGH 5000"),
        (["--ports", "5000"], "--ports: '5000' is not LOW-HIGH, e.g. 49152-65535"),
        (["--ports", "5000-99999"], "--ports: '5000-99999' has port 99999 out of range 1-65535"),
        (
            ["--ports", "50000-50003", "--workers", "3"],
            "--ports: 50000-50003 has 4 ports, too few for 3 workers (each needs at least 2); widen the range or lower --workers",
        ),
        (["--workers", "0"], "--workers: 0 is too small; the minimum is 1"),
        (["--workers", "two"], "--workers: 'two' is not a whole number"),
        (
            ["--relay-ip", "relay.example.com"],
            "--relay-ip: 'relay.example.com' is not an IP address",
        ),
        (
            ["--relay-ip", "192.0.2.1", "--relay-ip", "192.0.2.2"],
            "--relay-ip: two IPv4 relay addresses (192.0.2.1 and 192.0.2.2); give at most one IPv4 and one IPv6",
        ),
        (
            ["--relay-ip", "2001:db8::1", "--relay-ip", "2001:db8::2"],
            "--relay-ip: two IPv6 relay addresses (2001:db8::1 and 2001:db8::2); give at most one IPv4 and one IPv6",
        ),
        (
            ["--relay-ip", "0.0.0.0"],
            "--relay-ip: '0.0.0.0' cannot be a relay address; give the address of an interface peers can reach",
        ),
        (["--external-ip", "nat"], "--external-ip: 'nat' is not an IP address"),
        (
            ["--external-ip", "2001:db8::5"],
            "--external-ip: 2001:db8::5 is IPv6 but no relay IP (127.0.0.1) is IPv6",
        ),
        (
            ["--allow-peer", "10.0.0.0/33"],
            "--allow-peer: '10.0.0.0/33' is not a CIDR range, e.g. 10.0.0.0/8 or fd00::/8",
        ),
        (
            ["--deny-peer", "everything"],
            "--deny-peer: 'everything' is not a CIDR range, e.g. 10.0.0.0/8 or fd00::/8",
        ),
        (
            ["--allow-peer", "10.1.2.3/8"],
            "--allow-peer: '10.1.2.3/8' has host bits set; did you mean 10.0.0.0/8?",
        ),
        (["--user", "alice"], "--user: expected NAME:PASSWORD with both parts non-empty"),
        (["--user", ":pw"], "--user: expected NAME:PASSWORD with both parts non-empty"),
        (["--user", "a:1", "--user", "a:2"], "--user: user 'a' is given twice"),
        (
            ["--bandwidth", "fast"],
            "--bandwidth: 'fast' is not a rate; give bytes per second with an optional k, M or G suffix, e.g. 2M or 500k (0 = no cap)",
        ),
        (
            ["--bandwidth", "-5"],
            "--bandwidth: '-5' is not a rate; give bytes per second with an optional k, M or G suffix, e.g. 2M or 500k (0 = no cap)",
        ),
        (["--drain-timeout", "soon"], "--drain-timeout: 'soon' is not a number of seconds"),
        (
            ["--drain-timeout", "-1"],
            "--drain-timeout: '-1' must be a finite number of seconds, 0 or more",
        ),
        (
            ["--drain-timeout", "nan"],
            "--drain-timeout: 'nan' must be a finite number of seconds, 0 or more",
        ),
        (["--max-allocations", "0"], "--max-allocations: 0 is too small; the minimum is 1"),
        (["--user-quota", "-1"], "--user-quota: -1 is too small; the minimum is 0"),
        (
            ["--metrics", "9100"],
            "--metrics: '9100' has no port; expected HOST:PORT, e.g. 0.0.0.0:3478",
        ),
        (
            ["--alternate-server", "0.0.0.0:3478"],
            "--alternate-server: '0.0.0.0:3478' is a wildcard address; give the other relay's address",
        ),
        (
            ["--control", "control.example.com"],
            "--control: 'control.example.com' is not an http(s) URL, e.g. https://control.example.com",
        ),
        (
            ["--heartbeat-interval", "0.1"],
            "--heartbeat-interval: '0.1' is out of range; give 0.2 to 60 seconds",
        ),
        (
            ["--heartbeat-interval", "61"],
            "--heartbeat-interval: '61' is out of range; give 0.2 to 60 seconds",
        ),
        (
            ["--heartbeat-interval", "often"],
            "--heartbeat-interval: 'often' is not a number of seconds",
        ),
        (
            ["--heartbeat-interval", "inf"],
            "--heartbeat-interval: 'inf' must be a finite number of seconds, 0 or more",
        ),
        (["--node-secret", " "], "--node-secret: no secret given (empty value)"),
        (
            ["--node-id", "a b"],
            "--node-id: 'a b' is not valid; use 1-64 letters, digits, '.', '_' or '-'",
        ),
        (
            ["--region", "EU"],
            "--region: 'EU' is not valid; use 1-32 of a-z, 0-9 and '-', starting with a letter, e.g. eu or us-east",
        ),
        (
            ["--region", "1eu"],
            "--region: '1eu' is not valid; use 1-32 of a-z, 0-9 and '-', starting with a letter, e.g. eu or us-east",
        ),
        (["--realm", ""], "--realm: must not be empty"),
        (["--gso", "yes"], "--gso: 'yes' is not a switch; use on or off"),
        (
            ["--log-level", "loud"],
            "--log-level: 'loud' is not a log level; use one of debug, info, warning, error",
        ),
    ],
)
def test_bad_flag_values(flags: list[str], message: str) -> None:
    assert fails(*BASE, *flags) == message


def test_unknown_flag_and_missing_value() -> None:
    assert (
        fails(*BASE, "--listn", "x")
        == "unrecognized arguments: --listn x (see clickacall relay --help)"
    )
    assert (
        fails(*BASE, "--workers")
        == "argument --workers: expected one argument (see clickacall relay --help)"
    )


def test_no_credentials() -> None:
    msg = fails("--listen", "127.0.0.1:3478")
    assert msg.startswith("no credentials: give --auth-secret SECRET")
    assert ENV_AUTH_SECRET in msg and "--user NAME:PASSWORD" in msg


def test_control_needs_a_node_secret() -> None:
    control = ["--control", "http://127.0.0.1:8080"]
    msg = fails(*BASE, *control)
    assert msg == (
        f"--control needs a node secret: set {ENV_NODE_SECRET} (or give --node-secret SECRET, "
        "or node_secret in the [relay] table of --config)"
    )
    assert load(*BASE, *control, env={ENV_NODE_SECRET: "n"}).node_secret == "n"
    assert fails(*BASE, *control, env={ENV_NODE_SECRET: "  "}) == msg  # blank: not given
    assert load(*BASE).heartbeat_interval == 5.0 and load(*BASE).node_secret is None


def test_control_needs_an_address_to_advertise() -> None:
    msg = fails(
        "--listen",
        "[::]:3478",
        "--relay-ip",
        "192.0.2.1",
        "--auth-secret",
        "s",
        "--control",
        "http://c",
        "--node-secret",
        "n",
    )
    assert msg.startswith("--control: no address to advertise to clients")


@pytest.mark.parametrize(
    ("flags", "urls"),
    [
        (
            ["--listen", "127.0.0.1:3478"],
            ["turn:127.0.0.1:3478?transport=udp", "stun:127.0.0.1:3478"],
        ),
        (
            ["--listen", "0.0.0.0:3478", "--relay-ip", "192.0.2.7"],
            ["turn:192.0.2.7:3478?transport=udp", "stun:192.0.2.7:3478"],
        ),
        (
            ["--listen", "10.0.0.5:3478", "--external-ip", "203.0.113.7"],
            ["turn:203.0.113.7:3478?transport=udp", "stun:203.0.113.7:3478"],
        ),
        (
            [
                "--listen",
                "0.0.0.0:3478",
                "--listen",
                "[::]:3479",
                "--relay-ip",
                "192.0.2.7",
                "--relay-ip",
                "2001:db8::7",
            ],
            [
                "turn:192.0.2.7:3478?transport=udp",
                "turn:[2001:db8::7]:3479?transport=udp",
                "stun:192.0.2.7:3478",
                "stun:[2001:db8::7]:3479",
            ],
        ),
        (
            ["--listen", "[::1]:3478", "--listen", "127.0.0.1:3478"],
            [
                "turn:[::1]:3478?transport=udp",
                "turn:127.0.0.1:3478?transport=udp",
                "stun:[::1]:3478",
                "stun:127.0.0.1:3478",
            ],
        ),
    ],
)
def test_advertised_urls(flags: list[str], urls: list[str]) -> None:
    assert advertised_urls(load(*flags, "--auth-secret", "s")) == urls


def test_static_user_alone_is_enough() -> None:
    assert load("--listen", "127.0.0.1:3478", "--user", "u:p").users == {"u": "p"}


def test_wildcard_listen_needs_relay_ip() -> None:
    msg = fails("--auth-secret", "s")  # default listen 0.0.0.0:3478
    assert msg.startswith(
        "--relay-ip is required when --listen is a wildcard address (0.0.0.0:3478)"
    )
    assert load("--auth-secret", "s", "--relay-ip", "192.0.2.1").relay_ip == ["192.0.2.1"]


def test_value_errors_come_before_cross_checks() -> None:
    # A malformed value is reported even when credentials and the relay IP are missing too.
    assert fails("--ports", "2-1") == "--ports: '2-1': LOW 2 is greater than HIGH 1"


def test_errors_never_echo_passwords() -> None:
    msg = fails(*BASE, "--user", "hunter2")
    assert "hunter2" not in msg
    assert re.search(r"NAME:PASSWORD", msg)


def test_user_quota_zero_means_no_cap() -> None:
    assert load(*BASE, "--user-quota", "0").user_quota == 0


def test_readme_reference_lists_every_flag_and_key() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for opt in OPTIONS:
        assert f"`{opt.flag}" in readme, opt.flag
        assert f"`{opt.key}`" in readme, opt.key


def test_readme_defaults_are_the_config_defaults() -> None:
    """The reference table's default column says what RelayConfig says (the one place)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text().splitlines()
    for opt in OPTIONS:
        (row,) = [r for r in readme if r.startswith(f"| `{opt.flag}") and f"/ `{opt.key}` |" in r]
        assert row.split(" | ")[1].strip("`") == opt.default_text, opt.flag


def test_help_shows_each_default_once() -> None:
    help_text = build_parser().format_help()
    assert "(default: 49152-65535)" in help_text and "(default: 0.0.0.0:3478)" in help_text
    for opt in OPTIONS:
        assert opt.help_text.count("(default") == 1, opt.key


# --- TCP and TLS listeners -----------------------------------------------------------


def test_stream_listeners_and_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "relay.pem"
    cert.write_text("not parsed here: the worker loads it")
    cfg = load(
        *BASE,
        "--listen-tcp",
        "127.0.0.1:3478",
        "--listen-tls",
        "127.0.0.1:443",
        "--listen-tls",
        "[::1]:5349",
        "--tls-cert",
        str(cert),
    )
    assert cfg.listen_tcp == [("127.0.0.1", 3478)]
    assert cfg.listen_tls == [("127.0.0.1", 443), ("::1", 5349)]
    assert cfg.tls_cert == str(cert) and cfg.tls_key is None
    assert load(*BASE).listen_tcp == [] and load(*BASE).listen_tls == []


def test_stream_listeners_from_the_file(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c")
    key.write_text("k")
    path = write(
        tmp_path,
        f'[relay]\nlisten_tcp = ["127.0.0.1:3478"]\nlisten_tls = ["127.0.0.1:443"]\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\ntls_name = "turn.example.com"\n'
        "stream_max_connections = 500\nstream_max_per_source = 20\n"
        "tls_handshake_timeout = 3\nstream_idle_timeout = 30\nstream_max_message = 2048\n"
        "stream_partial_timeout = 2.5\nstream_send_buffer = 32768\n",
    )
    cfg = load(*BASE, "--config", path)
    assert cfg.tls_key == str(key) and cfg.tls_name == "turn.example.com"
    assert (cfg.stream_max_connections, cfg.stream_max_per_source) == (500, 20)
    assert (cfg.tls_handshake_timeout, cfg.stream_idle_timeout) == (3.0, 30.0)
    assert (cfg.stream_max_message, cfg.stream_partial_timeout) == (2048, 2.5)
    assert cfg.stream_send_buffer == 32768


def test_tls_needs_a_certificate_and_the_certificate_a_listener(tmp_path: Path) -> None:
    msg = fails(*BASE, "--listen-tls", "127.0.0.1:443")
    assert msg.startswith("--listen-tls needs a certificate: give --tls-cert FILE")
    msg = fails(*BASE, "--listen-tls", "127.0.0.1:443", "--tls-cert", str(tmp_path / "none.pem"))
    assert msg == f"--tls-cert: file {str(tmp_path / 'none.pem')!r} does not exist"
    (tmp_path / "c.pem").write_text("c")
    msg = fails(*BASE, "--tls-cert", str(tmp_path / "c.pem"))
    assert msg == "--tls-cert is only used with --listen-tls, which is not given"


def test_tcp_and_tls_listeners_need_their_own_ports(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("c")
    msg = fails(
        *BASE,
        "--listen-tcp",
        "127.0.0.1:443",
        "--listen-tls",
        "127.0.0.1:443",
        "--tls-cert",
        str(tmp_path / "c.pem"),
    )
    assert "127.0.0.1:443 is given twice" in msg
    # UDP and TCP on the same port number are two different sockets: fine
    assert load(*BASE, "--listen-tcp", "127.0.0.1:3478").listen_tcp == [("127.0.0.1", 3478)]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--stream-max-message", "100", "the minimum is 1024"),
        ("--stream-max-message", "70000", "the maximum is 65540"),
        ("--stream-send-buffer", "1000", "the minimum is 4096"),
        ("--stream-max-connections", "0", "the minimum is 1"),
        ("--stream-max-per-source", "x", "is not a whole number"),
        ("--tls-handshake-timeout", "0", "out of range; give 0.5 to 3600 seconds"),
        ("--stream-idle-timeout", "nan", "must be a finite number of seconds"),
        ("--stream-partial-timeout", "-1", "must be a finite number of seconds"),
    ],
)
def test_stream_limits_are_checked(flag: str, value: str, expected: str) -> None:
    assert expected in fails(*BASE, flag, value)


def test_tls_name_is_a_host_name(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("c")
    tls = ["--listen-tls", "127.0.0.1:443", "--tls-cert", str(tmp_path / "c.pem")]
    assert "is not valid; use a DNS host name" in fails(*BASE, *tls, "--tls-name", "a b")
    assert load(*BASE, *tls, "--tls-name", "turn.example.com").tls_name == "turn.example.com"


def test_advertised_urls_list_udp_then_tcp_then_tls(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("c")
    cfg = load(
        "--listen",
        "0.0.0.0:3478",
        "--relay-ip",
        "192.0.2.7",
        "--auth-secret",
        "s",
        "--listen-tls",
        "0.0.0.0:443",
        "--listen-tls",
        "0.0.0.0:5349",
        "--listen-tcp",
        "0.0.0.0:3478",
        "--tls-cert",
        str(tmp_path / "c.pem"),
    )
    assert advertised_urls(cfg) == [
        "turn:192.0.2.7:3478?transport=udp",
        "turn:192.0.2.7:3478?transport=tcp",
        "turns:192.0.2.7:443?transport=tcp",
        "turns:192.0.2.7:5349?transport=tcp",
        "stun:192.0.2.7:3478",
    ]
    cfg.tls_name = "turn.example.com"
    assert advertised_urls(cfg)[2] == "turns:turn.example.com:443?transport=tcp"


def test_unauthenticated_rate_flags_reach_the_turn_core() -> None:
    from relay.node import turn_config

    base = ["--user", "a:b", "--listen", "127.0.0.1:3478"]
    cfg = load_config([*base, "--unauth-rate", "2.5", "--unauth-burst", "7"])
    assert (cfg.unauth_rate, cfg.unauth_burst) == (2.5, 7.0)
    tcfg = turn_config(cfg)
    assert (tcfg.unauth_rate, tcfg.unauth_burst) == (2.5, 7.0)
    assert turn_config(load_config(base)).unauth_rate == 20.0
    for bad in ("-1", "fast", "nan"):
        with pytest.raises(ConfigError, match="--unauth-rate"):
            load_config([*base, "--unauth-rate", bad])


def test_multiplex_peer_is_off_by_default_and_opt_in(tmp_path: Path) -> None:
    assert load(*BASE).multiplex_peer is False
    assert load(*BASE, "--multiplex-peer").multiplex_peer is True
    toml = write(tmp_path, "[relay]\nmultiplex_peer = true\n")
    assert load(*BASE, "--config", toml).multiplex_peer is True


def test_coalesce_us_is_off_by_default_bounded_and_named_in_errors(tmp_path: Path) -> None:
    assert load(*BASE).coalesce_us == 0
    assert load(*BASE, "--coalesce-us", "50").coalesce_us == 50
    assert (
        load(*BASE, "--config", write(tmp_path, "[relay]\ncoalesce_us = 200\n")).coalesce_us == 200
    )
    assert "--coalesce-us" in fails(*BASE, "--coalesce-us", "-1")
    assert "the maximum is 1000" in fails(*BASE, "--coalesce-us", "5000")
    assert "--coalesce-us" in fails(*BASE, "--coalesce-us", "fast")
