#!/bin/bash
# The device command of benchmarks/RESULTS.md, "GPU: NVIDIA H200": one call on a lent GPU
# machine. Its image has JAX, flax, optax and scipy but not ml_collections, TFDS, Grain or
# ArrayRecord, and nothing can be downloaded there: benchmarks/gpu_wheels.sh fetches their
# wheels into .whl beforehand (the call carries .whl), and this installs them.
# What it measures lands in $OUT: gpu_figures.json (rewritten after each part),
# gpu_run_grid.png, env.txt and the log.
#   GPU_PARTS     benchmarks.gpu_figures' parts (default: run, the one not yet measured on
#                 a GPU; flops,peaks,train,sampler,run for all of them; run,leg adds one
#                 held-out leg's 60 views sampled together from the run's model)
#   GPU_DATA      the run's data: knee_drr (default; the scale's config, newest version,
#                 built into GPU_DATA_DIR, default /tmp/tfds, while the programs compile) or
#                 memory (phantoms scanned in memory). knee_drr turns into memory, saying
#                 why, where its packages do not import.
#   GPU_BUDGET_S  its seconds (default 500: the 256 px run trains for what its two
#                 compiles, ~85-140 s each on an H200, and the data build leave of them)
#   GPU_ARGS      more of its flags, e.g. "--scale test ..." for a trial on the CPU
#   GPU_GRACE_S   seconds past the budget before the run is stopped (default 60; a trial
#                 on a busy CPU compiles slower than the budget's reserve assumes)
#   GPU_WHEELS, GPU_SITE  the wheels (default .whl) and where they are installed (/tmp/site)
set -u
OUT=${OUT:?set OUT to the folder for the results}
wheels=${GPU_WHEELS:-.whl}
site=${GPU_SITE:-/tmp/site}
older() {  # older NAME VERSION: whether this python's NAME is absent or older than VERSION
  python3 - "$1" "$2" 2> /dev/null << 'PY'
import importlib.metadata as m, sys
from packaging.version import Version
try:
  sys.exit(0 if Version(m.version(sys.argv[1])) < Version(sys.argv[2]) else 1)
except m.PackageNotFoundError:
  sys.exit(0)
PY
}
if ! python3 -c 'import ml_collections, grain, array_record, tensorflow_datasets' 2> /dev/null
then
  if compgen -G "$wheels/*.whl" > /dev/null; then
    extra=()
    # The image's own copy is kept unless older than what the carried packages need
    # (gpu_wheels.sh says whose need each minimum is).
    for need in protobuf:6.31.1 etils:1.9.1; do
      name=${need%%:*}
      if older "$name" "${need#*:}" && compgen -G "$wheels/if_older/$name-*.whl" > /dev/null
      then
        extra+=("$wheels"/if_older/"$name"-*.whl)
      fi
    done
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$wheels"/*.whl "${extra[@]}" || exit 1
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "no wheels in $wheels: running on this python's own packages"
  fi
fi
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c 'import sys, jax, jaxlib, flax, optax, numpy; print(sys.version);
print({m.__name__: m.__version__ for m in (jax, jaxlib, flax, optax, numpy)}); print(jax.devices())'
  python3 -c 'import importlib.metadata as m
def v(name):
  try:
    return m.version(name)
  except m.PackageNotFoundError:
    return None
print({n: v(n) for n in ("ml_collections", "tensorflow_datasets", "grain", "array_record",
                         "protobuf", "etils", "trimesh")})'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
data=${GPU_DATA:-knee_drr}
if [ "$data" = knee_drr ] && ! why=$(python3 -c 'import trimesh
import datasets.knee_drr.build, score_sde_knee.input_pipeline' 2>&1); then
  echo "knee_drr cannot be built or read here (${why##*$'\n'}): phantoms scanned in memory instead"
  data=memory
fi
budget=${GPU_BUDGET_S:-500}
timeout $((budget + ${GPU_GRACE_S:-60})) python3 -m benchmarks.gpu_figures --out "$OUT" \
  --parts "${GPU_PARTS:-run}" --data "$data" --data_dir "${GPU_DATA_DIR:-/tmp/tfds}" \
  --phantoms 6 --budget_s "$budget" ${GPU_ARGS:-} 2>&1 |
  tee "$OUT/gpu_figures.log" | grep -v '^ '
echo "gpu_figures rc ${PIPESTATUS[0]}"
