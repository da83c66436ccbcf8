"""Write deterministic test videos with known content: see bench/samples.py (streamvid_bench.samples) (``--help``)."""

import sys

from streamvid_bench.samples import main

if __name__ == "__main__":
    sys.exit(main())
