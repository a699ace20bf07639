r"""Eigensolvers by magnitude (``analysis.eigen.top_by_magnitude``): time and accuracy on InPCA W.

  python -m benchmarks.eigen                # m = 2,000, 8,000, 20,000, k = 10 (~10 min, 2 cores)
  python -m benchmarks.eigen --quick        # m = 300, 600: a smoke test (seconds)
  python -m benchmarks.eigen --m 4000 --methods scipy-topk,jax-topk
  python -m benchmarks.eigen --candidates   # top-k solvers considered for 'jax-topk' (~4 min)

Run from the repository root, with the package installed (``pip install -e .``).

The matrix is the InPCA W = -(1/2) L D L of the Bhattacharyya distances that
``benchmarks.embedding`` times (50 synthetic softmax trajectories), formed in float32 and
handed to each solver as float64, as ``inpca`` does. Each (m, method) runs in a fresh
subprocess without a persistent compilation cache: SciPy methods after an untimed call on a
corner of W (library set-up), JAX methods after a first call on the full W (timed apart:
compilation included); then the median of up to ``MAX_REPEATS`` calls (one for slow methods).
'jax-topk' runs again with XLA's CPU ops on one thread (``ONE_THREAD_METHODS``). The dense
methods ('scipy-full', 'jax-dense') are O(m^3): one is skipped where its time at a smaller m
predicts more than ``DENSE_BUDGET_S``. Accuracy of the top ``TOP`` pairs against a float64
reference, 'scipy-full' where it ran, else 'scipy-topk': the eigenvalue error
max |lambda - lambda_ref| / |lambda_1|, and 1 - cos = 1 - min |<u, u_ref>|. Results:
``results/eigen_<host>.md``.

``--candidates`` compares, at m = ``CANDIDATE_POINTS`` in one process with XLA's CPU ops on one
thread, block Krylov (the library's 'jax-topk') with the alternatives it was chosen over:
subspace iteration with the same number of products with W (and with a block three times
wider), and ``jax.experimental.sparse.linalg.lobpcg_standard`` on W and -W (merged by
magnitude) or on W^2 (then Rayleigh-Ritz on W for the signs). Matrices: the trajectories' W and
the same with ``CANDIDATE_FLAT_RUNS`` runs (float64 ``eigh`` as reference), and
Q diag(lam) Q^T with lam_j = +-(1 + j)^-alpha, random signs, alpha in ``CANDIDATE_DECAYS``
(alpha = 0.1 is nearly flat: the hardest case). Results: ``results/eigen_candidates_<host>.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

from benchmarks import common

POINTS = (2000, 8000, 20000)
QUICK_POINTS = (300, 600)
METHODS = ('scipy-full', 'scipy-topk', 'jax-dense', 'jax-topk')
# A dense (O(m^3)) method is skipped at a size where its time at a smaller size, times the cube
# of the size ratio, exceeds this (the shared machine's load can make it far slower than idle).
DENSE_BUDGET_S = 180.0
# Eigenpairs asked of every method, and how many of them the accuracy columns compare.
K = 10
TOP = 5
# Timed calls per row: up to MAX_REPEATS (median reported), fewer once they have taken
# REPEAT_BUDGET_S together (one call of a slow method is enough; fast ones vary with the load).
MAX_REPEATS = 5
REPEAT_BUDGET_S = 20.0
# Points of the untimed first SciPy call (library set-up, as in benchmarks/embedding.py).
WARM_UP_POINTS = 100
# A child that has not finished after this long is reported as timed out.
CHILD_TIMEOUT_S = 900
# Methods also timed with XLA's CPU ops on one thread (rows '<method>, 1 thread'): on a 2-core
# machine that other jobs share, XLA's multi-threaded small ops (the Krylov blocks' products
# and QRs) can lose time waiting for cores; the one-thread row shows whether they do.
ONE_THREAD_METHODS = ('jax-topk',)
ONE_THREAD_SUFFIX = ', 1 thread'
ONE_THREAD_XLA_FLAGS = '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'

# --candidates: matrix size, decay exponents of the synthetic spectra, seed, and the solvers'
# settings (subspace iteration gets the Krylov method's number of products with W; LOBPCG's
# iteration cap is the library default, and it stops earlier on its own residual test).
CANDIDATE_POINTS = 2000
CANDIDATE_DECAYS = (0.5, 0.1)
CANDIDATE_SEED = 1
# Trajectories of the second InPCA matrix: with many runs, tens of eigenvalues after the large
# negative one are nearly equal (a flat top, hard for top-k solvers).
CANDIDATE_FLAT_RUNS = 500
WIDE_BLOCK_FACTOR = 3
LOBPCG_MAX_ITERATIONS = 100


def inpca_matrix(m: int, runs: int | None = None):
  """(m, m) float32 InPCA W of ``benchmarks.embedding.trajectory_distances(m)`` (centred in
  place), with ``runs`` trajectories instead of its RUNS if given."""
  import numpy as np

  from benchmarks import embedding as embedding_bench

  default_runs = embedding_bench.RUNS
  embedding_bench.RUNS = runs or default_runs  # its module constant, restored below
  try:
    # A writable copy of the symmetric float32 D (a view of a JAX array is read-only), made W.
    w_MxM = np.array(embedding_bench.trajectory_distances(m))
  finally:
    embedding_bench.RUNS = default_runs
  column_means_M = w_MxM.mean(axis=0, dtype=np.float64)
  row_means_M = w_MxM.mean(axis=1, dtype=np.float64)
  w_MxM -= row_means_M.astype(np.float32)[:, None]
  w_MxM -= column_means_M.astype(np.float32)[None, :]
  w_MxM += np.float32(column_means_M.mean())
  w_MxM *= np.float32(-0.5)
  return w_MxM


def _child(spec: dict) -> dict:
  import numpy as np

  from ensembles.analysis import eigen

  common.without_compilation_cache()
  w_MxM = np.load(spec['input']).astype(np.float64)
  method = spec['method']
  first_call_s = None
  if method.startswith('scipy'):
    eigen.top_by_magnitude(w_MxM[:WARM_UP_POINTS, :WARM_UP_POINTS], K, method)
  else:
    first_call_s, _ = common.median_seconds(lambda: eigen.top_by_magnitude(w_MxM, K, method), 1)
  pairs, timings = [], []
  while len(timings) < MAX_REPEATS and sum(timings) < REPEAT_BUDGET_S:
    timings += common.median_seconds(
      lambda: pairs.append(eigen.top_by_magnitude(w_MxM, K, method)), 1)[1]
  np.save(spec['vectors'], pairs[-1].vectors_MxK[:, :TOP])
  return dict(seconds=statistics.median(timings), timings=timings, first_call_s=first_call_s,
              values=pairs[-1].values_K.tolist())


def _dense_estimate(m: int, method: str, earlier: dict) -> str | None:
  """Why a dense method is skipped at m (its O(m^3) time estimated from a smaller m), or None."""
  from ensembles.analysis import eigen

  if method not in eigen.DENSE_METHODS:
    return None
  timed = [(size, rows[method]['seconds']) for size, rows in earlier.items()
           if size < m and 'seconds' in rows.get(method, {})]
  if not timed:
    return None
  size, seconds = max(timed)
  estimate = seconds * (m / size)**3
  if estimate <= DENSE_BUDGET_S:
    return None
  return f'skipped: ~{estimate:.0f} s estimated from m={size} (O(m^3))'


def _run(m: int, methods, workdir: str, earlier: dict) -> dict:
  import numpy as np

  path = os.path.join(workdir, f'w_{m}.npy')
  started = time.perf_counter()
  np.save(path, inpca_matrix(m))
  print(f'  m={m}: W in {time.perf_counter() - started:.1f} s', file=sys.stderr, flush=True)
  results = {}
  rows = [(method, False) for method in methods]
  rows += [(method, True) for method in methods if method in ONE_THREAD_METHODS]
  for method, one_thread in rows:
    label = method + (ONE_THREAD_SUFFIX if one_thread else '')
    skip = _dense_estimate(m, method, earlier)
    if skip:
      results[label] = {'error': skip}
      print(f'  m={m} {label}: {skip}', file=sys.stderr, flush=True)
      continue
    vectors = os.path.join(workdir, f'u_{m}_{len(results)}.npy')
    spec = dict(input=path, method=method, vectors=vectors)
    result = common.run_child(['-m', 'benchmarks.eigen', '--child', json.dumps(spec)],
                              CHILD_TIMEOUT_S, env=_one_thread_env() if one_thread else None)
    if 'error' not in result:
      result['vectors'] = np.load(vectors)
    results[label] = result
    status = result.get('error') or f"{result['seconds']:.2f} s"
    print(f'  m={m} {label}: {status}', file=sys.stderr, flush=True)
  os.remove(path)
  return results


def _one_thread_env() -> dict[str, str]:
  return {'XLA_FLAGS': f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD_XLA_FLAGS}".strip()}


def _accuracy(result: dict, reference: dict) -> tuple[str, str]:
  """(max |dlambda| / |lambda_1|, 1 - min |<u, u_ref>|) over the top TOP pairs."""
  import numpy as np

  lam, ref = np.asarray(result['values'][:TOP]), np.asarray(reference['values'][:TOP])
  cosines = np.abs(np.sum(result['vectors'] * reference['vectors'], axis=0))
  return (f'{np.abs(lam - ref).max() / abs(ref[0]):.1e}',
          f'{max(1.0 - cosines.min(), 0.0):.1e}')


def _table(results: dict) -> str:
  headers = ['m', 'method', 'seconds', 'first call s', f'top-{TOP} eigenvalue error',
             f'top-{TOP} 1 - cos', 'reference']
  rows = []
  for m, by_method in results.items():
    name = next((n for n in ('scipy-full', 'scipy-topk')
                 if 'error' not in by_method.get(n, {'error': 'not run'})), None)
    for method, result in by_method.items():
      if 'error' in result:
        rows.append([m, method, result['error'][:70], '-', '-', '-', '-'])
        continue
      first = result['first_call_s']
      accuracy = _accuracy(result, by_method[name]) if name and name != method else ('-', '-')
      rows.append([m, method, f"{result['seconds']:.2f}", '-' if first is None else f'{first:.2f}',
                   *accuracy, name if name != method else '-'])
  return common.markdown_table(headers, rows)


def _orthonormal(y):
  import jax.numpy as jnp

  return jnp.linalg.qr(y)[0]


def _ritz_by_magnitude(w, basis, k):
  """Top k Ritz pairs by |theta| of w in the orthonormal ``basis``."""
  import jax.numpy as jnp

  t = basis.T @ (w @ basis)
  theta, v = jnp.linalg.eigh(0.5 * (t + t.T))
  order = jnp.argsort(-jnp.abs(theta))[:k]
  return theta[order], basis @ v[:, order]


def _subspace_iteration(w, k, block, steps):
  """Halko et al. (2011) Alg. 4.4 then Rayleigh-Ritz: Q = orth(W^steps Omega)."""
  import jax

  from ensembles.analysis import eigen

  omega = jax.random.normal(jax.random.key(eigen.KRYLOV_SEED), (w.shape[0], block), w.dtype)
  basis = jax.lax.fori_loop(0, steps, lambda _, q: _orthonormal(w @ q), _orthonormal(omega))
  return _ritz_by_magnitude(w, basis, k)


def _lobpcg_both_ends(w, k):
  """LOBPCG on W and on -W (largest algebraic of each), merged by magnitude."""
  import jax
  import jax.numpy as jnp
  from jax.experimental.sparse.linalg import lobpcg_standard

  from ensembles.analysis import eigen

  x = jax.random.normal(jax.random.key(eigen.KRYLOV_SEED), (w.shape[0], k), w.dtype)
  top, u_top, _ = lobpcg_standard(w, x, m=LOBPCG_MAX_ITERATIONS)
  bottom, u_bottom, _ = lobpcg_standard(-w, x, m=LOBPCG_MAX_ITERATIONS)
  lam = jnp.concatenate([top, -bottom])
  order = jnp.argsort(-jnp.abs(lam))[:k]
  return lam[order], jnp.concatenate([u_top, u_bottom], axis=1)[:, order]


def _lobpcg_squared(w, k):
  """LOBPCG on W^2 (largest |lambda| first), then Rayleigh-Ritz on W for the signs."""
  import jax
  from jax.experimental.sparse.linalg import lobpcg_standard

  from ensembles.analysis import eigen

  x = jax.random.normal(jax.random.key(eigen.KRYLOV_SEED), (w.shape[0], k), w.dtype)
  _, u, _ = lobpcg_standard(lambda v: w @ (w @ v), x, m=LOBPCG_MAX_ITERATIONS)
  return _ritz_by_magnitude(w, u, k)


def _candidate_matrices(m: int):
  """(name, float64 W, reference lam by |lam| descending) for --candidates."""
  import numpy as np
  import scipy.linalg

  for runs in (None, CANDIDATE_FLAT_RUNS):
    w = inpca_matrix(m, runs).astype(np.float64)
    lam = scipy.linalg.eigvalsh(w)
    name = 'trajectories W' + (f', {runs} runs' if runs else '')
    yield name, w, lam[np.argsort(-np.abs(lam))]
  rng = np.random.default_rng(CANDIDATE_SEED)
  q, _ = np.linalg.qr(rng.standard_normal((m, m)))
  for alpha in CANDIDATE_DECAYS:
    lam = (1.0 + np.arange(m))**-alpha * rng.choice([-1.0, 1.0], m)
    yield f'+-(1+j)^-{alpha:g}', (q * lam) @ q.T, lam


def candidates(m: int) -> str:
  """Markdown table: time and top-TOP / top-K eigenvalue errors (max |dlambda| / |lambda_1|)
  of each top-k candidate."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from ensembles.analysis import eigen

  block = K + eigen.KRYLOV_OVERSAMPLE
  solvers = {
    f'block Krylov (jax-topk), b={block} q={eigen.KRYLOV_STEPS}':
      functools.partial(eigen._krylov_by_magnitude, k=K),  # pylint: disable=protected-access
    f'subspace iteration, b={block} q={eigen.KRYLOV_STEPS}':
      functools.partial(_subspace_iteration, k=K, block=block, steps=eigen.KRYLOV_STEPS),
    f'subspace iteration, b={WIDE_BLOCK_FACTOR * block} q={eigen.KRYLOV_STEPS}':
      functools.partial(_subspace_iteration, k=K, block=WIDE_BLOCK_FACTOR * block,
                        steps=eigen.KRYLOV_STEPS),
    'LOBPCG on W and -W': functools.partial(_lobpcg_both_ends, k=K),
    'LOBPCG on W^2, Ritz on W': functools.partial(_lobpcg_squared, k=K),
  }
  rows = []
  for name, w64, lam_ref in _candidate_matrices(m):
    w = jnp.asarray(w64, jnp.float32)
    for solver, fn in solvers.items():
      run = jax.jit(fn)
      with jax.default_matmul_precision('highest'):
        jax.block_until_ready(run(w))
        cpu_started = time.process_time()
        seconds, _ = common.median_seconds(lambda: jax.block_until_ready(run(w)), 1)
        cpu_seconds = time.process_time() - cpu_started
        lam = np.asarray(run(w)[0], np.float64)
      errors = [np.abs(lam[:n] - lam_ref[:n]).max() / abs(lam_ref[0]) for n in (TOP, K)]
      rows.append([name, solver, f'{seconds:.2f}', f'{cpu_seconds:.2f}',
                   *(f'{e:.1e}' for e in errors)])
      print(f'  {name} / {solver}: {seconds:.2f} s', file=sys.stderr, flush=True)
  headers = ['matrix', 'solver', 'seconds', 'CPU s', f'top-{TOP} eigenvalue error',
             f'top-{K} eigenvalue error']
  return common.markdown_table(headers, rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help=f'm = {QUICK_POINTS}: a smoke test')
  parser.add_argument('--m', type=common.int_list, default=None,
                      help=f'points (default {POINTS})')
  parser.add_argument('--methods', type=lambda s: tuple(s.split(',')), default=METHODS)
  parser.add_argument('--candidates', action='store_true',
                      help=f'compare the top-k candidates at m = {CANDIDATE_POINTS} instead')
  parser.add_argument('--out', default=None,
                      help="markdown output (default benchmarks/results/eigen_<host>.md, "
                           "eigen_candidates_<host>.md with --candidates; --quick: none); "
                           "'-' for none")
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    common.emit_result(_child(json.loads(args.child)))
    return
  import tempfile

  if args.candidates:
    os.environ.update(_one_thread_env())  # before JAX starts: see ONE_THREAD_METHODS
  environment = '\n'.join(common.environment_lines())
  if args.candidates:
    m = (args.m or (CANDIDATE_POINTS,))[0]
    text = '\n\n'.join([
      '# Top-k eigensolver candidates', environment,
      f'm = {m}, k = {K}, float32, jit on the default backend, one process, XLA CPU ops on one '
      'thread; seconds: the second call (the first compiles); CPU s: its process CPU time, '
      'which depends less on what else the machine runs.', candidates(m)]) + '\n'
    name = 'eigen_candidates'
  else:
    points = args.m or (QUICK_POINTS if args.quick else POINTS)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
      for m in points:
        results[m] = _run(m, args.methods, workdir, results)
    text = '\n\n'.join([
      '# Eigensolvers by magnitude' + (' (--quick smoke sizes)' if args.quick else ''),
      environment,
      f'Input: InPCA W of Bhattacharyya distances of synthetic trajectories '
      f'(benchmarks.embedding); k = {K}; median of up to {MAX_REPEATS} calls per row (within '
      f'{REPEAT_BUDGET_S:g} s), each method in a fresh process; '
      'SciPy in float64, JAX in float32 on the default backend.',
      _table(results)]) + '\n'
    name = 'eigen'
  print(text)
  out = args.out
  if out is None and not args.quick:
    out = os.path.join(common.RESULTS_DIR, f'{name}_{common.host_kind()}.md')
  common.write_results(text, out)


if __name__ == '__main__':
  main()
