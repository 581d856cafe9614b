"""Run ``clickacall up`` as a real process for tests and read what it printed.

``start_up(command, data)`` starts it with free ports (and ``extra`` flags), waits for its banner ("Press Ctrl-C")
and returns the process and the banner; ``banner_fields(text)`` picks out the control plane's
URL, the tenant key, the link, the staff token and the TURN credential it printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_up(
    command: list[str],
    data: Path,
    cwd: Path = ROOT,
    timeout: float = 90.0,
    extra: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKACALL_")}
    proc = subprocess.Popen(
        [*command, "up", "--data", str(data), "--http-port", "0", "--metrics-port", "0", *extra],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    banner = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        banner.append(line)
        if "Press Ctrl-C" in line or time.monotonic() > deadline:
            break
    return proc, "".join(banner)


def banner_fields(text: str) -> dict[str, Any]:
    """What a test needs from the banner; an AssertionError naming the banner if it lacks any."""
    url = re.search(r"control plane\s+(http://127\.0\.0\.1:\d+)", text)
    key = re.search(r"tenant API key\s+(\S+)", text)
    link = re.search(r"call link\s+(\S+)", text)
    console = re.search(r"staff token\s+(\S+)", text)
    ice_line = re.search(r"^\s+(\{\"urls\".*\})$", text, re.M)
    assert url and key and link and console and ice_line, text
    return {
        "url": url.group(1),
        "key": key.group(1),
        "link": link.group(1),
        "console": console.group(1),
        "ice": json.loads(ice_line.group(1)),
    }
