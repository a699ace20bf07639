r"""Landmark against full InPCA on a real store: eigenvalues, explained stress, coordinates, ranks.

  python -m benchmarks.landmark_accuracy --workdir=STORE                  # m = 2,000-20,000
  python -m benchmarks.landmark_accuracy --workdir=STORE --sizes 2000 --fractions 4
  python -m benchmarks.landmark_accuracy --workdir=STORE --sizes 20000 --landmarks 1000,2000
  python -m benchmarks.landmark_accuracy --workdir=STORE --split test --out -

Run from the repository root, with the package installed (``pip install -e .``).

For each size m the points are a member subset of the store (members of no divergence, evenly
spread through the sweep order so every cohort is represented, all their recording times: m
rounded to whole members; the whole store where it has fewer points). Each m runs in a fresh
subprocess, which

1. reads the subset's probabilities into memory (not timed);
2. full InPCA: ``analysis.bhattacharyya`` of all m points and ``analysis.inpca(D, k)`` (top-k
   eigenpairs of the full W by default, ``--method``; ES_k uses the full ||W||_F^2), timed;
3. draws ``--pairs`` random pairs of points and keeps their true d_B, then frees D;
4. for each fraction f, landmark InPCA with L = m / f (and with each L of ``--landmarks``
   below m and not within 5% of another): ``analysis.mapping.embed_trajectories``
   (stratified landmarks, out-of-sample placement of every point), timed end to end, JIT
   compilation for that L included. ``--fractions 1`` times the full map (L = m).

Columns, landmark against full:
- ``lam err``: the largest relative error of the top-5 eigenvalues, the landmark ones scaled by
  m / L (W's eigenvalues are sums over points: an L-point fit's are L / m of the full ones for a
  representative sample; the coordinates need no scaling).
- ``ES_1..5``: explained stress of the fit (the landmark fit's is that of its L x L W).
- ``lam_1..5 / points``: the eigenvalues over the points of the fit (m, or L): comparable.
- ``coord err``: per axis a = 1..3, RMS(x_landmark - x_full) / std(x_full) over all m points,
  after centring both and flipping each landmark axis to agree in sign with the full one.
- ``matched axis err``: the same error against the landmark axis (among all k, of the same
  eigenvalue sign) most correlated with full axis a, named where it is not a: near-equal
  eigenvalues can trade places or mix their axes, which the plain error counts as wrong.
- ``rho_5``, ``rho_10``: Spearman rank correlation, over the sampled pairs, of the embedded
  pseudo-distance sum_{a<=k} sign(lam_a) (x_ia - x_ja)^2 with the true d_B (the full row: how
  well the full InPCA itself keeps the order of distances).
- ``seconds``: full: Gram + eigensolver; landmark: ``embed_trajectories`` (Gram of the
  landmarks, their eigensolver, every point's distances to them, placement, progress).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from benchmarks import common

SIZES = (2000, 5000, 10000, 20000)
# L = m / fraction.
FRACTIONS = (2, 4, 10)
# A fixed L (--landmarks) within this fraction of another L of the same m is not run again.
SAME_COUNT = 0.05
# Components of both embeddings (the rank correlations use the first 5 and all of them).
K = 10
# Components whose eigenvalues, explained stress and rank correlation are reported.
TOP = 5
# Axes whose coordinates are compared.
COORD_AXES = 3
# Random pairs of points of the rank correlation, and their seed.
PAIRS = 20000
SEED = 0
# The full InPCA's eigensolver: top-k eigenpairs of the full W, equal to the full eigh's to
# ~1e-15 (benchmarks/results/embedding_cpu-2cores.md) at a fraction of its time.
METHOD = 'topk'
# A child (one m: full and every L) that has not finished after this long is reported as
# timed out.
CHILD_TIMEOUT_S = 3 * 3600


class _Subset:
  """A member subset of a store, in memory: what ``embed_trajectories`` reads of a store."""

  def __init__(self, traj, members_E, probs_ExTxNxC, split: str):
    self.members = [traj.members[e] for e in members_E]
    self.epochs = traj.epochs
    self.status = [traj.status[e] for e in members_E]
    self.steps = traj.steps[members_E]
    self.metrics = {name: values[members_E] for name, values in traj.metrics.items()}
    self._probs = probs_ExTxNxC
    self._labels = traj.labels(split)
    self._split = split

  def probs(self, split: str):
    assert split == self._split, (split, self._split)
    return self._probs

  def labels(self, split: str):
    del split
    return self._labels


def choose_members(ok_E, points_per_member: int, size: int):
  """Members of the subset: round(size / T) of the usable ones, evenly spread in sweep order."""
  import numpy as np

  usable = np.flatnonzero(ok_E)
  count = min(len(usable), max(1, round(size / points_per_member)))
  return usable[np.unique(np.linspace(0, len(usable) - 1, count).round().astype(int))]


def _spearman(a, b) -> float:
  import scipy.stats

  return float(scipy.stats.spearmanr(a, b).statistic)


def pseudo_distances(coords_PxK, signs_K, i_Q, j_Q):
  """(Q,) sum_a sign(lam_a) (x_ia - x_ja)^2 over the pairs (i_Q, j_Q)."""
  import numpy as np

  diff = np.asarray(coords_PxK, np.float64)[i_Q] - np.asarray(coords_PxK, np.float64)[j_Q]
  return (diff**2 * signs_K).sum(axis=1)


def _axis_error(x_P, ref_P) -> float:
  """RMS(x - ref) / std(ref), both centred, x's sign flipped to agree with ref."""
  import numpy as np

  x_P, ref_P = x_P - x_P.mean(), ref_P - ref_P.mean()
  x_P = -x_P if x_P @ ref_P < 0 else x_P
  return float(np.sqrt(np.mean((x_P - ref_P)**2)) / ref_P.std())


def compare(full, lam_K, coords_PxK, scale: float) -> dict:
  """Landmark against full: eigenvalue errors, coordinate errors, rank correlations.

  ``coord_err`` compares axis a with axis a; ``matched`` compares full axis a with the landmark
  axis of the same eigenvalue sign most correlated with it, (that axis, its error): where two
  eigenvalues are close, a small change of the fitted points can swap or mix their axes.
  """
  import numpy as np

  ref_lam = np.asarray(full['eigenvalues'])
  lam_err = np.abs(np.asarray(lam_K[:TOP]) * scale - ref_lam[:TOP]) / np.abs(ref_lam[:TOP])
  x = np.asarray(coords_PxK, np.float64)
  x = x - x.mean(axis=0)
  ref = full['coords'] - full['coords'].mean(axis=0)
  coord_err = [_axis_error(x[:, a], ref[:, a]) for a in range(COORD_AXES)]
  corr_KxA = np.abs(x.T @ ref[:, :COORD_AXES]) / np.outer(
      np.linalg.norm(x, axis=0), np.linalg.norm(ref[:, :COORD_AXES], axis=0))
  same_sign_KxA = (np.asarray(lam_K)[:, None] < 0) == (ref_lam[None, :COORD_AXES] < 0)
  best_A = np.argmax(np.where(same_sign_KxA, corr_KxA, -1.0), axis=0)
  matched = [(int(b), _axis_error(x[:, b], ref[:, a])) for a, b in enumerate(best_A)]
  return dict(lam_err=lam_err.tolist(), coord_err=coord_err, matched=matched,
              **ranks(coords_PxK, lam_K, full['pairs']))


def ranks(coords_PxK, lam_K, pairs) -> dict:
  import numpy as np

  i_Q, j_Q, d_Q = pairs
  signs_K = np.where(np.asarray(lam_K) < 0, -1.0, 1.0)
  return {f'rho_{k}': _spearman(pseudo_distances(coords_PxK[:, :k], signs_K[:k], i_Q, j_Q), d_Q)
          for k in (TOP, K)}


def _child(spec: dict) -> dict:
  import numpy as np

  import ensembles
  from ensembles import analysis
  from ensembles.analysis import mapping
  from ensembles.store.format import STATUS_DIVERGED

  traj = ensembles.load_trajectories(spec['workdir'])
  split, num_times = spec['split'], len(traj.epochs)
  ok_E = np.asarray([s != STATUS_DIVERGED for s in traj.status]) & traj.recorded.all(axis=1)
  members_E = choose_members(ok_E, num_times, spec['size'])
  members_P = np.repeat(members_E, num_times)
  times_P = np.tile(np.arange(num_times), len(members_E))
  started = time.perf_counter()
  probs_PxNxC = traj.read_points(split, members_P, times_P)
  read_s = time.perf_counter() - started
  m = len(probs_PxNxC)
  subset = _Subset(traj, members_E, probs_PxNxC.reshape(len(members_E), num_times,
                                                         *probs_PxNxC.shape[1:]), split)
  print(f'  m={m}: {len(members_E)} members read in {read_s:.1f} s', file=sys.stderr, flush=True)
  # Untimed: JAX compiles the kernels and SciPy sets up on a first call.
  warm_up = _Subset(traj, members_E[:1], subset.probs(split)[:1], split)
  mapping.embed_trajectories(warm_up, k=min(K, num_times - 1), landmarks=num_times // 2 + 1,
                             split=split)

  started = time.perf_counter()
  d_MxM = np.asarray(analysis.bhattacharyya(probs_PxNxC))
  gram_s = time.perf_counter() - started
  fit = analysis.inpca(d_MxM, k=K, method=spec['method'])
  full_s = time.perf_counter() - started
  rng = np.random.default_rng(SEED)
  i_Q, j_Q = rng.integers(0, m, (2, spec['pairs']))
  keep = i_Q != j_Q
  i_Q, j_Q = i_Q[keep], j_Q[keep]
  full = dict(eigenvalues=fit.eigenvalues, coords=fit.coords,
              pairs=(i_Q, j_Q, d_MxM[i_Q, j_Q].astype(np.float64)))
  del d_MxM
  print(f'  m={m}: full InPCA in {full_s:.1f} s (Gram {gram_s:.1f} s)', file=sys.stderr,
        flush=True)
  rows = [dict(kind='full', landmarks=m, seconds=full_s, gram_seconds=gram_s,
               eigenvalues=fit.eigenvalues[:TOP].tolist(),
               explained_stress=fit.explained_stress[:TOP].tolist(),
               **ranks(fit.coords, fit.eigenvalues, full['pairs']))]
  counts = [max(K + 1, m // f) for f in spec['fractions']]
  for num_landmarks in spec['landmarks']:
    if num_landmarks < m and all(abs(num_landmarks - c) > SAME_COUNT * c for c in counts):
      counts.append(num_landmarks)
  for num_landmarks in sorted(counts, reverse=True):
    started = time.perf_counter()
    emb = mapping.embed_trajectories(subset, k=K, landmarks=num_landmarks, split=split)
    seconds = time.perf_counter() - started
    rows.append(dict(kind='landmark', landmarks=num_landmarks, seconds=seconds,
                     eigenvalues=emb.eigenvalues[:TOP].tolist(),
                     explained_stress=emb.explained_stress[:TOP].tolist(),
                     **compare(full, emb.eigenvalues, emb.coords, m / num_landmarks)))
    print(f'  m={m} L={num_landmarks}: {seconds:.1f} s', file=sys.stderr, flush=True)
  return dict(points=m, members=len(members_E), times=num_times, read_seconds=read_s,
              peak_rss_bytes=common.rss_bytes('VmHWM'), rows=rows)


def _fmt(values, digits: int = 3) -> str:
  return ', '.join(f'{v:.{digits}f}' for v in values)


def _matched(matched) -> str:
  return ', '.join(f'{err:.3f}' + ('' if b == a else f' (x{b + 1})')
                   for a, (b, err) in enumerate(matched))


def _table(results: dict) -> str:
  headers = ['m', 'members x times', 'L', 'seconds', f'lam_1..{TOP} / points',
             f'lam err (max of top {TOP})', f'ES_1..{TOP}', f'coord err x1..x{COORD_AXES}',
             'matched axis err', f'rho_{TOP}', f'rho_{K}']
  rows = []
  for size, result in sorted(results.items()):
    if 'error' in result:
      rows.append([size, '-', '-', f"error: {result['error'][:80]}", *['-'] * 7])
      continue
    m = result['points']
    shape = f"{result['members']} x {result['times']}"
    for row in result['rows']:
      is_full = row['kind'] == 'full'
      num_landmarks = row['landmarks']
      rows.append([
          f'{m:,}', shape,
          'full' if is_full else f'{num_landmarks:,} (m/{m / num_landmarks:.3g})',
          f"{row['seconds']:.1f}" + (f" (Gram {row['gram_seconds']:.1f})" if is_full else ''),
          ', '.join(f'{lam / num_landmarks:.3g}' for lam in row['eigenvalues']),
          '-' if is_full else f"{max(row['lam_err']):.1e}",
          _fmt(row['explained_stress']),
          '-' if is_full else _fmt(row['coord_err']),
          '-' if is_full else _matched(row['matched']),
          f"{row[f'rho_{TOP}']:.4f}", f"{row[f'rho_{K}']:.4f}"])
  return common.markdown_table(headers, rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', help='the trajectories store (required)')
  parser.add_argument('--split', default='train', choices=('train', 'test'))
  parser.add_argument('--sizes', type=common.int_list, default=SIZES,
                      help=f'points m (default {SIZES})')
  parser.add_argument('--fractions', type=common.int_list, default=FRACTIONS,
                      help=f'L = m / fraction (default {FRACTIONS})')
  parser.add_argument('--landmarks', type=common.int_list, default=(),
                      help='fixed numbers of landmarks L, also (those below m)')
  parser.add_argument('--pairs', type=int, default=PAIRS, help='pairs of the rank correlation')
  parser.add_argument('--method', default=METHOD, choices=('auto', 'full', 'topk'),
                      help="the full InPCA's eigensolver")
  parser.add_argument('--name', default=None, help='store name in the output file name '
                      "(default: the workdir's base name)")
  parser.add_argument('--out', default=None,
                      help="markdown output (default benchmarks/results/landmark_accuracy_<name>"
                           ".md); '-' for none")
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    common.emit_result(_child(json.loads(args.child)))
    return
  if not args.workdir:
    parser.error('--workdir (a trajectories store) is required.')
  workdir = os.path.abspath(args.workdir)
  name = args.name or os.path.basename(workdir.rstrip('/'))
  environment = common.environment_lines()
  results = {}
  for size in args.sizes:
    spec = dict(workdir=workdir, split=args.split, size=size, fractions=args.fractions,
                landmarks=args.landmarks,
                pairs=args.pairs, method=args.method)
    started = time.perf_counter()
    results[size] = common.run_child(
        ['-m', 'benchmarks.landmark_accuracy', '--child', json.dumps(spec)], CHILD_TIMEOUT_S)
    status = results[size].get('error') or f'{time.perf_counter() - started:.0f} s'
    print(f'm={size}: {status}', file=sys.stderr, flush=True)
  peaks = ', '.join(f"m={r['points']:,}: {r['peak_rss_bytes'] / 2**30:.1f} GiB"
                    for r in results.values() if 'error' not in r)
  text = '\n\n'.join([
      f'# Landmark against full InPCA: {name}',
      '\n'.join(environment),
      f'Store: `{workdir}`, {args.split} probes. Points: member subsets (evenly spread, all '
      f'recording times). k = {K}; full InPCA: `inpca(D, k, method={args.method!r})`; '
      f'landmarks: `embed_trajectories(k={K}, landmarks=L)`; rank correlations over '
      f'{args.pairs:,} random pairs; one process per m, JAX on its default (1 CPU) device. '
      f'Peak resident memory per process: {peaks or "-"}.',
      _table(results)]) + '\n'
  print(text)
  out = args.out
  if out is None:
    out = os.path.join(common.RESULTS_DIR, f'landmark_accuracy_{name}.md')
  common.write_results(text, out)


if __name__ == '__main__':
  main()
