"""``python -m clickacall``: the same as the ``clickacall`` command."""

import sys

from clickacall.cli import main

if __name__ == "__main__":
    sys.exit(main())
