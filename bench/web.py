"""The web front's speed, measured in headless Chromium (not a timed test): ``python -m bench.web``.

It starts the real thing the way ``clickacall up`` does: ``python -m control`` (SQLite in a
temporary directory) and ``python -m relay`` registered with it, both subprocesses; creates a
tenant with a staff member, a link and a password set through the invitation form; then, in
Debian's ``chromium`` driven by ``chromedriver`` through Selenium (fake camera and
microphone), measures:

- **click to ringing**: a staff member signed in to the console (its events socket connected),
  a visitor on ``/c/{id}`` clicks "Voice call"; the time from the click (the visitor page's
  clock) until the ringing call shows in the console (a MutationObserver there; both
  browsers run on this machine, so ``Date.now()`` is one clock). Median, min and max of
  ``--runs`` calls, each cancelled before the next;
- **the loader's size**: ``/embed.js`` as served, and gzipped (``gzip -9``; the budget is
  8 KB);
- **the call page's transfer**: everything a fresh browser fetches to show ``/c/{id}`` ready to
  call (the Performance API's ``transferSize`` of the document and each resource, and their
  decoded sizes), cold and then from its cache.

- **Lighthouse** (npm ``lighthouse``, pinned in package.json; ``make`` installs it) against the
  system Chromium with its default mobile preset: the performance, accessibility and best
  practices scores of ``/c/{id}`` (the target is 95+). Skipped with ``--no-lighthouse`` or
  when it is not installed.

It prints a small table (``--json`` prints the numbers instead).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from control.keys import hash_key, new_operator_key, parse_key

HOST = "127.0.0.1"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LIGHTHOUSE = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "lighthouse"
CATEGORIES = ("performance", "accessibility", "best-practices")
READY_TIMEOUT = 30.0
LOADER_LIMIT = 8 * 1024
RUNS = 7  # click-to-ringing calls by default
NODE_ID = "bench-web-1"
# the click limits lifted (bench/control.py does the same): every run is this one visitor
CLICKS_UNLIMITED = ("--click-visitor-burst=1000000", "--click-link-burst=1000000")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,900",
)


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"bench.web: {msg}", file=sys.stderr, flush=True)  # noqa: T201


def _free_tcp() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Platform:
    """``python -m control`` and ``python -m relay`` as subprocesses, with a demo tenant."""

    workdir: Path
    http_port: int = field(default_factory=_free_tcp)
    turn_port: int = field(default_factory=_free_udp)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    operator_key: str = ""
    api_key: str = ""
    public_id: str = ""
    email: str = "staff@bench.clickacall.test"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def _spawn(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        out = (self.workdir / f"{name}.log").open("ab")
        child = subprocess.Popen(
            [sys.executable, *argv],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        out.close()
        self.children.append(child)
        return child

    def _wait(self, child: subprocess.Popen[bytes], what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise BenchError(f"{what} exited with status {child.returncode}: {self.workdir}")
            with contextlib.suppress(httpx.TransportError, OSError):
                if ready():
                    return
            time.sleep(0.2)
        raise BenchError(f"{what} was not ready after {READY_TIMEOUT:.0f} s")

    def start(self) -> Platform:
        self.operator_key, _ = new_operator_key()
        op_hash = f"{parse_key(self.operator_key).key_id}:{hash_key(self.operator_key).hex()}"
        env = {
            "CLICKACALL_TOKEN_KEY": secrets.token_hex(24),
            "CLICKACALL_AUTH_SECRET": secrets.token_hex(16),
            "CLICKACALL_NODE_SECRET": secrets.token_hex(16),
        }
        control = self._spawn(self.control_argv(op_hash), env, "control")
        self._wait(control, "the control plane", self._ready)
        relay = self._spawn(
            ["-m", "relay", "--listen", f"{HOST}:{self.turn_port}", "--relay-ip", HOST]
            + ["--workers", "1", "--allow-peer", "127.0.0.0/8", "--drain-timeout", "1"]
            + ["--control", self.url, "--node-id", NODE_ID, "--region", "eu"]
            + ["--heartbeat-interval", "1", "--spool", str(self.workdir / "spool")],
            env,
            "relay",
        )
        self._wait(relay, "the relay node's registration", self._registered)
        self._tenant()
        return self

    def control_argv(self, op_hash: str) -> list[str]:
        """``python -m control``'s arguments. One visitor (this machine) clicks once per run,
        so the per-visitor click limit (5 at once, then one per 12 s) is lifted: with it the
        sixth run was refused (429) and never rang."""
        db = f"sqlite:///{(self.workdir / 'control.db').resolve()}"
        return (
            ["-m", "control", "--listen", f"{HOST}:{self.http_port}", "--db", db]
            + ["--operator-key-hash", op_hash, "--metrics", "off"]
            + list(CLICKS_UNLIMITED)
        )

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200

    def _registered(self) -> bool:
        r = httpx.get(f"{self.url}/v1/nodes", headers=_bearer(self.operator_key), timeout=2)
        return any(n["id"] == NODE_ID and n["healthy"] for n in r.json())

    def _post(self, path: str, key: str, body: Any = None) -> dict[str, Any]:
        r = httpx.post(f"{self.url}{path}", json=body, headers=_bearer(key), timeout=10)
        if r.status_code >= 400:
            raise BenchError(f"POST {path} answered {r.status_code}: {r.text}")
        out: dict[str, Any] = r.json()
        return out

    def _tenant(self) -> None:
        made = self._post("/v1/tenants", self.operator_key, {"name": "Bench business"})
        self.api_key = made["api_key"]["key"]
        staff = self._post("/v1/staff", self.api_key, {"name": "Bench staff"})["id"]
        link = self._post("/v1/links", self.api_key, {"name": "Bench", "ring_staff": [staff]})
        self.public_id = link["public_id"]
        invite = self._post(f"/v1/staff/{staff}/invitation", self.api_key, {"email": self.email})
        r = httpx.post(
            httpx.URL(self.url).join(invite["url"]),
            data={"password": self.password, "password2": self.password},
            headers={"Origin": self.url},
            timeout=10,
        )
        if r.status_code != 303:
            raise BenchError(f"accepting the invitation answered {r.status_code}: {r.text}")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(2)  # SIGINT: both stop at once
        for child in reversed(self.children):
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# --- the browsers ------------------------------------------------------------------------------


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium (its own profile) under Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="clickacall-bench-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: Any, script: str, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = driver.execute_script(script)
        if got:
            return got
        time.sleep(0.02)
    raise BenchError(f"timed out waiting for {what}")


IDLE = "return document.querySelector('clickacall-call .cc')?.dataset.state === 'idle'"
PREVIEW = (
    "const v = document.querySelector('.cc-preview');"
    "return !!v && (v.hidden || (v.readyState >= 2 && v.videoWidth > 0));"
)
RINGING = "return document.querySelectorAll('.cs-ringing li[data-call]').length"
CONSOLE_READY = (
    "const e = document.querySelector('clickacall-console .cs');"
    "return !!e && e.dataset.state === 'ready';"
)
WATCH_RING = """
window.__ringAt = 0;
const list = () => document.querySelector('.cs-ringing');
const seen = () => { if (!window.__ringAt && document.querySelector('.cs-ringing li[data-call]'))
  window.__ringAt = Date.now(); };
new MutationObserver(seen).observe(document.body, {childList: true, subtree: true});
return !!list();
"""
CLICK = """
const b = [...document.querySelectorAll('clickacall-call button')]
  .find(b => b.offsetParent !== null && b.textContent.trim() === arguments[0]);
if (!b) return 0;
if (b.disabled) return -1;
const at = Date.now();
b.click();
return at;
"""
TRANSFER = """
const nav = performance.getEntriesByType('navigation')[0];
const all = [nav, ...performance.getEntriesByType('resource')];
return all.map(e => ({name: e.name, transfer: e.transferSize, body: e.encodedBodySize,
  decoded: e.decodedBodySize}));
"""


def sign_in(driver: Any, p: Platform) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{p.url}/console")
    form = driver.find_element(By.CSS_SELECTOR, "form[action='/console/signin']")
    form.find_element(By.CSS_SELECTOR, "input[type=email]").send_keys(p.email)
    pw = form.find_element(By.CSS_SELECTOR, "input[type=password]")
    pw.send_keys(p.password)
    pw.send_keys(Keys.ENTER)
    until(driver, CONSOLE_READY, 20, "the console, signed in and listening")


def click_to_ringing(p: Platform, runs: int) -> list[float]:
    """Milliseconds from the visitor's click to the ringing call in the console, per run."""
    out = []
    with chromium() as staff, chromium() as visitor:
        sign_in(staff, p)
        for i in range(runs):
            visitor.get(f"{p.url}/c/{p.public_id}")
            until(visitor, IDLE, 15, "the pre-call screen")
            until(visitor, PREVIEW, 15, "the camera preview")
            staff.execute_script(WATCH_RING)
            clicked = int(visitor.execute_script(CLICK, "Voice call"))
            if clicked <= 0:
                raise BenchError("no 'Voice call' button" if not clicked else "it is disabled")
            try:
                until(staff, "return window.__ringAt", 15, "the console ringing")
            except BenchError:
                state = visitor.execute_script(IDLE.replace(" === 'idle'", ""))
                console = staff.execute_script(
                    "return document.querySelector('clickacall-console .cs')?.dataset.state"
                )
                raise BenchError(
                    f"no ringing in the console ({console}); the visitor: {state}"
                ) from None
            rang = int(staff.execute_script("return window.__ringAt"))
            out.append(float(rang - clicked))
            log(f"click to ringing, run {i + 1}/{runs}: {rang - clicked} ms")
            until(
                visitor,
                "return document.querySelector('clickacall-call .cc')?.dataset.state === 'ringing'",
                15,
                "the visitor ringing",
            )
            if not visitor.execute_script(CLICK, "Cancel"):
                raise BenchError("no 'Cancel' button")
            until(staff, f"{RINGING} === 0", 15, "the console quiet again")
            until(staff, CONSOLE_READY, 15, "the console ready again")
    return out


def page_transfer(p: Platform) -> dict[str, Any]:
    """What a fresh browser fetches for ``/c/{id}`` ready to call, then again from its cache."""
    out: dict[str, Any] = {}
    with chromium() as d:
        for visit in ("cold", "warm"):
            d.get(f"{p.url}/c/{p.public_id}")
            until(d, IDLE, 15, "the pre-call screen")
            time.sleep(0.5)  # late resources (icons, fonts) land
            entries = d.execute_script(TRANSFER)
            out[visit] = {
                "requests": len(entries),
                "transfer_bytes": sum(int(e["transfer"]) for e in entries),
                "decoded_bytes": sum(int(e["decoded"]) for e in entries),
                "entries": entries,
            }
            if visit == "cold":
                d.get("about:blank")
    return out


def loader_size(p: Platform) -> dict[str, int]:
    r = httpx.get(f"{p.url}/embed.js", headers={"Accept-Encoding": "identity"}, timeout=10)
    r.raise_for_status()
    served = httpx.get(f"{p.url}/embed.js", headers={"Accept-Encoding": "gzip"}, timeout=10)
    return {
        "raw_bytes": len(r.content),
        "gzip_bytes": len(gzip.compress(r.content, 9)),
        "served_bytes": int(served.headers.get("content-length") or len(served.content)),
        "served_gzip": int(served.headers.get("content-encoding") == "gzip"),
    }


def lighthouse(p: Platform) -> dict[str, Any]:
    """Lighthouse's scores (0-100) of the call page, mobile preset, in the system Chromium."""
    with tempfile.TemporaryDirectory(prefix="clickacall-lighthouse-") as tmp:
        out = Path(tmp) / "report.json"
        flags = " ".join(f for f in FLAGS if not f.startswith("--window-size"))
        r = subprocess.run(
            [
                str(LIGHTHOUSE),
                f"{p.url}/c/{p.public_id}",
                f"--chrome-path={CHROMIUM}",
                f"--chrome-flags={flags}",
                f"--only-categories={','.join(CATEGORIES)}",
                "--output=json",
                f"--output-path={out}",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if r.returncode != 0 or not out.exists():
            raise BenchError(f"lighthouse failed ({r.returncode}): {r.stderr[-2000:]}")
        report = json.loads(out.read_text(encoding="utf-8"))
    scores = {k: round(100 * (v["score"] or 0)) for k, v in report["categories"].items()}
    below = []  # the weighted audits that cost points, to see what to fix
    for category in report["categories"].values():
        for ref in category["auditRefs"]:
            audit = report["audits"][ref["id"]]
            if ref.get("weight") and audit.get("score") is not None and audit["score"] < 0.9:
                below.append(f"{ref['id']} ({audit.get('displayValue') or audit['score']})")
    return {
        "form_factor": report["configSettings"]["formFactor"],
        "scores": scores,
        "audits_below_90": below,
    }


def table(results: dict[str, Any]) -> str:
    ring = results["click_to_ringing_ms"]
    loader = results["loader"]
    page = results["call_page"]
    rows = [
        ("click to ringing (median)", f"{statistics.median(ring):.0f} ms"),
        ("click to ringing (min / max)", f"{min(ring):.0f} / {max(ring):.0f} ms"),
        ("runs", str(len(ring))),
        ("loader /embed.js", f"{loader['raw_bytes']} B"),
        (
            "loader gzipped",
            f"{loader['gzip_bytes']} B ({'within' if loader['gzip_bytes'] <= LOADER_LIMIT else 'OVER'}"
            f" the {LOADER_LIMIT // 1024} KB limit)",
        ),
        (
            "call page, cold",
            f"{page['cold']['transfer_bytes'] / 1024:.1f} KB transferred, "
            f"{page['cold']['decoded_bytes'] / 1024:.1f} KB decoded, "
            f"{page['cold']['requests']} requests",
        ),
        (
            "call page, warm",
            f"{page['warm']['transfer_bytes'] / 1024:.1f} KB transferred, "
            f"{page['warm']['requests']} requests",
        ),
    ]
    lh = results.get("lighthouse")
    if lh:
        scores = ", ".join(f"{k} {v}" for k, v in lh["scores"].items())
        rows.append((f"lighthouse ({lh['form_factor']})", scores))
        if lh["audits_below_90"]:
            rows.append(("lighthouse, below 90", "; ".join(lh["audits_below_90"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def run(runs: int, with_lighthouse: bool) -> dict[str, Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        raise BenchError("Debian's chromium and chromium-driver are not installed (make debs)")
    with tempfile.TemporaryDirectory(prefix="clickacall-bench-web-") as tmp:
        p = Platform(Path(tmp))
        try:
            log("starting the control plane and a relay node")
            p.start()
            results = {
                "loader": loader_size(p),
                "call_page": page_transfer(p),
                "click_to_ringing_ms": click_to_ringing(p, runs),
            }
            if with_lighthouse and LIGHTHOUSE.exists():
                log("running lighthouse on the call page")
                results["lighthouse"] = lighthouse(p)
            elif with_lighthouse:
                log(f"lighthouse skipped: {LIGHTHOUSE} is not installed (make deps)")
        finally:
            p.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web", description=__doc__)
    parser.add_argument("--runs", type=int, default=RUNS, help="calls for click to ringing")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--no-lighthouse", dest="lighthouse", action="store_false", help="skip Lighthouse"
    )
    args = parser.parse_args(argv)
    try:
        results = run(max(1, args.runs), args.lighthouse)
    except BenchError as e:
        print(f"bench.web: error: {e}", file=sys.stderr)  # noqa: T201
        return 1
    if args.json:
        print(json.dumps(results, indent=2))  # noqa: T201
    else:
        print(table(results))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
