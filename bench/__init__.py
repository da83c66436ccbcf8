"""streamvid's benchmark suite and sample-media generation (installed as ``streamvid_bench``).

* ``streamvid_bench.samples``  — deterministic test videos with a manifest of what is where
  (``scripts/make_sample_video.py``; the bundled demo clip);
* ``streamvid_bench.sources``  — the benchmark inputs: timed and rendered sources, generated videos, models;
* ``streamvid_bench.sections`` — ingest, soak, needle, answer and gpu measurements, and ``run_suite``;
* ``streamvid_bench.report``   — machine info, ratios, the markdown table and PNG plots (matplotlib);
* ``streamvid_bench.cli``      — ``streamvid bench`` / ``python -m streamvid_bench``.

The engine (``streamvid``) never imports this package; ``pip install -e ".[bench]"`` adds the plotting
dependency. Paths to shared footage come from $STREAMVID_SHARED or flags, never from this package's location.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``streamvid bench`` with ``argv``; returns the exit status."""
    from streamvid_bench.cli import main as run

    return run(argv)
