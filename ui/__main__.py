"""``python -m streamvid_ui [options]``: the same command as ``streamvid ui [options]``, one parser (streamvid.cli)."""

import sys

from streamvid.cli import main

sys.exit(main(["ui", *sys.argv[1:]]))
