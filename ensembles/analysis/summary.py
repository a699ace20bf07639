"""The analysis of a trajectories store, computed: arrays in, a summary of arrays out.

``summarize(traj)`` embeds the checkpoints of every non-diverged member with InPCA, places
ignorance, truth and the geodesic between them in the embedding, and compares trajectories at
equal progress (factor table, tube widths). ``report.write_analysis`` turns the result into
files; ``report.analyze_trajectories`` does both. ``traj`` is any ``store.TrajectoryStore``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ensembles.analysis import distances
from ensembles.analysis import embedding as embedding_lib
from ensembles.analysis import factors
from ensembles.analysis import geometry
from ensembles.analysis import plots
from ensembles.store.format import STATUS_DIVERGED

if TYPE_CHECKING:
  from ensembles.store import TrajectoryStore

# Most points embedded by default: the full Gram matrix and eigendecomposition grow as m^2 and
# m^3 (timed in benchmarks/README.md). Above it, checkpoints are thinned evenly (first and last
# kept), then members are sampled.
DEFAULT_MAX_POINTS = 2000

# InPCA components kept (coords, eigenvalues and ES_k in embedding.npz).
DEFAULT_COMPONENTS = 10

# Progress values at which trajectories are compared (factor table, tube width).
DEFAULT_GRID_SIZE = 10

# Points along the ignorance -> truth geodesic drawn in the embedding.
GEODESIC_POINTS = 21

# Seed of the member subsample, when there are too many members to embed.
SUBSAMPLE_SEED = 0


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


class Embedded(NamedTuple):
  """InPCA of a subsample of checkpoints, with the references projected into it."""
  fit: embedding_lib.InPCA
  member_P: np.ndarray       # position of each point's member among the analysed ones
  checkpoint_P: np.ndarray   # checkpoint index of each point
  geodesic_t: np.ndarray
  references: plots.References


def _embed(probs_ExTxNxC, labels_N: np.ndarray, max_points: int, num_components: int,
           notes: list[str]) -> Embedded:
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
  return Embedded(fit, member_P, checkpoint_P, geodesic_t, references)


class Compared(NamedTuple):
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
             grid_size: int, notes: list[str]) -> Compared:
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
  return Compared(progress_ExT, grid_G, resampled.reached, distances_GxExE, pair_ExE,
                   factors.factor_table(pair_ExE, members), groups_E, width_ExG)


class Analysis(NamedTuple):
  """What ``summarize`` computed.

  Attributes:
    split: probe split analysed.
    members: original indices of the members analysed.
    dropped: original indices of the members left out because they diverged.
    hparams: the analysed members' hparams.
    epochs: (T,) recording times.
    total_points: checkpoints of the analysed members (more than embedded: a subsample).
    embedded: the InPCA fit of the embedded points, with ignorance, truth and the geodesic.
    compared: the trajectories compared at equal progress.
    notes: human-readable remarks (drops, subsampling, grid) in order.
  """
  split: str
  members: tuple[int, ...]
  dropped: tuple[int, ...]
  hparams: tuple[dict[str, Any], ...]
  epochs: np.ndarray
  total_points: int
  embedded: Embedded
  compared: Compared
  notes: tuple[str, ...]


def check_arguments(max_points: int, num_components: int, grid_size: int) -> None:
  """Raises ValueError unless max_points >= 2, num_components >= 2 and grid_size >= 1."""
  if max_points < 2 or num_components < 2 or grid_size < 1:
    raise ValueError(f'max_points={max_points}, num_components={num_components}, grid_size='
                     f'{grid_size}: need max_points >= 2, num_components >= 2 (a 2-D picture) '
                     'and grid_size >= 1.')


def summarize(traj: TrajectoryStore, split: str = 'train', max_points: int = DEFAULT_MAX_POINTS,
              num_components: int = DEFAULT_COMPONENTS,
              grid_size: int = DEFAULT_GRID_SIZE) -> Analysis:
  """Embeds and compares the trajectories of a store; writes nothing.

  Args:
    traj: the trajectories store (``ensembles.load_trajectories``) or an object like it.
    split: probe split, one of the store's ('train' or 'test' for the trainer's).
    max_points: most checkpoints embedded (see DEFAULT_MAX_POINTS).
    num_components: InPCA components kept.
    grid_size: progress values for the equal-progress comparisons.

  Raises:
    ValueError: no member left after dropping diverged ones, NaN in a member not marked
      diverged, or bad arguments.
  """
  check_arguments(max_points, num_components, grid_size)
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
  return Analysis(split=split, members=tuple(rows), dropped=tuple(dropped),
                  hparams=tuple(members), epochs=np.asarray(traj.epochs, np.float64),
                  total_points=probs_ExTxNxC.shape[0] * probs_ExTxNxC.shape[1],
                  embedded=emb, compared=cmp, notes=tuple(notes))
