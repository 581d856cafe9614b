"""A throwaway PostgreSQL server for tests and benchmarks (``tests/pgserver.py`` re-exports it).

``PgServer().start()`` runs ``initdb`` into a fresh temporary directory and ``pg_ctl start`` on a
free 127.0.0.1 port, with its unix socket in that directory, trust authentication and durability
switched off (it is deleted afterwards). As root it runs the server as the ``postgres`` user (or
``nobody``) through ``runuser``/``su``, because PostgreSQL refuses to run as root.

Binaries come from ``$CLICKACALL_PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin``, else
``PATH``; ``make debs`` installs them. :func:`pg_bin_dir` returns None only when there are none,
which is the one reason tests may skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "postgres"


def pg_bin_dir() -> Path | None:
    env = os.environ.get("CLICKACALL_PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: version(p.parent)
    )
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    if which and shutil.which("pg_ctl"):
        return Path(which).resolve().parent
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The unprivileged user to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PgServer:
    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or pg_bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries not found (initdb, pg_ctl)")
        self.bin = found
        self.user = _run_as()
        self.dir: Path | None = None
        self.port = 0
        self._started = False

    @property
    def datadir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def sockdir(self) -> Path:
        assert self.dir is not None
        return self.dir / "sock"

    @property
    def logfile(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        full = [str(self.bin / argv[0]), *argv[1:]]
        if self.user is not None:
            if shutil.which("runuser"):
                full = ["runuser", "-u", self.user, "--", *full]
            else:
                full = ["su", self.user, "-s", "/bin/sh", "-c", shlex.join(full)]
        proc = subprocess.run(
            full, capture_output=True, text=True, timeout=timeout, cwd=self.dir, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                + self.log_tail()
            )
        return proc

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    def start(self) -> PgServer:
        self.dir = Path(tempfile.mkdtemp(prefix="clickacall-pg-"))
        self.sockdir.mkdir()
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            for p in (self.dir, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._cmd(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            opts = (
                f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                " -c max_connections=200"
            )
            try:
                self._cmd(
                    "pg_ctl",
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.logfile),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "30",
                    "start",
                )
            except RuntimeError as e:
                last = e
                continue
            self._started = True
            self._wait_ready()
            return self
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {last}")

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError as e:
                if time.monotonic() > deadline:
                    msg = "PostgreSQL is not accepting connections\n" + self.log_tail()
                    raise RuntimeError(msg) from e
                time.sleep(0.05)

    def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._cmd("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
