"""Issue 13's GPU targets in one run; the code is ``streamvid_bench.gpu`` (bench/gpu.py).

    python scripts/bench_gpu.py [--device cuda|cpu] [--quick] [--sections every,gate,live,qwen] [--out FILE]

Works from a checkout without installing: ``streamvid_bench`` is then loaded from ../bench.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("streamvid_bench") is None:  # a plain checkout: map bench/ as pyproject.toml does
    bench = Path(__file__).resolve().parents[1] / "bench"
    spec = importlib.util.spec_from_file_location("streamvid_bench", bench / "__init__.py",
                                                  submodule_search_locations=[str(bench)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["streamvid_bench"] = module
    spec.loader.exec_module(module)

from streamvid_bench.gpu import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
