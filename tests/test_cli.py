"""The ``clickacall`` command (clickacall/cli.py) and ``python -m relay``, run as real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clickacall import cli
from relay.config import ENV_AUTH_SECRET, OPTIONS
from tests.upproc import banner_fields, start_up

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != ENV_AUTH_SECRET}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=full_env
    )


def test_python_m_relay_help_lists_every_flag() -> None:
    proc = run("-m", "relay", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: clickacall relay")
    for opt in OPTIONS:
        assert opt.flag in proc.stdout
    assert "--config" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ports", "6000-5000"], "--ports: '6000-5000': LOW 6000 is greater than HIGH 5000"),
        (["--workers", "0"], "--workers: 0 is too small; the minimum is 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        ([], "no credentials: give --auth-secret SECRET"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    proc = run("-m", "relay", "--listen", "127.0.0.1:3478", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("clickacall relay: error: ")
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_toml_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\nlisen = ["127.0.0.1:3478"]\n')
    proc = run("-m", "relay", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        f"clickacall relay: error: {path}: unknown key 'lisen' in [relay] (did you mean 'listen'"
    )
    assert len(proc.stderr.splitlines()) == 1


def test_up_bad_flags_exit_2(tmp_path: Path) -> None:
    proc = run("-m", "clickacall", "up", "--http-port", "eighty")
    assert proc.returncode == 2
    assert proc.stderr.startswith("clickacall up: error: argument --http-port: ")
    assert len(proc.stderr.splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run("-m", "clickacall", "up", "--data", str(blocker / "sub"))
    assert proc.returncode == 2 and "cannot use --data" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_control_bad_flags_exit_2() -> None:
    proc = run("-m", "clickacall", "control", "--listen", "nonsense")
    assert proc.returncode == 2
    assert proc.stderr.startswith("clickacall control: error: --listen 'nonsense'")
    assert len(proc.stderr.splitlines()) == 1


def test_unknown_command_suggests() -> None:
    proc = run("-m", "clickacall", "rely")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "clickacall: error: unknown command 'rely' (did you mean 'relay'?)"
    )


def test_no_command_prints_usage() -> None:
    proc = run("-m", "clickacall")
    assert proc.returncode == 2
    assert "usage: clickacall COMMAND" in proc.stdout
    for name in ("relay", "control", "up", "bench"):
        assert f"  {name} " in proc.stdout


def test_console_script_is_installed() -> None:
    exe = shutil.which("clickacall", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the clickacall console script is not installed in this environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKACALL_")}
    proc = subprocess.run([exe, "control"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2  # no token key: refused with one line
    assert "clickacall control: error:" in proc.stderr


def test_relay_calls_run_node_with_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen = []
    fake = types.ModuleType("relay.node")
    fake.run_node = lambda config: seen.append(config) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "relay.node", fake)
    monkeypatch.setattr("relay.logs.setup_logging", lambda level, json=False: None)
    code = cli.main(["relay", "--listen", "127.0.0.1:3478", "--user", "u:p", "--workers", "1"])
    assert code == 7
    assert len(seen) == 1
    assert seen[0].listen == [("127.0.0.1", 3478)] and seen[0].workers == 1


def test_bench_dispatches_remaining_args(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[tuple[list[str], str]] = []
    fake = types.ModuleType("bench.__main__")
    fake.main = lambda argv, prog: seen.append((argv, prog)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.__main__", fake)
    assert cli.main(["bench", "--quick", "x"]) == 3
    assert seen == [(["--quick", "x"], "clickacall bench")]


def test_logging_is_one_structured_line_per_record() -> None:
    import io
    import logging

    from relay.logs import ContextAdapter, set_worker, setup_logging

    out = io.StringIO()
    setup_logging("info", stream=out)
    set_worker(2)
    try:
        log = ContextAdapter(logging.getLogger("clickacall.relay.test"), alloc="a1")
        log.info("allocated for %s", "203.0.113.x", extra={"note": "two words"})
        log.debug("hidden at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        set_worker("main")
        setup_logging("info")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first = lines[0]
    assert " level=info logger=clickacall.relay.test worker=2 pid=" in first
    assert first.endswith(' msg="allocated for 203.0.113.x" alloc=a1 note="two words"')
    assert lines[1].count("ValueError: boom") == 1 and "exc=" in lines[1]


def test_logging_json_lines() -> None:
    import io
    import json
    import logging

    from relay.logs import setup_logging

    out = io.StringIO()
    setup_logging("debug", json=True, stream=out)
    try:
        logging.getLogger("clickacall.relay.test").debug("x", extra={"alloc": 7})
    finally:
        setup_logging("info")
    record = json.loads(out.getvalue())
    assert record["msg"] == "x" and record["alloc"] == 7 and record["level"] == "debug"
    assert record["logger"] == "clickacall.relay.test" and isinstance(record["pid"], int)


def _start_up(data: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    return start_up([sys.executable, "-m", "clickacall"], data, extra=extra)


def _dashboard_signin(url: str, email: str, password: str) -> Any:
    """Sign in to the dashboard as its pages do: the sign-in form, its POST from our origin,
    then the overview page, whose sign-out form carries the session's CSRF token."""
    import re

    import httpx

    c = httpx.Client(base_url=url, timeout=10)
    r = c.get("/dashboard")
    assert r.status_code == 200 and 'action="/console/signin"' in r.text, r.text
    r = c.post(
        "/console/signin", data={"email": email, "password": password}, headers={"Origin": url}
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard", r.text
    r = c.get("/dashboard")
    assert r.status_code == 200 and "<clickacall-dashboard" in r.text, r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert csrf, r.text
    c.headers.update({"X-CSRF-Token": csrf.group(1), "Origin": url})
    return c


def test_up_runs_a_control_plane_and_a_relay_with_a_demo_tenant(tmp_path: Path) -> None:
    import re
    import signal
    import socket
    import ssl
    import time

    import httpx

    uclient = shutil.which("turnutils_uclient")
    proc, text = _start_up(tmp_path / "data")
    try:
        assert "Press Ctrl-C" in text, text
        up = banner_fields(text)
        ice = up["ice"]
        turn = next(u for u in ice["urls"] if u.startswith("turn:"))
        port = re.fullmatch(r"turn:127\.0\.0\.1:(\d+)\?transport=udp", turn)
        assert port, turn
        expiry = int(ice["username"].split(":")[0])
        assert 23 * 3600 < expiry - time.time() <= 24 * 3600 + 60
        # the relay registered itself, so a visitor's click gets ICE servers pointing at it
        r = httpx.post(f"{up['url']}/v1/links/{up['link']}/calls", timeout=10)
        assert r.status_code == 201, r.text
        assert any(turn in s["urls"] for s in r.json()["iceServers"])
        r = httpx.get(
            f"{up['url']}/v1/ringing",
            timeout=10,
            headers={"Authorization": f"Bearer {up['console']}"},
        )
        assert [c["call"]["id"] for c in r.json()] == [r.json()[0]["call"]["id"]]
        if uclient is not None:  # coturn's client relays through it with those credentials
            run_uc = subprocess.run(
                [
                    uclient,
                    "-y",
                    "-s",
                    "-n",
                    "5",
                    "-p",
                    port.group(1),
                    "-u",
                    ice["username"],
                    "-w",
                    ice["credential"],
                    "127.0.0.1",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert run_uc.returncode == 0, run_uc.stdout[-2000:]
            assert "Total lost packets 0" in run_uc.stdout
        # up.json says where everything is; the demo site is another origin with the button,
        # and the staff member signs in to the console with the password it generated
        state = json.loads((tmp_path / "data" / "up.json").read_text())
        assert state["control_url"] == up["url"]
        assert state["call_url"] == f"{up['url']}/c/{up['link']}"
        assert state["console_url"] == f"{up['url']}/console"
        assert state["embed_html"] == (
            f'<script async src="{up["url"]}/embed.js"></script>\n'
            f'<clickacall-button link="{up["link"]}"></clickacall-button>'
        )
        site = httpx.get(state["demo_site_url"], timeout=10)
        assert site.status_code == 200 and state["embed_html"] in site.text
        assert state["demo_site_url"].rstrip("/") != up["url"]  # another origin
        # ... and the banner prints each of them
        for key in ("call_url", "console_url", "demo_site_url", "staff_email", "staff_password"):
            assert state[key] in text, key
        assert f"control plane   {state['control_url']}" in text
        for line in state["embed_html"].splitlines():
            assert f"\n    {line}\n" in text, line
        assert httpx.get(state["call_url"], timeout=10).status_code == 200
        signin = httpx.post(
            f"{up['url']}/console/signin",
            data={"email": state["staff_email"], "password": state["staff_password"]},
            headers={"Origin": up["url"]},
            timeout=10,
        )
        assert signin.status_code == 303 and "cc_session=" in signin.headers["set-cookie"]
        # the admin signs in to the dashboard with what up printed, and sees the overview
        assert state["dashboard_url"] == f"{up['url']}/dashboard"
        assert f"dashboard       {state['dashboard_url']}" in text
        assert f"(sign in: {state['admin_email']} / {state['admin_password']})" in text
        assert len(state["admin_password"]) >= 20
        dash = _dashboard_signin(up["url"], state["admin_email"], state["admin_password"])
        team = dash.get("/v1/dashboard/staff").json()
        me = next(m for m in team if m["you"])
        assert me["email"] == state["admin_email"] and me["roles"] == ["admin"]
        r = dash.post("/v1/dashboard/keys", json={"name": "up test"})  # with CSRF: a change
        assert r.status_code == 201, r.text
        # two weeks of demo calls: in the call log with quality, in the analytics on many days
        seeded = state["demo_calls"]
        assert seeded > 20 and f"demo calls      {seeded} made-up calls" in text
        key = {"Authorization": f"Bearer {up['key']}"}
        analytics = httpx.get(f"{up['url']}/v1/analytics", headers=key, timeout=10).json()
        assert len([b for b in analytics["buckets"] if b["calls"]]) >= 7, analytics
        assert analytics["totals"]["minutes"] > 0 and analytics["totals"]["bytes"] > 0
        log = httpx.get(
            f"{up['url']}/v1/calllogs", params={"limit": 500}, headers=key, timeout=10
        ).json()["calls"]
        assert len(log) == seeded + 1  # and the click above, still ringing
        assert len({c["link_id"] for c in log}) == 2 and len({c["staff_id"] for c in log}) >= 3
        assert any(c["mos"] is not None and c["from_visitor"]["jitter_ms"] for c in log)
        assert {"ended", "missed", "rejected"} <= {c["outcome"] for c in log}
        shown = dash.get("/v1/dashboard/calls", params={"outcome": "ended"}).json()["calls"]
        assert shown and all(c["mos"] is not None for c in shown)
        # TURN over TCP and TLS too, in that order after UDP, the TLS one with the
        # self-signed certificate up made in its data directory
        kinds = [u.split(":")[0] + "/" + u.rpartition("=")[2] for u in ice["urls"]]
        assert kinds[:3] == ["turn/udp", "turn/tcp", "turns/tcp"], ice["urls"]
        tls = re.fullmatch(r"turns:127\.0\.0\.1:(\d+)\?transport=tcp", ice["urls"][2])
        assert tls, ice["urls"]
        cert = tmp_path / "data" / "relay-cert.pem"
        ctx = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection(("127.0.0.1", int(tls.group(1))), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            assert conn.version() in ("TLSv1.2", "TLSv1.3")
        assert (tmp_path / "data" / "relay-key.pem").stat().st_mode & 0o777 == 0o600
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        # a restart finds the same demo tenant (its key was kept, mode 0600)
        assert (tmp_path / "data" / "up.json").stat().st_mode & 0o777 == 0o600
        proc, again = _start_up(tmp_path / "data")
        assert f"tenant API key  {up['key']}" in again, again
        # the same admin, and the demo calls were not seeded twice
        assert f"(sign in: {state['admin_email']} / {state['admin_password']})" in again
        url = banner_fields(again)["url"]
        r = httpx.get(f"{url}/v1/calllogs", params={"limit": 500}, headers=key, timeout=10)
        log = r.json()["calls"]
        assert len(log) == seeded + 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_without_demo_calls(tmp_path: Path) -> None:
    """``--no-demo-calls``: the demo business starts with an empty call log; its admin
    still signs in to the dashboard."""
    import signal

    import httpx

    proc, text = _start_up(tmp_path / "data", "--no-demo-calls")
    try:
        assert "Press Ctrl-C" in text, text
        up = banner_fields(text)
        assert "demo calls      none (seeded only for a new tenant; --no-demo-calls)" in text
        state = json.loads((tmp_path / "data" / "up.json").read_text())
        assert state["demo_calls"] == 0
        key = {"Authorization": f"Bearer {up['key']}"}
        r = httpx.get(f"{up['url']}/v1/calllogs", headers=key, timeout=10)
        assert r.status_code == 200 and r.json()["calls"] == []
        dash = _dashboard_signin(up["url"], state["admin_email"], state["admin_password"])
        assert dash.get("/v1/dashboard/calls").json()["calls"] == []
        names = sorted(m["name"] for m in dash.get("/v1/dashboard/staff").json())
        assert names == ["Demo admin", "Demo staff"]  # no members made only for demo calls
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_demo_days_flag_is_checked() -> None:
    proc = run("-m", "clickacall", "up", "--demo-days", "0")
    assert proc.returncode == 2
    assert proc.stderr.startswith("clickacall up: error: argument --demo-days: must be 1-90")


def test_control_plane_logs_through_the_shared_setup_as_json() -> None:
    """``clickacall control --log-json``: every line, uvicorn's included, is one JSON record
    in the relay's format (relay/logs.py is both roles' one logging setup)."""
    from tests.controlproc import ControlProcess

    control = ControlProcess(extra_args=["--log-json"]).start()
    try:
        control.bootstrap()
        control.stop(keep=True)
        lines = [line for line in control.output().splitlines() if line.strip()]
    finally:
        control.stop()
    records = [json.loads(line) for line in lines]
    assert records and all({"ts", "level", "logger", "pid", "msg"} <= r.keys() for r in records)
    assert any(r["logger"].startswith("uvicorn") and r["level"] == "info" for r in records)
