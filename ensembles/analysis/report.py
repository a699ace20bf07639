"""The analysis of a trajectories store, written: arrays, tables and pictures under a folder.

``analyze_trajectories(traj, outdir)`` computes the analysis (``summary.summarize``) and writes
it (``write_analysis``); ``ensembles/launch/analyze.py`` calls it on a store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ensembles.analysis import factors
from ensembles.analysis import plots
from ensembles.analysis import summary as summary_lib

if TYPE_CHECKING:
  from ensembles.store import TrajectoryStore

# Explained stress values printed: ES_1..ES_5.
REPORTED_COMPONENTS = 5


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


def write_analysis(analysis: summary_lib.Analysis, outdir: str, color_by: str = 'arch') -> list[str]:
  """Writes the arrays, tables and pictures of ``analysis`` under ``outdir``; returns the paths.

  Files: ``embedding.npz`` (coords, eigenvalues, explained_stress, and per point: member,
  epoch, checkpoint, progress; projected ignorance/truth/geodesic), ``equal_progress.npz``
  (progress grid, per-member progress, pair distances, tube widths), ``factors.csv`` and
  ``factors.md``, ``embedding_2d.png``, ``embedding_3d.png``, ``explained_stress.png`` and
  ``embedding_3d.html``.
  """
  rows, epochs_T, members = list(analysis.members), analysis.epochs, list(analysis.hparams)
  split, emb, cmp = analysis.split, analysis.embedded, analysis.compared
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
                         color_by: str = 'arch', max_points: int = summary_lib.DEFAULT_MAX_POINTS,
                         num_components: int = summary_lib.DEFAULT_COMPONENTS,
                         grid_size: int = summary_lib.DEFAULT_GRID_SIZE) -> AnalysisSummary:
  """Embeds, compares and plots the trajectories of a store; writes everything to outdir.

  Files: see ``write_analysis``.

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
  missing = [i for i, hp in enumerate(traj.members) if color_by not in hp]
  if missing:
    keys = sorted(traj.members[missing[0]])
    raise ValueError(f'color_by={color_by!r} is not an hparams key of member {missing[0]}; '
                     f'accepted: {keys}.')
  analysis = summary_lib.summarize(traj, split, max_points, num_components, grid_size)
  files = write_analysis(analysis, outdir, color_by)
  fit = analysis.embedded.fit
  return AnalysisSummary(outdir=outdir, split=split, members=analysis.members,
                         dropped=analysis.dropped, num_points=len(analysis.embedded.member_P),
                         total_points=analysis.total_points,
                         explained_stress=fit.explained_stress, eigenvalues=fit.eigenvalues,
                         factor_table=analysis.compared.table, files=tuple(files),
                         notes=analysis.notes)
