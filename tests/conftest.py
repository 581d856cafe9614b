"""Shared fixtures.

Live relays: ``relay``, ``relay6``, ``relay_deny`` and ``relay_deny6`` start a TURN
relay subprocess once per test module (see tests/relayproc.py). Which relay is
chosen by ``CLICKACALL_TEST_RELAY=ours|coturn`` (default: ours). When a test
that used one fails, the relay's log lines written during that test are added
to the report as a "relay log" section.

In parallel (``pytest -n N``, pytest-xdist, as ``make test`` runs the suite): each test file
runs whole in one worker process (``SAME_WORKER`` files share one), the files with ``slow``
tests handed out first, so the longest ones do not start last. Tests marked ``serial`` (speed,
CPU ratios, timing) fail at once in a worker: they run in a pytest of their own, ``pytest -m
serial``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.relayproc import (
    RelayProcess,
    RelaySpec,
    have_ipv6_loopback,
    make_certificate,
    relay_impl,
)

# A relay started with --control and no --spool keeps its summary spool under the state
# directory (relay/spool.py default_dir): point that at a scratch directory for the whole run,
# subprocesses included, so tests neither write into the home directory nor find a spool an
# earlier run left behind.
os.environ.pop("STATE_DIRECTORY", None)
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="clickacall-test-state-")
atexit.register(shutil.rmtree, os.environ["XDG_STATE_HOME"], ignore_errors=True)

_log_marks = pytest.StashKey[dict[int, int]]()


def _start(
    tmp_path_factory: pytest.TempPathFactory, name: str, spec: RelaySpec
) -> Iterator[RelayProcess]:
    proc = RelayProcess(spec, tmp_path_factory.mktemp(f"{name}-{relay_impl()}"))
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def _need_ipv6() -> None:
    if not have_ipv6_loopback():
        pytest.skip("this system has no IPv6 loopback (::1)")


@pytest.fixture(scope="session")
def relay_kind() -> str:
    """``"ours"`` or ``"coturn"``, from CLICKACALL_TEST_RELAY."""
    return relay_impl()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay on 127.0.0.1 relaying from 127.0.0.1, loopback peers allowed."""
    yield from _start(tmp_path_factory, "relay", RelaySpec())


@pytest.fixture(scope="module")
def relay6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay listening on [::1], relaying from 127.0.0.1 and ::1, loopback peers allowed."""
    _need_ipv6()
    spec = RelaySpec(
        listen=("::1",),
        relay_ips=("127.0.0.1", "::1"),
        allow_peers=("127.0.0.0/8", "::1/128"),
    )
    yield from _start(tmp_path_factory, "relay6", spec)


@pytest.fixture(scope="module")
def relay_deny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay on 127.0.0.1 with the default peer policy (no --allow-peer)."""
    yield from _start(tmp_path_factory, "deny", RelaySpec(allow_peers=()))


@pytest.fixture(scope="module")
def relay_deny6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay on [::1] relaying from 127.0.0.1 and ::1, default peer policy."""
    _need_ipv6()
    spec = RelaySpec(listen=("::1",), relay_ips=("127.0.0.1", "::1"), allow_peers=())
    yield from _start(tmp_path_factory, "deny6", spec)


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(certificate, key): a self-signed P-256 certificate for localhost, 127.0.0.1, ::1."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    make_certificate(cert, key)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def relay_streams(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: tuple[str, str]
) -> Iterator[RelayProcess]:
    """A relay on 127.0.0.1 serving TURN over UDP, TCP (same port) and TLS (``tls_port``)."""
    spec = RelaySpec(tcp=True, tls=tls_certificate)
    yield from _start(tmp_path_factory, "streams", spec)


@pytest.fixture(scope="module")
def relay_streams6(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: tuple[str, str]
) -> Iterator[RelayProcess]:
    """A relay on [::1] (UDP, TCP, TLS) relaying from 127.0.0.1 and ::1, loopback peers
    allowed: IPv6 relayed addresses and dual allocations."""
    _need_ipv6()
    spec = RelaySpec(
        listen=("::1",),
        relay_ips=("127.0.0.1", "::1"),
        allow_peers=("127.0.0.0/8", "::1/128"),
        tcp=True,
        tls=tls_certificate,
    )
    yield from _start(tmp_path_factory, "streams6", spec)


def _relays(item: pytest.Item) -> list[RelayProcess]:
    funcargs = getattr(item, "funcargs", {}) or {}
    return [v for v in funcargs.values() if isinstance(v, RelayProcess)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    relays = _relays(item)
    if not relays:
        return report
    if call.when == "setup":
        item.stash[_log_marks] = {id(r): r.log_size() for r in relays}
    if report.failed:
        marks = item.stash.get(_log_marks, {})
        for r in relays:
            text = r.log_tail(200, since=marks.get(id(r), 0))
            state = "running" if r.running() else f"exited rc={r.proc and r.proc.returncode}"
            report.sections.append(
                (f"relay log ({r.impl}, {state}, {r.log_path})", text or "(empty)")
            )
    return report


# --- parallel runs (pytest-xdist) ---------------------------------------------------------------


# Files whose tests must never run at the same time as each other's: one worker runs them one
# after the other. test_cli and test_wheel run `clickacall up`, which takes UDP 3478 and TCP 5349
# when they are free (found free, bound a moment later): two at once could both pick them.
SAME_WORKER = {"tests/test_cli.py": "clickacall up", "tests/test_wheel.py": "clickacall up"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadfile, with the files of :data:`SAME_WORKER` as one. (Not xdist_group marks
    and --dist loadgroup: with pytest 9.2 they group nothing, pytest-xdist issue 1386.)"""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(path, path)

    return Scheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker: the files with slow tests first, so the longest do not start last (a stable
    sort: the other files, and each file's tests, keep their order)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {item.nodeid.split("::", 1)[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("serial") is not None and os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail(
            "marked serial: it measures speed, CPU or timing and needs the machine to itself; "
            "run it without -n (make test runs `pytest -m serial` on its own)",
            pytrace=False,
        )
