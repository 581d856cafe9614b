"""``python -m control``: the same as ``clickacall control``."""

import sys

from control.server import run_control

if __name__ == "__main__":
    sys.exit(run_control(sys.argv[1:]))
