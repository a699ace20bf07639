"""The whole analysis of a trajectories store, as one library call (used by launch/analyze.py).

``analyze_trajectories(traj, outdir)`` embeds the checkpoints of every non-diverged member with
InPCA, places ignorance, truth and the geodesic between them in the embedding, compares
trajectories at equal progress (factor table, tube widths) and writes arrays, tables and
pictures under ``outdir``. ``traj`` is what ``ensembles.load_trajectories(workdir)`` returns.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Protocol

import numpy as np

from analysis import distances
from analysis import embedding as embedding_lib
from analysis import factors
from analysis import geometry
from analysis import plots

# Most points embedded by default: the Gram matrix costs ~2 s and the full eigh ~1.5 s at 2,000
# points on 2 cores. Above it, checkpoints are thinned evenly (first and last kept), then
# members are sampled.
DEFAULT_MAX_POINTS = 2000

# InPCA components kept (coords, eigenvalues and ES_k in embedding.npz).
DEFAULT_COMPONENTS = 10

# Explained stress values printed: ES_1..ES_5.
REPORTED_COMPONENTS = 5

# Progress values at which trajectories are compared (factor table, tube width).
DEFAULT_GRID_SIZE = 10

# Points along the ignorance -> truth geodesic drawn in the embedding.
GEODESIC_POINTS = 21

# Seed of the member subsample, when there are too many members to embed.
SUBSAMPLE_SEED = 0

STATUS_DIVERGED = 'diverged'


class TrajectoryStore(Protocol):
  """What the analysis reads from ``ensembles.load_trajectories(workdir)``."""
  members: list[dict[str, Any]]
  epochs: np.ndarray
  status: list[str]

  def probs(self, split: str) -> np.ndarray: ...

  def labels(self, split: str) -> np.ndarray: ...


class AnalysisSummary(NamedTuple):
  """What analyze_trajectories did.

  Attributes:
    outdir: where the files went.
    split: probe split analysed.
    members: original indices of the members analysed.
    dropped: original indices of the members left out because they diverged.
    num_points: points embedded.
    total_points: checkpoints of the analysed members (num_points < total_points: subsample).
    explained_stress: (k,) cumulative ES_1..ES_k.
    eigenvalues: (k,) InPCA eigenvalues.
    factor_table: distances at equal progress grouped by the differing factor.
    files: paths written.
    notes: human-readable remarks (drops, subsampling, grid) in order.
  """
  outdir: str
  split: str
  members: tuple[int, ...]
  dropped: tuple[int, ...]
  num_points: int
  total_points: int
  explained_stress: np.ndarray
  eigenvalues: np.ndarray
  factor_table: factors.FactorTable
  files: tuple[str, ...]
  notes: tuple[str, ...]

  def lines(self) -> list[str]:
    """The summary as printable lines, ES_1..ES_5 included."""
    shown = self.explained_stress[:REPORTED_COMPONENTS]
    es = ', '.join(f'ES_{k + 1}={v:.4f}' for k, v in enumerate(shown))
    return [*self.notes,
            f'Embedded {self.num_points} of {self.total_points} points from '
            f'{len(self.members)} members ({self.split} probes).',
            f'Explained stress: {es}',
            'Factor table (mean d_B at equal progress):', self.factor_table.to_markdown(),
            'Wrote: ' + ', '.join(self.files)]


def _members_with_nan(probs_ExTxNxC: np.ndarray, rows: list[int]) -> None:
  """Raises ValueError naming the first non-diverged member with non-finite probabilities."""
  for e in rows:
    finite_T = np.isfinite(probs_ExTxNxC[e].reshape(probs_ExTxNxC.shape[1], -1)).all(axis=1)
    if not finite_T.all():
      bad = np.flatnonzero(~finite_T)
      raise ValueError(f'member {e} has status "ok" but NaN/inf probabilities at checkpoints '
                       f'{bad[:5].tolist()}: the store is inconsistent; mark it diverged or '
                       'retrain it.')


def _choose_points(num_members: int, num_times: int, max_points: int, notes: list[str]):
  """(member positions, checkpoint indices) to embed, at most max_points in all."""
  times = min(num_times, max(2, max_points // num_members))
  t_idx = np.unique(np.round(np.linspace(0, num_times - 1, times)).astype(int))
  members = np.arange(num_members)
  if num_members * len(t_idx) > max_points:
    keep = max(1, max_points // len(t_idx))
    members = np.sort(np.random.default_rng(SUBSAMPLE_SEED).choice(num_members, keep,
                                                                   replace=False))
  if len(t_idx) < num_times or len(members) < num_members:
    notes.append(f'Subsample: embedding {len(t_idx)} of {num_times} checkpoints of '
                 f'{len(members)} of {num_members} members (max_points={max_points}).')
  return members, t_idx


def progress_grid(progress_ExT: np.ndarray, size: int,
                  notes: list[str] | None = None) -> np.ndarray:
  """The equal-progress grid: from where every member starts to where the median member gets.

  A pair is compared only where both members reach (``resample``'s mask), so one slow member
  does not shrink the grid for all others.

  Args:
    progress_ExT: progress of each member at each recording time.
    size: number of grid values.
    notes: if given, a note is appended when the members share no progress range (the grid
      then spans all progress values).

  Returns:
    (size,) increasing progress values.
  """
  lo = float(progress_ExT[:, 0].max())
  hi = float(np.median(progress_ExT.max(axis=1)))
  if hi <= lo:
    lo, hi = float(progress_ExT[:, 0].min()), float(progress_ExT.max())
    if notes is not None:
      notes.append('Trajectories share no progress range; comparing each pair where both reach.')
  return np.linspace(lo, hi, size)


class _Embedded(NamedTuple):
  """InPCA of a subsample of checkpoints, with the references projected into it."""
  fit: embedding_lib.InPCA
  member_P: np.ndarray       # position of each point's member among the analysed ones
  checkpoint_P: np.ndarray   # checkpoint index of each point
  geodesic_t: np.ndarray
  references: plots.References


def _embed(probs_ExTxNxC, labels_N: np.ndarray, max_points: int, num_components: int,
           notes: list[str]) -> _Embedded:
  num_members, num_times, _, num_classes = probs_ExTxNxC.shape
  member_pos, t_idx = _choose_points(num_members, num_times, max_points, notes)
  member_P = np.repeat(member_pos, len(t_idx))
  checkpoint_P = np.tile(t_idx, len(member_pos))
  points_PxNxC = np.asarray(probs_ExTxNxC[member_P, checkpoint_P], np.float32)
  fit = embedding_lib.inpca(np.asarray(distances.bhattacharyya(points_PxNxC)),
                            k=min(num_components, len(points_PxNxC)))
  geodesic_t = np.linspace(0.0, 1.0, GEODESIC_POINTS)
  reference_probs = geometry.geodesic(labels_N, num_classes, geodesic_t)
  geodesic_coords = fit.project(
      np.asarray(distances.bhattacharyya(reference_probs, points_PxNxC)))
  references = plots.References(geodesic_coords[0], geodesic_coords[-1], geodesic_coords)
  return _Embedded(fit, member_P, checkpoint_P, geodesic_t, references)


class _Compared(NamedTuple):
  """Trajectories compared at equal progress."""
  progress_ExT: np.ndarray
  grid_G: np.ndarray
  reached_ExG: np.ndarray
  distances_GxExE: np.ndarray
  pair_distances_ExE: np.ndarray
  table: factors.FactorTable
  groups_E: np.ndarray
  tube_width_ExG: np.ndarray


def _compare(probs_ExTxNxC, labels_N: np.ndarray, members: list[dict[str, Any]],
             grid_size: int, notes: list[str]) -> _Compared:
  num_members, num_times, num_samples, num_classes = probs_ExTxNxC.shape
  flat = np.asarray(probs_ExTxNxC).reshape(-1, num_samples, num_classes)
  progress_ExT = geometry.progress(flat, labels_N).reshape(num_members, num_times)
  grid_G = progress_grid(progress_ExT, grid_size, notes)
  notes.append(f'Equal-progress grid: {grid_size} values in [{grid_G[0]:.3f}, {grid_G[-1]:.3f}].')
  resampled = geometry.resample(probs_ExTxNxC, labels_N, grid_G, progress_ExT)
  distances_GxExE = geometry.equal_progress_distances(resampled.probs, resampled.reached)
  pair_ExE = factors.mean_over_progress(distances_GxExE)
  groups_E = factors.seed_groups(members)
  width_ExG = geometry.tube_width(resampled.probs, resampled.reached, groups_E)
  return _Compared(progress_ExT, grid_G, resampled.reached, distances_GxExE, pair_ExE,
                   factors.factor_table(pair_ExE, members), groups_E, width_ExG)


def _write(outdir: str, rows: list[int], epochs_T: np.ndarray, members: list[dict[str, Any]],
           split: str, color_by: str, emb: _Embedded, cmp: _Compared) -> list[str]:
  """Writes arrays, tables and pictures; returns the paths."""
  os.makedirs(outdir, exist_ok=True)
  path = lambda name: os.path.join(outdir, name)  # noqa: E731
  fit, refs = emb.fit, emb.references
  np.savez(path('embedding.npz'), coords=fit.coords, eigenvalues=fit.eigenvalues,
           explained_stress=fit.explained_stress, member=np.asarray(rows)[emb.member_P],
           epoch=epochs_T[emb.checkpoint_P], checkpoint=emb.checkpoint_P,
           progress=cmp.progress_ExT[emb.member_P, emb.checkpoint_P],
           geodesic_t=emb.geodesic_t, geodesic_coords=refs.geodesic,
           ignorance_coords=refs.ignorance, truth_coords=refs.truth)
  np.savez(path('equal_progress.npz'), grid=cmp.grid_G, members=np.asarray(rows),
           progress=cmp.progress_ExT, reached=cmp.reached_ExG,
           pair_distances=cmp.pair_distances_ExE, distances=cmp.distances_GxExE,
           tube_width=cmp.tube_width_ExG, seed_group=cmp.groups_E)
  with open(path('factors.csv'), 'w') as f:
    f.write(cmp.table.to_csv())
  with open(path('factors.md'), 'w') as f:
    f.write(cmp.table.to_markdown())
  files = ['embedding.npz', 'equal_progress.npz', 'factors.csv', 'factors.md']
  common = dict(coords=fit.coords, member=emb.member_P, order=emb.checkpoint_P,
                member_values=[hp[color_by] for hp in members], color_by=color_by,
                references=refs, title=f'InPCA of {len(members)} trajectories ({split})')
  plots.plot_embedding(path('embedding_2d.png'), **common, eigenvalues=fit.eigenvalues, dims=2)
  files.append('embedding_2d.png')
  if fit.coords.shape[1] >= 3:
    plots.plot_embedding(path('embedding_3d.png'), **common, eigenvalues=fit.eigenvalues, dims=3)
    hover = [', '.join(f'{k}={v}' for k, v in hp.items()) for hp in members]
    plots.write_embedding_html(path('embedding_3d.html'), **common, hover=hover)
    files += ['embedding_3d.png', 'embedding_3d.html']
  plots.plot_explained_stress(path('explained_stress.png'), fit.explained_stress,
                              fit.eigenvalues, title=common['title'])
  files.append('explained_stress.png')
  return [path(f) for f in files]


def analyze_trajectories(traj: TrajectoryStore, outdir: str, split: str = 'train',
                         color_by: str = 'arch', max_points: int = DEFAULT_MAX_POINTS,
                         num_components: int = DEFAULT_COMPONENTS,
                         grid_size: int = DEFAULT_GRID_SIZE) -> AnalysisSummary:
  """Embeds, compares and plots the trajectories of a store; writes everything to outdir.

  Files: ``embedding.npz`` (coords, eigenvalues, explained_stress, and per point: member,
  epoch, checkpoint, progress; projected ignorance/truth/geodesic), ``equal_progress.npz``
  (progress grid, per-member progress, pair distances, tube widths), ``factors.csv`` and
  ``factors.md``, ``embedding_2d.png``, ``embedding_3d.png``, ``explained_stress.png`` and
  ``embedding_3d.html``.

  Example:
    >>> summary = analysis.analyze_trajectories(ensembles.load_trajectories(workdir),
    ...                                         os.path.join(workdir, 'analysis'))
    >>> print('\\n'.join(summary.lines()))

  Args:
    traj: the trajectories store (``ensembles.load_trajectories``) or an object like it.
    outdir: output directory (created).
    split: probe split, 'train' or 'test'.
    color_by: hparams key whose value colours the trajectories.
    max_points: most checkpoints embedded (see DEFAULT_MAX_POINTS).
    num_components: InPCA components kept.
    grid_size: progress values for the equal-progress comparisons.

  Returns:
    An ``AnalysisSummary``.

  Raises:
    ValueError: unknown color_by, no member left after dropping diverged ones, NaN in a
      member not marked diverged, or bad arguments.
  """
  if max_points < 2 or num_components < 2 or grid_size < 1:
    raise ValueError(f'max_points={max_points}, num_components={num_components}, grid_size='
                     f'{grid_size}: need max_points >= 2, num_components >= 2 (a 2-D picture) '
                     'and grid_size >= 1.')
  missing = [i for i, hp in enumerate(traj.members) if color_by not in hp]
  if missing:
    keys = sorted(traj.members[missing[0]])
    raise ValueError(f'color_by={color_by!r} is not an hparams key of member {missing[0]}; '
                     f'accepted: {keys}.')
  notes: list[str] = []
  rows = [e for e, s in enumerate(traj.status) if s != STATUS_DIVERGED]
  dropped = [e for e, s in enumerate(traj.status) if s == STATUS_DIVERGED]
  if dropped:
    notes.append(f'Dropped {len(dropped)} diverged member(s): {dropped}.')
  if not rows:
    raise ValueError(f'all {len(traj.status)} members diverged: nothing to analyse.')
  all_probs = traj.probs(split)
  _members_with_nan(all_probs, rows)
  probs_ExTxNxC = all_probs if not dropped else all_probs[rows]
  labels_N = np.asarray(traj.labels(split))
  members = [traj.members[e] for e in rows]
  emb = _embed(probs_ExTxNxC, labels_N, max_points, num_components, notes)
  cmp = _compare(probs_ExTxNxC, labels_N, members, grid_size, notes)
  files = _write(outdir, rows, np.asarray(traj.epochs, np.float64), members, split, color_by,
                 emb, cmp)
  return AnalysisSummary(outdir=outdir, split=split, members=tuple(rows), dropped=tuple(dropped),
                         num_points=len(emb.member_P),
                         total_points=probs_ExTxNxC.shape[0] * probs_ExTxNxC.shape[1],
                         explained_stress=emb.fit.explained_stress,
                         eigenvalues=emb.fit.eigenvalues, factor_table=cmp.table,
                         files=tuple(files), notes=tuple(notes))
