"""The relay role's command line: ``python -m relay`` and ``clickacall relay``.

Bad flags or configuration exit with status 2 and one line on stderr naming the flag (or the
file's key) and the bad value.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from relay.config import ConfigError, build_parser, load_config

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None, prog: str = "clickacall relay") -> int:
    """Run one relay node until it is stopped."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        build_parser(prog).print_help()
        return 0
    try:
        config = load_config(args)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    from relay.logs import setup_logging
    from relay.node import run_node

    setup_logging(config.log_level, json=config.log_json)
    try:
        return run_node(config)
    except KeyboardInterrupt:
        return 130
