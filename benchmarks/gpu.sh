#!/usr/bin/env bash
# Training throughput and MFU at GPU sizes (32x32x3 synthetic data, E up to 1,024, cnn and
# resnet), in under 8 minutes; see benchmarks/gpu.py for what each column means.
#
#   bash benchmarks/gpu.sh              # on a machine with an NVIDIA GPU
#   bash benchmarks/gpu.sh --dry-run    # toy sizes on CPU: checks the script (seconds)
#
# Needs the package with JAX's CUDA 12 wheels: `pip install -e '.[cuda12]'` (once, with
# network access; the run itself is offline: synthetic data, nothing downloaded). On a node
# without network whose Python has JAX with CUDA but not the rest, WHEELS=DIR installs the
# wheels of benchmarks/offline_wheels.sh into a temporary folder first (nothing else is
# installed). PYTHON picks the interpreter (default: python3 on PATH); TOTAL_TIMEOUT_S
# (default 480) is the hard limit on the whole run, after which the rows so far are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TOTAL_TIMEOUT_S="${TOTAL_TIMEOUT_S:-480}"

if [[ -n "${WHEELS:-}" ]]; then
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "gpu.sh: WHEELS=$WHEELS holds no .whl files; make them where pip has network access" \
         "with: bash benchmarks/offline_wheels.sh DIR [PYTHON_VERSION]" >&2
    exit 1
  fi
  site="$(mktemp -d)"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$site" \
    "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

dry_run=0
for arg in "$@"; do
  [[ "$arg" == "--dry-run" ]] && dry_run=1
done

if [[ "$dry_run" == 0 ]]; then
  if ! backend="$("$PYTHON" -c 'import jax; print(jax.default_backend())' 2>/dev/null)"; then
    echo "gpu.sh: '$PYTHON' cannot import jax; install the package: pip install -e '.[cuda12]'" >&2
    exit 1
  fi
  if [[ "$backend" != "gpu" ]]; then
    echo "gpu.sh: JAX sees no GPU (default backend: $backend). Install JAX's CUDA wheels with" \
         "pip install -e '.[cuda12]', or run with --dry-run to check the script on CPU." >&2
    exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi

# SIGTERM at the limit: benchmarks.gpu then prints the rows it has (and kills its child).
exec timeout --signal=TERM --kill-after=15 "$TOTAL_TIMEOUT_S" "$PYTHON" -m benchmarks.gpu "$@"
