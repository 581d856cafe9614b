"""The wheel, installed outside the checkout, runs a click-to-call.

It is built and installed by ``deploy/wheel.sh``, the same steps the Dockerfile runs, into a
fresh virtual environment in a temporary directory; ``clickacall up`` then runs from that
environment with its working directory outside the checkout (so nothing of the source tree can
stand in for a file the wheel forgot), and a visitor's click is answered by the staff member
and relayed through the node with the credentials the control plane issued.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.relayproc import StunClient
from tests.upproc import ROOT, banner_fields, start_up

pytestmark = pytest.mark.slow


def _run(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# The build compiles every extension on one core: about 100 s alone, 6 minutes beside the
# other test processes of `make test` (pytest -n), where it runs niced so that the browser
# tests beside it keep their share of the CPU; hence the longer timeout.
@pytest.mark.timeout(900)
def test_wheel_installs_outside_the_checkout_and_serves_a_call(tmp_path: Path) -> None:
    wheels, venv, data = tmp_path / "wheels", tmp_path / "venv", tmp_path / "data"
    _run(
        "nice",
        "-n",
        "10",
        "sh",
        str(ROOT / "deploy/wheel.sh"),
        "build",
        str(wheels),
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)},
    )
    # the package data is declared, not guessed ("... would be ignored"), and nothing else in
    # setuptools, Cython or the compiler complains: pip shows the backend's output only with
    # -v, which deploy/wheel.sh writes to build.log (pip's own WARNING lines are about this
    # machine's index configuration, not the project)
    log = (wheels / "build.log").read_text()
    assert "Successfully built clickacall" in log, log[-3000:]
    complaints = re.findall(r"^.*(?:[Ww]arning|would be ignored|performance hint).*$", log, re.M)
    assert complaints == [], "\n".join(complaints)
    files = (wheels / "files.txt").read_text()
    for shipped in (
        "relay/observability/alerts.yml",
        "control/store/migrations/postgres/",
        "clickacall/cli.py",
        "ext/_stun.pyi",
        "relay/py.typed",
    ):
        assert shipped in files, shipped
    _run(sys.executable, "-m", "venv", str(venv))
    python = str(venv / "bin" / "python")
    _run("sh", str(ROOT / "deploy/wheel.sh"), "install", str(wheels), python)
    # the environment's own modules, not the checkout's
    where = _run(
        python, "-c", "import relay, control, ext._fastpath; print(relay.__file__)", cwd=tmp_path
    )
    assert where.stdout.startswith(str(venv)), where.stdout

    proc, text = start_up([str(venv / "bin" / "clickacall")], data, cwd=tmp_path)
    try:
        up = banner_fields(text)
        click = httpx.post(f"{up['url']}/v1/links/{up['link']}/calls", timeout=10)
        assert click.status_code == 201, click.text
        call = click.json()
        answer = httpx.post(
            f"{up['url']}/v1/calls/{call['call_id']}/answer",
            headers={"Authorization": f"Bearer {up['console']}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["call"]["status"] == "answered"
        for creds in (call, answer.json()):  # both parties get an allocation on the node
            server = next(s for s in creds["iceServers"] if s["urls"][0].startswith("turn:"))
            host, port = server["urls"][0].removeprefix("turn:").split("?")[0].split(":")
            with StunClient((host, int(port)), server["username"], server["credential"]) as c:
                relayed = c.allocate()
                assert relayed[0] == "127.0.0.1" and relayed[1] > 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
