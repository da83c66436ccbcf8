"""``python -m streamvid_bench [options]``: the same as ``streamvid bench``."""

import sys

from streamvid_bench.cli import main

sys.exit(main())
