r"""The Bhattacharyya distance matrix (``ensembles.analysis.bhattacharyya``) against NumPy.

  python -m benchmarks.gram            # m = 2,000 points, N = 1,797 samples, C = 10 (~5 min)
  python -m benchmarks.gram --quick    # small smoke size (seconds)
  python -m benchmarks.gram --methods jax --device_counts 1,2,4,8   # device scaling only

Run from the repository root, with the package installed (``pip install -e .``).

Each method runs in fresh subprocesses on the same seeded Dirichlet(1) input (float32, (m, N, C)
NumPy array); JAX methods are called once to compile, then timed over --repeats calls (the
median is reported), NumPy once. Peak memory, from a second run with one timed call, is the
peak resident set during the measured call minus the resident set just before
it (input, JAX runtime and compiled code already loaded), read from /proc (Linux), in a run
where glibc returns freed buffers to the system at once (MEMORY_ENV). Throughput counts the m^2 N
(pair, sample) coefficients of the full matrix for every method, so symmetric methods get
credit for the half they skip. 'CPU s' is the process's CPU time (all threads) of a call: on a
machine whose cores are busy with other jobs, more devices cannot get more CPU, and CPU s tells
whether they at least cost no extra work (ideal scaling on free cores: seconds = CPU s /
devices). Agreement is max |D - D_numpy| over all entries. JAX methods run
on one host device (``XLA_FLAGS=--xla_force_host_platform_device_count=1`` in the child), except
the ``jax-<n>dev`` rows.

Methods:
  numpy          straightforward NumPy: (N, m, C) layout, batched matmul over chunks of 8
                 samples, log, sum (the 42 s baseline of NOTES.md).
  jax-log-each   analysis.bhattacharyya with one log per (pair, sample) (samples_per_log=1).
  jax-no-sym     analysis.bhattacharyya(p, p): every tile, no use of symmetry.
  jax            analysis.bhattacharyya(p): the default, on one device.
  jax-<n>dev     the default with its tiles spread over n forced host devices (--device_counts;
                 the 'jax' row is n = 1). 'vs 1 dev' divides the jax row's time by this one's.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

# Samples per batched matmul in the NumPy baseline (as measured in NOTES.md).
NUMPY_CHUNK = 8
# The lower clip of the Bhattacharyya coefficient, the same as analysis.BC_CLIP.
BC_CLIP = 1e-6
# The --quick smoke size.
QUICK = dict(m=300, n=400, c=10)
# Memory goal: 3 m^2 float32 + 64 MiB above the input.
SLACK_BYTES = 64 * 2**20
METHODS = ('numpy', 'jax-log-each', 'jax-no-sym', 'jax')
# Device counts of the default method's rows: count 1 is the 'jax' row, n > 1 'jax-<n>dev'.
DEVICE_COUNTS = (1, 2, 4)
# Timed calls of each JAX method after the compiling one; the median is reported.
REPEATS = 3
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


def _devices(method: str) -> int:
  """Host devices a method runs on: n for 'jax-<n>dev', one for the other JAX methods."""
  match = re.fullmatch(r'jax-(\d+)dev', method)
  return int(match.group(1)) if match else 1


def run_child(method: str, m: int, n: int, c: int, repeats: int, out_path: str | None) -> dict:
  """Runs one method in this process and measures its calls (median time, last call's memory).

  JAX methods are called once to compile, then ``repeats`` times; the NumPy baseline once. The
  JAX runtime is started on a tiny input first, so no measured call pays for its start-up.
  """
  p = make_input(m, n, c)
  if method == 'numpy':
    compute = numpy_gram
    calls = 1
  else:
    from ensembles import analysis
    import jax
    assert len(jax.devices()) == _devices(method), (method, jax.devices())
    kwargs = dict(samples_per_log=1) if method == 'jax-log-each' else {}
    compute = lambda x: np.asarray(  # noqa: E731
        analysis.bhattacharyya(x, x if method == 'jax-no-sym' else None, **kwargs))
    compute(make_input(7, 12, c, seed=1))
    compute(p)
    calls = repeats
  times, cpu_times = [], []
  for call in range(calls):
    gc.collect()
    common.reset_peak_rss()
    before = common.rss_bytes('VmRSS')
    start, cpu_start = time.perf_counter(), time.process_time()
    result = compute(p)
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
    peak = common.rss_bytes('VmHWM') - before
    if call < calls - 1:
      del result
  if out_path:
    np.save(out_path, result)
  return dict(method=method, seconds=statistics.median(times),
              cpu_seconds=statistics.median(cpu_times), peak_bytes=peak)


def _run(method: str, m: int, n: int, c: int, repeats: int, out: str | None,
         env: dict | None = None) -> dict:
  cmd = [sys.executable, '-m', 'benchmarks.gram', '--child', method, '--m', str(m), '--n',
         str(n), '--c', str(c), '--repeats', str(repeats)] + (['--out', out] if out else [])
  env = dict(os.environ, **(env or {}))
  if method != 'numpy':
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={_devices(method)}')
  done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env,
                        cwd=common.REPO_ROOT)
  return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict], results: dict, m: int, n: int) -> tuple[list[str], list[list[str]]]:
  """Header and formatted rows: time, rate, ratios to NumPy and to one device, memory, error."""
  seconds = {r['method']: r['seconds'] for r in rows}
  headers = ['method', 'devices', 'seconds', 'CPU s', 'pair-samples/s', 'vs numpy', 'vs 1 dev',
             'peak MiB', 'max abs dD']
  table = []
  for r in rows:
    method = r['method']
    one_device = seconds.get('jax') if method.startswith('jax') and method.endswith('dev') else None
    diff = (float(np.abs(results[method] - results['numpy']).max())
            if 'numpy' in results else float('nan'))
    table.append([
        method, '-' if method == 'numpy' else str(_devices(method)), f'{r["seconds"]:.2f}',
        f'{r["cpu_seconds"]:.2f}',
        f'{m * m * n / r["seconds"]:.3g}',
        f'{seconds["numpy"] / r["seconds"]:.1f}x' if 'numpy' in seconds else '-',
        f'{one_device / r["seconds"]:.2f}x' if one_device else '-',
        f'{r["peak_bytes"] / 2**20:.0f}', f'{diff:.1e}'])
  return headers, table


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help=f'smoke size {QUICK}')
  parser.add_argument('--m', type=int, default=2000, help='points')
  parser.add_argument('--n', type=int, default=1797, help='samples')
  parser.add_argument('--c', type=int, default=10, help='classes')
  parser.add_argument('--methods', default=','.join(METHODS), help='comma-separated subset')
  parser.add_argument('--device_counts', default=','.join(map(str, DEVICE_COUNTS)),
                      help="forced host devices of the default method's rows (1: the jax row)")
  parser.add_argument('--repeats', type=int, default=REPEATS,
                      help='timed calls per JAX method after the compiling one (median)')
  parser.add_argument('--results', default=None,
                      help="markdown output (default benchmarks/results/gram_<host>.md, with "
                           "--quick none; '-' for none)")
  parser.add_argument('--child', help=argparse.SUPPRESS)
  parser.add_argument('--out', help=argparse.SUPPRESS)
  args = parser.parse_args()
  m, n, c = (QUICK['m'], QUICK['n'], QUICK['c']) if args.quick else (args.m, args.n, args.c)
  if args.child:
    print(json.dumps(run_child(args.child, m, n, c, args.repeats, args.out)))
    return
  methods = [x for x in args.methods.split(',') if x]
  unknown = set(methods) - set(METHODS)
  if unknown:
    parser.error(f'unknown methods {sorted(unknown)}; accepted {METHODS}')
  counts = [int(x) for x in args.device_counts.split(',') if x]
  methods += [f'jax-{k}dev' for k in counts if k > 1]
  if 1 in counts and 'jax' not in methods:
    methods.insert(0, 'jax')
  environment = common.environment_lines()
  setup = (f'm={m} points, N={n} samples, C={c}; input {m * n * c * 4 / 2**20:.0f} MiB float32; '
           f'memory goal {(3 * m * m * 4 + SLACK_BYTES) / 2**20:.0f} MiB above the input; '
           f'{os.cpu_count()} CPUs; JAX: median of {args.repeats} calls')
  print(setup, flush=True)
  rows, results = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for method in methods:
      out = os.path.join(tmp, method + '.npy')
      timed = _run(method, m, n, c, args.repeats, out)
      measured = _run(method, m, n, c, 1, None, env=MEMORY_ENV)
      rows.append(dict(timed, peak_bytes=measured['peak_bytes']))
      results[method] = np.load(out)
      print(f'  {method}: {timed["seconds"]:.2f} s', file=sys.stderr, flush=True)
  load_after = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  headers, table = _table(rows, results, m, n)
  widths = [max(len(h), *(len(r[i]) for r in table)) + 2 for i, h in enumerate(headers)]
  aligned = lambda cells: ''.join(  # noqa: E731  First column left, the others right.
      x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(cells, widths)))
  print('\n'.join([aligned(headers), '-' * sum(widths), *map(aligned, table)]))
  print(f'load average (1, 5, 15 min) at the end: {load_after}')
  path = args.results or (None if args.quick else
                          os.path.join(common.RESULTS_DIR, f'gram_{common.host_kind()}.md'))
  common.write_results(
    '# Bhattacharyya distance matrix\n\n' + '\n'.join(environment) +
    f'\n- load average (1, 5, 15 min) at the end: {load_after}\n\n{setup}\n\n' +
    common.markdown_table(headers, table), path)


if __name__ == '__main__':
  main()
