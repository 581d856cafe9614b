"""The relay configuration's value checkers: each takes a raw value and where it came from
(a flag or a TOML key, for the message) and returns the checked value or raises
:class:`ConfigError` with one line naming the flag or key and the bad value. Used by
:mod:`relay.config`, which re-exports :class:`ConfigError` and :func:`parse_bandwidth`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

Address = tuple[str, int]
Raw = tuple[object, str]  # a value as given, and where it came from (for messages)


class ConfigError(ValueError):
    """A configuration value a person gave is wrong; the message says which and why."""


def where_of(raw: Mapping[str, Raw], key: str, default: str) -> str:
    return raw[key][1] if key in raw else default


def items_of(item: Raw) -> list[Raw]:
    """The elements of a repeatable value (a list from argparse or TOML; a lone string is
    taken as a one-element list)."""
    value, where = item
    if isinstance(value, str):
        return [(value, where)]
    if isinstance(value, list):
        return [(v, where) for v in value]
    raise ConfigError(f"{where}: expected an array of strings, got {toml_type(value)}")


def toml_type(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        dict: "a table",
        list: "an array",
    }.get(type(value), type(value).__name__)


def check_text(value: object, where: str, *, max_len: int = 1024, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {toml_type(value)}")
    if not value and not allow_empty:
        raise ConfigError(f"{where}: must not be empty")
    if len(value) > max_len:
        raise ConfigError(f"{where}: longer than {max_len} characters")
    if any(c in value for c in "\r\n\0"):
        raise ConfigError(f"{where}: {value!r} contains a control character")
    return value


def check_token(value: object, where: str, *, pattern: str, what: str) -> str:
    text = check_text(value, where)
    if not re.fullmatch(pattern, text):
        raise ConfigError(f"{where}: {text!r} is not valid; use {what}")
    return text


def check_int(value: object, where: str, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    else:
        raise ConfigError(f"{where}: {value!r} is not a whole number")
    if number < minimum:
        raise ConfigError(f"{where}: {number} is too small; the minimum is {minimum}")
    return number


def check_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected true or false, got {toml_type(value)}")


def check_on_off(value: object, where: str) -> bool:
    """A switch given as on/off (flag or TOML string) or a TOML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "off"):
        return value.strip().lower() == "on"
    raise ConfigError(f"{where}: {value!r} is not a switch; use on or off")


def check_seconds(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number of seconds, got a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a number of seconds") from None
    else:
        raise ConfigError(f"{where}: expected a number of seconds, got {toml_type(value)}")
    if not number >= 0 or number == float("inf"):  # also rejects NaN
        raise ConfigError(f"{where}: {value!r} must be a finite number of seconds, 0 or more")
    return number


def check_number(value: object, where: str, what: str) -> float:
    """A finite number, 0 or more, given as a TOML number or a string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a number of {what}") from None
    else:
        raise ConfigError(f"{where}: expected a number of {what}, got {toml_type(value)}")
    if not 0 <= number < float("inf"):  # also rejects NaN
        raise ConfigError(f"{where}: {value!r} must be a finite number of {what}, 0 or more")
    return number


def check_int_within(value: object, where: str, bounds: tuple[int, int]) -> int:
    number = check_int(value, where, minimum=bounds[0])
    if number > bounds[1]:
        raise ConfigError(f"{where}: {number} is too large; the maximum is {bounds[1]}")
    return number


def check_readable_file(value: object, where: str) -> str:
    path = check_text(value, where).strip()
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"{where}: file {path!r} does not exist") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path!r}: {e.strerror or e}") from None
    return path


def check_seconds_within(value: object, where: str, bounds: tuple[float, float]) -> float:
    number = check_seconds(value, where)
    low, high = bounds
    if not low <= number <= high:
        raise ConfigError(f"{where}: {value!r} is out of range; give {low:g} to {high:g} seconds")
    return number


_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:b(?:/s|ps)?)?", re.IGNORECASE)
_RATE_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_bandwidth(value: str) -> int:
    """``"2M"`` -> 2_000_000 bytes/s; ``"500k"``, ``"1.5M"``, ``"64000"``. ValueError if bad."""
    m = _RATE.fullmatch(value.strip())
    if not m:
        raise ValueError(value)
    return int(float(m.group(1)) * _RATE_SCALE[m.group(2).lower()])


def check_bandwidth(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"{where}: {value} must not be negative")
        return value
    if isinstance(value, str):
        try:
            return parse_bandwidth(value)
        except ValueError:
            pass
    raise ConfigError(
        f"{where}: {value!r} is not a rate; give bytes per second with an optional "
        "k, M or G suffix, e.g. 2M or 500k (0 = no cap)"
    )


def check_port(text: str, where: str, whole: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"{where}: {whole!r} has a bad port {text!r}; a port is a number 1-65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}: {whole!r} has port {port} out of range 1-65535")
    return port


def check_address(value: object, where: str) -> Address:
    """``"0.0.0.0:3478"`` or ``"[::1]:3478"`` -> (host, port); the host must be an IP."""
    text = check_text(value, where).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"{where}: {text!r} is not [IPV6]:PORT, e.g. [::1]:3478")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ConfigError(
                f"{where}: {text!r} has no port; expected HOST:PORT, e.g. 0.0.0.0:3478"
            )
        if ":" in host:
            raise ConfigError(
                f"{where}: {text!r}: put an IPv6 address in brackets, e.g. [::1]:3478"
            )
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"{where}: {text!r}: host {host!r} is not an IP address (names are not resolved)"
        ) from None
    if text.startswith("[") and ip.version != 6:
        raise ConfigError(f"{where}: {text!r}: only IPv6 addresses go in brackets")
    return (str(ip), check_port(port, where, text))


def fmt_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_ip(value: object, where: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = check_text(value, where).strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an IP address") from None


def relay_ips_of(item: Raw) -> list[str]:
    seen: dict[int, str] = {}
    for value, where in items_of(item):
        ip = check_ip(value, where)
        if ip.is_unspecified or ip.is_multicast:
            raise ConfigError(
                f"{where}: {value!r} cannot be a relay address; give the address of an interface "
                "peers can reach"
            )
        if ip.version in seen:
            raise ConfigError(
                f"{where}: two IPv{ip.version} relay addresses ({seen[ip.version]} and {ip}); "
                "give at most one IPv4 and one IPv6"
            )
        seen[ip.version] = str(ip)
    return [seen[v] for v in (4, 6) if v in seen]


def default_relay_ips(listen: list[Address]) -> list[str]:
    """With no --relay-ip, use the first specific listen address of each family."""
    seen: dict[int, str] = {}
    for host, _ in listen:
        ip = ipaddress.ip_address(host)
        if not ip.is_unspecified and ip.version not in seen:
            seen[ip.version] = str(ip)
    if not seen:
        raise ConfigError(
            "--relay-ip is required when --listen is a wildcard address "
            f"({', '.join(fmt_address(a) for a in listen)}): give the address relayed traffic uses, "
            "e.g. --relay-ip 203.0.113.7, or listen on a specific IP"
        )
    return [seen[v] for v in (4, 6) if v in seen]


def check_port_range(value: object, where: str) -> tuple[int, int]:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        text = f"{value[0]}-{value[1]}"
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ConfigError(f'{where}: expected "LOW-HIGH", e.g. "49152-65535"')
    low_s, sep, high_s = text.partition("-")
    if not sep:
        raise ConfigError(f"{where}: {text!r} is not LOW-HIGH, e.g. 49152-65535")
    low, high = check_port(low_s.strip(), where, text), check_port(high_s.strip(), where, text)
    if low > high:
        raise ConfigError(f"{where}: {text!r}: LOW {low} is greater than HIGH {high}")
    return (low, high)


def check_cidr(value: object, where: str) -> str:
    text = check_text(value, where).strip()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(
            f"{where}: {text!r} is not a CIDR range, e.g. 10.0.0.0/8 or fd00::/8"
        ) from None
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise ConfigError(f"{where}: {text!r} has host bits set; did you mean {net}?")
    return str(net)


def check_user(value: object, where: str) -> tuple[str, str]:
    text = check_text(value, where, max_len=1024)
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise ConfigError(f"{where}: expected NAME:PASSWORD with both parts non-empty")
    if len(name.encode()) > 512:
        raise ConfigError(f"{where}: user name longer than 512 bytes")
    return name, password


def check_url(value: object, where: str) -> str:
    text = check_text(value, where).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{where}: {text!r} is not an http(s) URL, e.g. https://control.example.com"
        )
    return text.rstrip("/")
