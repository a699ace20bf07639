r"""InPCA eigendecomposition time: ``ensembles.analysis.inpca`` full (eigh) and top-k (Lanczos).

  python -m benchmarks.embedding            # m = 2,000 and 8,000 points (~3-5 min on 2 cores)
  python -m benchmarks.embedding --quick    # m = 300 and 600: a smoke test (seconds)
  python -m benchmarks.embedding --m 4000 --methods topk

Run from the repository root, with the package installed (``pip install -e .``).

The input is a Bhattacharyya distance matrix of trajectory-like points (not random ones, whose
flat spectrum would be the Lanczos solver's worst case): ``RUNS`` runs, each with its own
random logits L_r (N samples x C classes, standard normal), recorded at ``m / RUNS`` times t in
[0, ``MAX_TEMPERATURE``]: P = softmax(t L_r), from ignorance (t = 0) towards a run's own
sharp predictions. Distances come from ``analysis.bhattacharyya`` (not timed).

Each (m, method) runs in a fresh subprocess: an untimed call on a corner of D (library set-up),
then ``analysis.inpca(D, k, method)`` timed (``--repeats`` calls, median). Columns: seconds;
ES_k, the explained stress of the k components; and, for top-k, the largest difference of its
eigenvalues from the full solver's (relative to the largest |lambda|), where both ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks import common

POINTS = (2000, 8000)
QUICK_POINTS = (300, 600)
METHODS = ('full', 'topk')
# Components asked of both methods (the top-k solver's default, analysis.embedding.DEFAULT_TOP_K).
K = 20
# Trajectory-like input: runs, probe samples, classes, and the largest softmax temperature.
RUNS = 50
SAMPLES = 200
CLASSES = 10
MAX_TEMPERATURE = 4.0
SEED = 0
REPEATS = 1
# Points of the untimed first call (library set-up: the first m = 300 eigh took 1.4 s, the
# next m = 600 one 0.4 s).
WARM_UP_POINTS = 100
QUICK_REPEATS = 2
# A child that has not finished after this long is reported as timed out (full eigh at
# m = 8,000 took ~100 s on 2 cores).
CHILD_TIMEOUT_S = 1200


def trajectory_distances(m: int):
  """(m, m) float32 Bhattacharyya distances of ``RUNS`` synthetic trajectories (see above)."""
  import jax
  import numpy as np

  from ensembles import analysis

  rng = np.random.default_rng(SEED)
  runs = min(RUNS, m)
  times = -(-m // runs)
  logits_RxNxC = rng.standard_normal((runs, SAMPLES, CLASSES)).astype(np.float32)
  t_T = np.linspace(0.0, MAX_TEMPERATURE, times, dtype=np.float32)
  probs = jax.nn.softmax(t_T[None, :, None, None] * logits_RxNxC[:, None], axis=-1)
  probs_MxNxC = np.asarray(probs).reshape(-1, SAMPLES, CLASSES)[:m]
  return np.asarray(analysis.bhattacharyya(probs_MxNxC))


def _child(spec: dict) -> dict:
  import numpy as np

  from ensembles import analysis

  d_MxM = np.load(spec['input'])
  warm_up = d_MxM[:WARM_UP_POINTS, :WARM_UP_POINTS]
  analysis.inpca(warm_up, k=K, method=spec['method'])  # LAPACK / ARPACK first-call set-up.
  fits = []

  def run():
    fits.append(analysis.inpca(d_MxM, k=K, method=spec['method']))

  seconds, timings = common.median_seconds(run, spec['repeats'])
  fit = fits[-1]
  return dict(seconds=seconds, timings=timings, eigenvalues=fit.eigenvalues.tolist(),
              explained_stress=float(fit.explained_stress[-1]))


def _run(m: int, methods, repeats: int, workdir: str) -> dict:
  import numpy as np

  path = os.path.join(workdir, f'd_{m}.npy')
  started = time.perf_counter()
  np.save(path, trajectory_distances(m))
  print(f'  m={m}: distances in {time.perf_counter() - started:.1f} s', file=sys.stderr,
        flush=True)
  results = {}
  for method in methods:
    spec = dict(input=path, method=method, repeats=repeats)
    results[method] = common.run_child(
      ['-m', 'benchmarks.embedding', '--child', json.dumps(spec)], CHILD_TIMEOUT_S)
    status = results[method].get('error') or f"{results[method]['seconds']:.2f} s"
    print(f'  m={m} {method}: {status}', file=sys.stderr, flush=True)
  return results


def _table(results: dict) -> str:
  import numpy as np

  headers = ['m', 'method', 'seconds', f'ES_{K}', 'max |dlambda| / max |lambda| vs full']
  rows = []
  for m, by_method in results.items():
    full = by_method.get('full', {}).get('eigenvalues')
    for method, result in by_method.items():
      if 'error' in result:
        rows.append([m, method, f"error: {result['error'][:60]}", '-', '-'])
        continue
      diff = '-'
      if method != 'full' and full:
        lam, ref = np.asarray(result['eigenvalues']), np.asarray(full)
        diff = f'{np.abs(lam - ref).max() / np.abs(ref).max():.1e}'
      rows.append([m, method, f"{result['seconds']:.2f}", f"{result['explained_stress']:.4f}",
                   diff])
  return common.markdown_table(headers, rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help=f'm = {QUICK_POINTS}: a smoke test')
  parser.add_argument('--m', type=common.int_list, default=None,
                      help=f'points (default {POINTS})')
  parser.add_argument('--methods', type=lambda s: tuple(s.split(',')), default=METHODS)
  parser.add_argument('--repeats', type=int, default=None)
  parser.add_argument('--out', default=None,
                      help="markdown output (default benchmarks/results/embedding_<host>.md; "
                           "--quick: none); '-' for none")
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    common.emit_result(_child(json.loads(args.child)))
    return
  import tempfile

  points = args.m or (QUICK_POINTS if args.quick else POINTS)
  repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
  with tempfile.TemporaryDirectory() as workdir:
    results = {m: _run(m, args.methods, repeats, workdir) for m in points}
  text = '\n\n'.join([
    '# InPCA eigendecomposition' + (' (--quick smoke sizes)' if args.quick else ''),
    '\n'.join(common.environment_lines()),
    f'Input: Bhattacharyya distances of {RUNS} synthetic trajectories (softmax(t L), t in '
    f'[0, {MAX_TEMPERATURE:g}], {SAMPLES} samples x {CLASSES} classes); k = {K}; median of '
    f'{repeats} call(s) per row, each method in a fresh process; float64 on the host.',
    _table(results)]) + '\n'
  print(text)
  out = args.out
  if out is None and not args.quick:
    out = os.path.join(common.RESULTS_DIR, f'embedding_{common.host_kind()}.md')
  common.write_results(text, out)


if __name__ == '__main__':
  main()
