"""Property-based tests of the relay's configuration (relay/config.py): whatever a TOML file's
``[relay]`` table holds, loading it gives a RelayConfig or a ConfigError of one line that
names the key, never another exception."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.config import OPTIONS_BY_KEY, ConfigError, RelayConfig, build_config, read_toml

KEYS = sorted(OPTIONS_BY_KEY)
BASE: dict[str, object] = {"listen": ["127.0.0.1:3478"], "auth_secret": ["s3cret"]}

# what tomllib can hand over: every TOML type, with the awkward corners of each
scalars = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "0", "-1", "on", "off", "127.0.0.1:0", "[::1]:3478", "1-2", "a:b"]),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _load(table: dict[str, object]) -> RelayConfig | str:
    try:
        return build_config({}, table, {}, file_label="relay.toml")
    except ConfigError as e:
        message = str(e)
        assert message and "\n" not in message, repr(message)
        return message


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), value=values)
def test_one_hostile_key_is_named(key: str, value: object) -> None:
    got = _load({**BASE, key: value})
    if isinstance(got, str):
        flag = OPTIONS_BY_KEY[key].flag
        assert key in got or flag in got, (key, value, got)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_arbitrary_tables_give_a_config_or_a_config_error(table: dict[str, Any]) -> None:
    _load({**BASE, **table})
    _load(table)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


toml_lines = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(KEYS), st.one_of(scalars, st.lists(scalars, max_size=3))).map(
            lambda kv: f"{kv[0]} = {_toml_value(kv[1])}"
        ),
        st.sampled_from(["[relay]", "[control]", "[other]", "[relay.sub]", "x = 1", "= 2", "[["]),
        st.text(max_size=20),
    ),
    max_size=8,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=toml_lines, relay_first=st.booleans())
def test_arbitrary_files_give_a_config_or_a_config_error(
    tmp_path: Path, lines: list[str], relay_first: bool
) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("\n".join((["[relay]"] if relay_first else []) + lines), "utf-8")
    try:
        table = read_toml(str(path))
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return
    _load(table)
