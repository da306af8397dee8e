#!/bin/bash
# Fetches the wheels benchmarks/gpu_run.sh installs on a lent GPU machine, once per
# checkout, into .whl/ (or the folder given as $1):
#     bash benchmarks/gpu_wheels.sh
# That machine runs Python 3.12 on x86_64 with JAX, flax, optax, numpy, scipy, absl-py,
# etils, protobuf, psutil, requests, tqdm, wrapt and scikit-image in its image, cannot
# download anything, and lacks what a knee_drr build and its reading through Grain import.
# The set below is that remainder: the modules a build of knee_drr and a short run on it
# load under Python without TensorFlow, less the image's packages. gpu_run.sh installs
# them with --no-deps, so a requirement left out here is missing there, not fetched.
# Versions: the pins of requirements.txt, and for the packages those pull in, the ones the
# pinned set installs (the combination the tests run).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.whl}
wheels=(
  ml_collections==1.1.0        # every config is a ConfigDict
  tensorflow-datasets==4.9.10  # knee_drr's builder, its dataset_info and data source
  grain==0.2.18                # the input pipeline
  array_record==0.8.6          # the data set's file format: written by the build, read by Grain
  tensorflow-metadata==1.21.0  # TFDS's dataset_info proto imports its schema protos
  dm-tree==0.1.10              # TFDS's data source maps decoded examples with `tree`
  immutabledict==4.3.1         # imported by tensorflow_datasets.core
  toml==0.10.2                 # imported by tensorflow_datasets.core (community configs)
  termcolor==3.3.0             # TFDS's messages while it prepares a data set
  importlib_resources==7.1.0   # etils.epath under TFDS while it prepares a data set
  portpicker==1.6.0            # imported by grain (its process prefetch)
  trimesh==5.2.0               # knee_drr 2.0.0's phantoms: the bone meshes (xray/bone_meshes.py)
)
# Installed by gpu_run.sh only where the image's own copy is older than it checks for:
# tensorflow-metadata's generated code needs protobuf >= 6.31.1 at run time, TFDS 4.9.10
# etils >= 1.9.1.
if_older=(protobuf==7.36.2 etils==1.15.0)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python=${PYTHON:-python3}  # any Python with pip: the wheels are chosen for 3.12 regardless
fetch() {  # fetch FOLDER REQUIREMENT...: the cp312 manylinux x86_64 wheels, no dependencies
  local into=$1
  shift
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$into" "$@"
}
# Exactly this set: gpu_run.sh's install stops at two versions of one package.
rm -f "$dest"/*.whl "$dest"/if_older/*.whl
mkdir -p "$dest/if_older"
if [ "$dest" = "$root/.whl" ] && [ -d "$root/.git" ] &&
    ! grep -qx '/.whl/' "$root/.git/info/exclude" 2> /dev/null; then
  echo /.whl/ >> "$root/.git/info/exclude"  # Carried to the machine, never committed.
fi
fetch "$dest" "${wheels[@]}"
fetch "$dest/if_older" "${if_older[@]}"
# promise 2.3 (imported by TFDS's download manager) is published as a source archive only:
# built here into a pure-Python wheel.
"$python" -m pip wheel -q --no-deps -w "$dest" promise==2.3
ls -l "$dest" "$dest/if_older"
du -ch "$dest"/*.whl "$dest"/if_older/*.whl | tail -1
