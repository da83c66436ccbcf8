#!/usr/bin/env bash
# Run scripts/bench_gpu.py on the GPU machine, which has torch/transformers but no package registry
# (../shared/notes/gpu-device.md). From the repository root there:
#
#   bash scripts/gpu_run.sh [bench_gpu.py options…]      # e.g. --quick, --sections every,live
#
# It needs, in the (git-ignored, carried) .gpu/ folder of the working tree:
#   .gpu/site.tar.xz        av, faiss-cpu, open_clip_torch, ftfy, wcwidth, transformers (the recipe in the note)
#   .gpu/models/            the real config/tokenizer files (cp -r ../shared/models .gpu/models)
#   .gpu/media/vtest.avi    optional: the real clip of the "gate" section (cp ../shared/media/vtest.avi .gpu/media/)
# Results: $OUT/gpu.json and $OUT/bench_gpu.log ($OUT defaults to bench-out/). Generated videos go to
# /tmp/streamvid-bench-cache, not $OUT. The whole run is cut at $BENCH_TIMEOUT seconds (default 290).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
site=/tmp/streamvid-site
pp=/tmp/streamvid-pp
[ -f "$root/.gpu/site.tar.xz" ] || { echo "gpu_run.sh: $root/.gpu/site.tar.xz is missing (see the note)" >&2; exit 2; }
if [ ! -f "$site/.unpacked" ]; then
  mkdir -p "$site" && tar xJf "$root/.gpu/site.tar.xz" -C "$site" && touch "$site/.unpacked"
fi
# The package-dir mapping of pyproject.toml, as symlinks.
mkdir -p "$pp"
ln -sfn "$root/streamvid" "$pp/streamvid"
ln -sfn "$root/kernels" "$pp/streamvid_kernels"
ln -sfn "$root/bench" "$pp/streamvid_bench"
export PYTHONPATH="$pp:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export STREAMVID_SHARED_MODELS="${STREAMVID_SHARED_MODELS:-$root/.gpu/models}"
media=()
[ -f "$root/.gpu/media/vtest.avi" ] && media=(--media "$root/.gpu/media")
out="${OUT:-$root/bench-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/bench_gpu.log" || true
set +e
timeout "${BENCH_TIMEOUT:-290}" python3 "$root/scripts/bench_gpu.py" --out "$out/gpu.json" \
  --cache-dir /tmp/streamvid-bench-cache "${media[@]}" "$@" 2>&1 | tee -a "$out/bench_gpu.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_run.sh: bench_gpu.py ran past ${BENCH_TIMEOUT:-290} s and was stopped" >&2
exit "$rc"
