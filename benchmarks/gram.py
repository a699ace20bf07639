r"""Benchmark of the Bhattacharyya distance matrix (analysis.bhattacharyya) against NumPy.

  python benchmarks/gram.py            # m = 2,000 points, N = 1,797 samples, C = 10 (~1-2 min)
  python benchmarks/gram.py --quick    # small smoke size (seconds)

Each method runs in fresh subprocesses on the same seeded Dirichlet(1) input (float32, (m, N, C)
NumPy array); JAX methods are called once to compile, then measured on a second call. Peak
memory is the peak resident set during the measured call minus the resident set just before
it (input, JAX runtime and compiled code already loaded), read from /proc (Linux), in a run
where glibc returns freed buffers to the system at once (MEMORY_ENV). Throughput counts the m^2 N
(pair, sample) coefficients of the full matrix for every method, so symmetric methods get
credit for the half they skip. Agreement is max |D - D_numpy| over all entries.

Methods:
  numpy          straightforward NumPy: (N, m, C) layout, batched matmul over chunks of 8
                 samples, log, sum (the 42 s baseline of NOTES.md).
  jax-log-each   analysis.bhattacharyya with one log per (pair, sample) (samples_per_log=1).
  jax-no-sym     analysis.bhattacharyya(p, p): every tile, no use of symmetry.
  jax            analysis.bhattacharyya(p): the default.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

# Samples per batched matmul in the NumPy baseline (as measured in NOTES.md).
NUMPY_CHUNK = 8
# The lower clip of the Bhattacharyya coefficient, the same as analysis.BC_CLIP.
BC_CLIP = 1e-6
# The --quick smoke size.
QUICK = dict(m=300, n=400, c=10)
# Memory goal: 3 m^2 float32 + 64 MiB above the input.
SLACK_BYTES = 64 * 2**20
METHODS = ('numpy', 'jax-log-each', 'jax-no-sym', 'jax')
# Memory is measured in a second run with a fixed glibc mmap threshold: every large buffer is
# then mapped on allocation and unmapped on free, so the resident set follows what is live
# (by default glibc keeps freed buffers of up to 32 MiB, and a warm call reuses them unseen).
# It slows allocation, so times come from a run without it.
MEMORY_ENV = {'MALLOC_MMAP_THRESHOLD_': str(64 * 1024)}


def make_input(m: int, n: int, c: int, seed: int = 0) -> np.ndarray:
  """(m, N, C) float32 Dirichlet(1) probabilities (normalised Gamma(1) draws)."""
  gamma = np.random.default_rng(seed).standard_gamma(1.0, size=(m, n, c), dtype=np.float32)
  return gamma / gamma.sum(axis=-1, keepdims=True)


def numpy_gram(p_MxNxC: np.ndarray) -> np.ndarray:
  """The straightforward NumPy distance matrix."""
  m, n, _ = p_MxNxC.shape
  s_NxMxC = np.sqrt(p_MxNxC).transpose(1, 0, 2).copy()
  total_MxM = np.zeros((m, m), np.float64)
  for start in range(0, n, NUMPY_CHUNK):
    s = s_NxMxC[start:start + NUMPY_CHUNK]
    bc_KxMxM = s @ s.transpose(0, 2, 1)
    total_MxM += np.log(np.clip(bc_KxMxM, BC_CLIP, 1.0)).sum(axis=0)
  return (-total_MxM / n).astype(np.float32)


def _rss_bytes(field: str) -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f'{field} not in /proc/self/status')


def _reset_peak() -> int:
  """Resets the peak resident set (VmHWM) to the current one; returns the current one."""
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
  return _rss_bytes('VmRSS')


def run_child(method: str, m: int, n: int, c: int, out_path: str | None) -> dict:
  """Runs one method in this process and measures its last call (time and peak memory).

  JAX methods run twice (the first call compiles) and the NumPy baseline once. The JAX
  runtime is started on a tiny input first, so no measured call pays for its start-up.
  """
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  p = make_input(m, n, c)
  if method == 'numpy':
    compute = numpy_gram
    calls = 1
  else:
    import analysis
    kwargs = dict(samples_per_log=1) if method == 'jax-log-each' else {}
    compute = lambda x: np.asarray(  # noqa: E731
        analysis.bhattacharyya(x, x if method == 'jax-no-sym' else None, **kwargs))
    compute(make_input(7, 12, c, seed=1))
    calls = 2
  for call in range(calls):
    gc.collect()
    before = _reset_peak()
    start = time.perf_counter()
    result = compute(p)
    seconds = time.perf_counter() - start
    peak = _rss_bytes('VmHWM') - before
    if call < calls - 1:
      del result
  if out_path:
    np.save(out_path, result)
  return dict(method=method, seconds=seconds, peak_bytes=peak)


def _run(method: str, m: int, n: int, c: int, out: str | None, env: dict | None = None) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), '--child', method, '--m', str(m), '--n',
         str(n), '--c', str(c)] + (['--out', out] if out else [])
  done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                        env=None if env is None else {**os.environ, **env})
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help=f'smoke size {QUICK}')
  parser.add_argument('--m', type=int, default=2000, help='points')
  parser.add_argument('--n', type=int, default=1797, help='samples')
  parser.add_argument('--c', type=int, default=10, help='classes')
  parser.add_argument('--methods', default=','.join(METHODS), help='comma-separated subset')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  parser.add_argument('--out', help=argparse.SUPPRESS)
  args = parser.parse_args()
  m, n, c = (QUICK['m'], QUICK['n'], QUICK['c']) if args.quick else (args.m, args.n, args.c)
  if args.child:
    print(json.dumps(run_child(args.child, m, n, c, args.out)))
    return
  methods = args.methods.split(',')
  unknown = set(methods) - set(METHODS)
  if unknown:
    parser.error(f'unknown methods {sorted(unknown)}; accepted {METHODS}')
  print(f'm={m} points, N={n} samples, C={c}; input {m * n * c * 4 / 2**20:.0f} MiB float32; '
        f'memory goal {(3 * m * m * 4 + SLACK_BYTES) / 2**20:.0f} MiB above the input; '
        f'{os.cpu_count()} CPUs', flush=True)
  rows, results = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for method in methods:
      out = os.path.join(tmp, method + '.npy')
      timed = _run(method, m, n, c, out)
      measured = _run(method, m, n, c, None, env=MEMORY_ENV)
      rows.append(dict(timed, peak_bytes=measured['peak_bytes']))
      results[method] = np.load(out)
      print(f'  {method}: {timed["seconds"]:.2f} s', file=sys.stderr, flush=True)
  base = next((r['seconds'] for r in rows if r['method'] == 'numpy'), None)
  header = (f'{"method":<14}{"seconds":>9}{"pair-samples/s":>16}{"vs numpy":>10}'
            f'{"peak MiB":>10}{"max|dD|":>10}')
  print(header)
  print('-' * len(header))
  for r in rows:
    rate = m * m * n / r['seconds']
    ratio = f'{base / r["seconds"]:.1f}x' if base else '-'
    diff = (float(np.abs(results[r['method']] - results['numpy']).max())
            if 'numpy' in results else float('nan'))
    print(f'{r["method"]:<14}{r["seconds"]:>9.2f}{rate:>16.3g}{ratio:>10}'
          f'{r["peak_bytes"] / 2**20:>10.0f}{diff:>10.1e}')

if __name__ == '__main__':
  main()
