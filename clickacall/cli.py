"""The ``clickacall`` command: ``relay``, ``control``, ``up`` and ``bench`` subcommands.

Each subcommand is a function ``(prog, argv) -> exit code`` in :data:`COMMANDS`; heavy
imports happen inside it so ``--help`` stays fast and works before every part exists.
Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

EXIT_USAGE = 2

Command = Callable[[str, list[str]], int]


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_relay(prog: str, argv: list[str]) -> int:
    """Run one relay node until it is stopped."""
    from relay.cli import main as relay_main

    return relay_main(argv, prog)


def cmd_control(prog: str, argv: list[str]) -> int:
    """Run the control plane's HTTP API until it is stopped."""
    from control.server import run_control

    return run_control(argv, prog)


def cmd_up(prog: str, argv: list[str]) -> int:
    """A control plane and one relay node wired together on localhost (``make run``)."""
    from clickacall.up import main as up_main

    return up_main(argv, prog)


def cmd_bench(prog: str, argv: list[str]) -> int:
    """Run the benchmarks: the same as ``python -m bench ARGS``."""
    try:
        module = importlib.import_module("bench.__main__")
    except ModuleNotFoundError as e:
        if e.name not in ("bench", "bench.__main__"):
            raise
        return _fail(prog, "the benchmark package (bench/) is not installed")
    bench_main = cast(Callable[..., "int | None"], module.main)
    return int(bench_main(argv, prog=prog) or 0)  # prog: its --help and errors name it


COMMANDS: dict[str, tuple[Command, str]] = {
    "relay": (cmd_relay, "run a TURN/STUN relay node (see: clickacall relay --help)"),
    "control": (cmd_control, "run the control plane (see: clickacall control --help)"),
    "up": (cmd_up, "a control plane and one relay node on localhost, with a demo tenant"),
    "bench": (cmd_bench, "run the benchmarks (same as python -m bench)"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: clickacall COMMAND [ARGS...]",
        "",
        "Clickacall: click-to-call media relay platform.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run 'clickacall COMMAND --help' for a command's options."]
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clickacall")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clickacall`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else EXIT_USAGE
    if args[0] == "--version":
        print(f"clickacall {_version()}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; choose from {', '.join(COMMANDS)}"
        return _fail("clickacall", f"unknown command {name!r}{hint}")
    command, _ = COMMANDS[name]
    try:
        return command(f"clickacall {name}", rest)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
