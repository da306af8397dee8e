#!/bin/bash
# The device command of benchmarks/RESULTS.md, "GPU: NVIDIA H200": one call on a lent GPU
# machine, with the ml_collections wheel carried in .whl (the device's image has JAX,
# flax, optax and scipy but no ml_collections, and nothing can be downloaded there).
# What it measures lands in $OUT: gpu_figures.json (rewritten after each part),
# gpu_run_grid.png, env.txt and the log.
#   GPU_PARTS     benchmarks.gpu_figures' parts (default: run, the one not yet measured on
#                 a GPU; flops,peaks,train,sampler,run for all of them)
#   GPU_BUDGET_S  its seconds (default 500: the 256 px run trains for what its two
#                 compiles, ~85-140 s each on an H200, leave of them)
#   GPU_ARGS      more of its flags, e.g. "--scale test ..." for a trial on the CPU
#   GPU_GRACE_S   seconds past the budget before the run is stopped (default 60; a trial
#                 on a busy CPU compiles slower than the budget's reserve assumes)
set -u
OUT=${OUT:?set OUT to the folder for the results}
if ! python3 -c 'import ml_collections' 2> /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c 'import sys, jax, jaxlib, flax, optax, numpy; print(sys.version);
print({m.__name__: m.__version__ for m in (jax, jaxlib, flax, optax, numpy)}); print(jax.devices())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
budget=${GPU_BUDGET_S:-500}
timeout $((budget + ${GPU_GRACE_S:-60})) python3 -m benchmarks.gpu_figures --out "$OUT" \
  --parts "${GPU_PARTS:-run}" --phantoms 6 --budget_s "$budget" ${GPU_ARGS:-} 2>&1 |
  tee "$OUT/gpu_figures.log" | grep -v '^ '
echo "gpu_figures rc ${PIPESTATUS[0]}"
