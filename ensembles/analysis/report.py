"""The analysis of a trajectories store, written: arrays, tables and pictures under a folder.

``analyze_trajectories(traj, outdir)`` computes the analysis (``summary.summarize``) and writes
it (``write_analysis``); ``ensembles/launch/analyze.py`` calls it on a store.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, NamedTuple

import jax
import numpy as np

from ensembles.analysis import factors
from ensembles.analysis import mapping
from ensembles.analysis import plots
from ensembles.analysis import summary as summary_lib
from ensembles.store.format import STATUS_DIVERGED

if TYPE_CHECKING:
  from collections.abc import Callable

  from ensembles.store import TrajectoryStore

# Explained stress values printed: ES_1..ES_5.
REPORTED_COMPONENTS = 5

# Trajectories drawn in the pictures of a map with more points than ``summarize`` embeds (a
# scatter of 10^6 points is unreadable): members evenly spaced through the sweep order, each
# with every point it has.
MAX_DRAWN_MEMBERS = 200

# Most bytes of float32 probabilities read whole for the comparisons at equal progress; above
# it they run on members evenly spaced through the sweep order.
MAX_COMPARED_BYTES = 2**29

# Where analyze_trajectories writes the map of every point (mapping.embed_trajectories).
MAP_DIR = 'map'

# Metrics of a store shown in the hover text of the interactive view, where the store has them.
HOVER_METRICS = ('train_accuracy', 'test_accuracy')


def embedding_file_name(dims: int, color_by: str, extension: str = 'png') -> str:
  """The file of the ``dims``-D picture coloured by ``color_by``, e.g. ``embedding_2d_by_arch.png``:
  each colouring has files of its own, so analyses coloured by two factors keep both. Characters
  other than letters, digits, '.', '-' and '_' (a key such as 'optimizer/lr' of another
  writer's store) become '_'."""
  return f'embedding_{dims}d_by_{re.sub(r"[^A-Za-z0-9._-]", "_", color_by)}.{extension}'


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


def write_analysis(analysis: summary_lib.Analysis, outdir: str, color_by: str = 'arch',
                   traj: TrajectoryStore | None = None) -> list[str]:
  """Writes the arrays, tables and pictures of ``analysis`` under ``outdir``; returns the paths.

  Files: ``embedding.npz`` (coords, eigenvalues, explained_stress, and per point: member,
  epoch, checkpoint, progress; projected ignorance/truth/geodesic), ``equal_progress.npz``
  (progress grid, per-member progress, pair distances, tube widths), ``factors.csv`` and
  ``factors.md``, ``explained_stress.png``, and the pictures coloured by ``color_by``
  (``embedding_file_name``): ``embedding_2d_by_<color_by>.png``,
  ``embedding_3d_by_<color_by>.png`` and the interactive ``embedding_3d_by_<color_by>.html``,
  whose hover text gives each point's member, the hparams that vary in the sweep, its epoch
  and, from ``traj`` (the store analysed) where given, its step and accuracies.
  """
  rows, epochs_T, members = list(analysis.members), analysis.epochs, list(analysis.hparams)
  split, emb, cmp = analysis.split, analysis.embedded, analysis.compared
  os.makedirs(outdir, exist_ok=True)
  path = lambda name: os.path.join(outdir, name)  # noqa: E731
  fit, refs = emb.fit, emb.references
  member_P, epoch_P = np.asarray(rows)[emb.member_P], epochs_T[emb.checkpoint_P]
  if traj is None:
    hover = plots.point_hover(member_P, dict(zip(rows, members)), epoch_P)
  else:
    hover = _store_hover(traj, member_P, _time_index(traj, epoch_P))
  np.savez(path('embedding.npz'), coords=fit.coords, eigenvalues=fit.eigenvalues,
           explained_stress=fit.explained_stress, member=member_P,
           epoch=epoch_P, checkpoint=emb.checkpoint_P,
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
  files += _draw(outdir, fit.coords, emb.member_P, emb.checkpoint_P, members, color_by, refs,
                 fit.eigenvalues, fit.explained_stress, hover,
                 title=f'InPCA of {len(members)} trajectories ({split})')
  return [path(f) for f in files]


def _time_index(traj: TrajectoryStore, epoch_P: np.ndarray) -> np.ndarray:
  """The recording-time index in ``traj`` of each epoch (one of its recording times)."""
  epochs_T = np.asarray(traj.epochs)
  time_P = np.clip(np.searchsorted(epochs_T, epoch_P), 0, len(epochs_T) - 1)
  if not np.array_equal(epochs_T[time_P], epoch_P):
    raise ValueError(f'epochs {sorted(set(np.asarray(epoch_P).tolist()))} are not all recording '
                     f'times of the store ({epochs_T.tolist()}): pass the store analysed.')
  return time_P


def _store_hover(traj: TrajectoryStore, member_P: np.ndarray, time_P: np.ndarray) -> list[str]:
  """``plots.point_hover`` of points of a store (member, recording-time index), with the steps
  and HOVER_METRICS where the store has them (``TrajectoryStore`` does not promise them)."""
  steps_ExT = getattr(traj, 'steps', None)
  metrics = getattr(traj, 'metrics', None) or {}
  return plots.point_hover(
      member_P, traj.members, np.asarray(traj.epochs)[time_P],
      None if steps_ExT is None else np.asarray(steps_ExT)[member_P, time_P],
      {k: np.asarray(metrics[k])[member_P, time_P] for k in HOVER_METRICS if k in metrics},
      time_unit=getattr(traj, 'time_unit', 'epoch'))


def _draw(outdir: str, coords_PxK: np.ndarray, member_P: np.ndarray, order_P: np.ndarray,
          members: list[dict], color_by: str, refs: plots.References, eigenvalues: np.ndarray,
          explained_stress: np.ndarray, hover: list[str], title: str) -> list[str]:
  """The pictures of an embedding: 2-D, 3-D (PNG and HTML, with ``hover`` per point) and the
  explained stress."""
  path = lambda name: os.path.join(outdir, name)  # noqa: E731
  common = dict(coords=coords_PxK, member=member_P, order=order_P,
                member_values=[hp[color_by] for hp in members], color_by=color_by,
                references=refs, title=title)
  files = [embedding_file_name(2, color_by)]
  plots.plot_embedding(path(files[0]), **common, eigenvalues=eigenvalues, dims=2)
  if coords_PxK.shape[1] >= 3:
    files += [embedding_file_name(3, color_by), embedding_file_name(3, color_by, 'html')]
    plots.plot_embedding(path(files[1]), **common, eigenvalues=eigenvalues, dims=3)
    plots.write_embedding_html(path(files[2]), **common, hover=hover)
  plots.plot_explained_stress(path('explained_stress.png'), explained_stress, eigenvalues,
                              title=title)
  return files + ['explained_stress.png']


def _draw_map(the_map: mapping.TrajectoryEmbedding, traj: TrajectoryStore, outdir: str,
              color_by: str, notes: list[str]) -> list[str]:
  """The pictures drawn from the map: up to MAX_DRAWN_MEMBERS trajectories, every point."""
  placed_ExT = the_map.placed.reshape(-1, the_map.num_times)
  drawable = np.flatnonzero(placed_ExT.any(axis=1))
  drawn = np.unique(drawable[np.linspace(0, len(drawable) - 1, min(
      MAX_DRAWN_MEMBERS, len(drawable))).round().astype(int)])
  if len(drawn) < len(drawable):
    notes.append(f'Pictures: {len(drawn)} of {len(drawable)} trajectories drawn, evenly '
                 f'through the sweep order; every point is in {MAP_DIR}/points.')
  member_P, order_P = np.nonzero(placed_ExT[drawn])
  points_P = drawn[member_P] * the_map.num_times + order_P
  refs = plots.References(the_map.geodesic[0], the_map.geodesic[-1], the_map.geodesic)
  members = [traj.members[e] for e in drawn]
  files = _draw(outdir, the_map.coords[points_P], member_P, order_P, members, color_by, refs,
                the_map.eigenvalues, the_map.explained_stress,
                _store_hover(traj, drawn[member_P], order_P),
                title=f'InPCA map of {int(the_map.placed.sum())} points ({the_map.split})')
  return [os.path.join(outdir, f) for f in files]


class _Subset:
  """Some members of a store at the recording times all of them have, read whole."""

  def __init__(self, traj: TrajectoryStore, rows: np.ndarray, times: np.ndarray):
    self.members = [traj.members[e] for e in rows]
    self.epochs = np.asarray(traj.epochs)[times]
    self.status = [traj.status[e] for e in rows]
    self._traj, self._rows, self._times = traj, rows, times

  def probs(self, split: str) -> np.ndarray:
    members_P = np.repeat(self._rows, len(self._times))
    probs_PxNxC = self._traj.read_points(split, members_P, np.tile(self._times, len(self._rows)))
    return probs_PxNxC.reshape(len(self._rows), len(self._times), *probs_PxNxC.shape[1:])

  def labels(self, split: str) -> np.ndarray:
    return self._traj.labels(split)


def _compared_view(traj: TrajectoryStore, split: str, notes: list[str]):
  """(the store or a _Subset of it that fits MAX_COMPARED_BYTES, original index of each
  member of the view): the members compared at equal progress, at times every one has."""
  recorded = getattr(traj, 'recorded', None)
  if recorded is None:  # An in-memory store: used whole.
    return traj, np.arange(len(traj.members))
  ok = np.flatnonzero([s != STATUS_DIVERGED for s in traj.status])
  times = np.flatnonzero(recorded[ok].all(axis=0)) if len(ok) else np.arange(0)
  point_bytes = 4 * traj.num_probes(split) * traj.num_classes
  fits = max(1, MAX_COMPARED_BYTES // max(1, point_bytes * len(times)))
  if len(ok) <= fits and len(times) == recorded.shape[1] and len(ok) == len(traj.members):
    return traj, np.arange(len(traj.members))
  if not len(times):
    raise ValueError('no recording time is recorded for every member that did not diverge: '
                     'nothing to compare at equal progress yet.')
  rows = np.unique(ok[np.linspace(0, len(ok) - 1, min(fits, len(ok))).round().astype(int)])
  if len(times) < recorded.shape[1]:
    notes.append(f'Compared at equal progress: the {len(times)} of {recorded.shape[1]} '
                 'recording times recorded for every member (the store is partial).')
  if len(rows) < len(ok):
    notes.append(f'Compared at equal progress: {len(rows)} of {len(ok)} members, evenly '
                 'through the sweep order (their probabilities are read whole).')
  return _Subset(traj, rows, times), rows


def analyze_trajectories(traj: TrajectoryStore, outdir: str, split: str = 'train',
                         color_by: str = 'arch', max_points: int = summary_lib.DEFAULT_MAX_POINTS,
                         num_components: int = summary_lib.DEFAULT_COMPONENTS,
                         grid_size: int = summary_lib.DEFAULT_GRID_SIZE,
                         landmarks: int | None = None, overwrite: bool = False,
                         on_block: Callable[[int, int], None] | None = None) -> AnalysisSummary:
  """Maps, compares and plots the trajectories of a store; writes everything to outdir.

  Every recorded point of every member that did not diverge is placed in the map
  (``mapping.embed_trajectories``, written to ``outdir/map``: a full InPCA up to
  ``mapping.LANDMARK_THRESHOLD`` points, landmarks above); ``summarize`` compares the members
  at equal progress (on members and times that fit, see ``MAX_COMPARED_BYTES``). Where the map
  holds more points than ``summarize`` embeds, the pictures and the printed explained stress
  come from the map. Files: see ``write_analysis`` and ``mapping``.

  Under ``jax.distributed`` every process makes this call (the distances and the map are
  shared out); process 0 writes the files.

  Example:
    >>> summary = analysis.analyze_trajectories(ensembles.load_trajectories(workdir),
    ...                                         os.path.join(workdir, 'analysis'))
    >>> print('\\n'.join(summary.lines()))

  Args:
    traj: the trajectories store (``ensembles.load_trajectories``, with ``allow_partial=True``
      for one still being written) or an object like it.
    outdir: output directory (created).
    split: probe split, one of the store's ('train' or 'test' for the trainer's).
    color_by: hparams key whose value colours the trajectories.
    max_points: most checkpoints ``summarize`` embeds (see DEFAULT_MAX_POINTS).
    num_components: InPCA components kept.
    grid_size: progress values for the equal-progress comparisons.
    landmarks: landmarks of the map (None: chosen by ``embed_trajectories``).
    overwrite: replace a map in ``outdir/map`` made with other settings.
    on_block: progress callback of the map, (points done, points to do).

  Returns:
    An ``AnalysisSummary``.

  Raises:
    ValueError: unknown color_by, no member left after dropping diverged ones, NaN in a
      member not marked diverged, or bad arguments.
  """
  missing = [i for i, hp in enumerate(traj.members) if color_by not in hp]
  if missing:
    keys = sorted(traj.members[missing[0]])
    raise ValueError(f'color_by={color_by!r} is not an hparams key of member {missing[0]}; '
                     f'accepted: {keys}.')
  summary_lib.check_arguments(max_points, num_components, grid_size)
  the_map = mapping.embed_trajectories(traj, k=num_components, landmarks=landmarks, split=split,
                                       outdir=os.path.join(outdir, MAP_DIR),
                                       overwrite=overwrite, on_block=on_block)
  notes = the_map.lines()[1:]
  view, rows = _compared_view(traj, split, notes)
  analysis = summary_lib.summarize(view, split, max_points, num_components, grid_size)
  dropped = tuple(e for e, s in enumerate(traj.status) if s == STATUS_DIVERGED)
  analysis = analysis._replace(members=tuple(int(rows[e]) for e in analysis.members),
                               dropped=dropped, notes=(*notes, *analysis.notes))
  # Under jax.distributed every process computes the same analysis; process 0 writes it.
  writes = jax.process_index() == 0
  files = write_analysis(analysis, outdir, color_by, traj) if writes else []
  num_points, fit = len(analysis.embedded.member_P), analysis.embedded.fit
  es, eigenvalues = fit.explained_stress, fit.eigenvalues
  map_notes = []
  if the_map.placed.sum() > num_points:  # The map has more: the pictures come from it.
    files += _draw_map(the_map, traj, outdir, color_by, map_notes) if writes else []
    num_points, es, eigenvalues = int(the_map.placed.sum()), the_map.explained_stress, \
        the_map.eigenvalues
    map_notes.append(f'Map: {len(the_map.landmarks)} landmarks; the factor table and '
                     'embedding.npz come from the comparison above.')
  files.append(os.path.join(outdir, MAP_DIR))
  return AnalysisSummary(outdir=outdir, split=split, members=analysis.members,
                         dropped=analysis.dropped, num_points=num_points,
                         total_points=len(the_map.placed) - the_map.left_out[mapping.DIVERGED],
                         explained_stress=es, eigenvalues=eigenvalues,
                         factor_table=analysis.compared.table, files=tuple(dict.fromkeys(files)),
                         notes=(*analysis.notes, *map_notes))
