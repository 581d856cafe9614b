"""``python -m relay``: the same as ``clickacall relay``."""

import sys

from relay.cli import main_relay

sys.exit(main_relay())
