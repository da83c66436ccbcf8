"""Write deterministic test videos with known content: see streamvid/samples.py (``--help``)."""

import sys

from streamvid.samples import main

if __name__ == "__main__":
    sys.exit(main())
