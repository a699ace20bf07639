#!/usr/bin/env bash
# Wheels for a GPU node without network access whose Python already has JAX with its CUDA
# plugin (and flax, optax, orbax-checkpoint, chex, numpy, scipy, matplotlib, pillow, pyyaml,
# protobuf, etils), as CUDA images often do: the rest of this package's runtime dependencies,
# pinned as in pyproject.toml, built for that node's Python.
#
#   bash benchmarks/offline_wheels.sh DIR [PYTHON_VERSION]   # here, with network (default 3.12)
#   WHEELS=DIR bash benchmarks/gpu.sh                          # there: gpu.sh installs them first
#
# The node's own JAX is used as it is (its version may differ from the one pinned here; the
# results table lists the versions it ran with). Pure-Python packages that PyPI has only as source are built
# into universal wheels here.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:?usage: bash benchmarks/offline_wheels.sh DIR [PYTHON_VERSION]}"
python_version="${2:-3.12}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$dir"

# What `import ensembles` and the benchmark need beyond the packages named above:
# ml-collections, tensorflow-datasets and what tensorflow-datasets imports or declares.
binary=(
  "array-record==0.8.6"
  "dm-tree==0.1.10"
)
pure=(
  "ml-collections==1.1.0"
  "tensorflow-datasets==4.9.10"
  "importlib-resources==7.1.0"
  "immutabledict==4.3.1"
  "simple-parsing==0.1.9"
  "docstring-parser==0.18.0"
  "tensorflow-metadata==1.21.0"
  "googleapis-common-protos==1.76.0"
  "termcolor==3.3.0"
  "toml==0.10.2"
)
source_only=(
  "promise==2.3"
)

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
  --python-version "$python_version" "${platforms[@]}" -d "$dir" "${binary[@]}" "${pure[@]}"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$dir" "${source_only[@]}"
echo "offline_wheels.sh: $(ls "$dir"/*.whl | wc -l) wheels in $dir for Python $python_version"
