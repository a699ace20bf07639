"""Which factors matter: distances between trajectories grouped by the hparams that differ.

Two members are compared at equal progress (``geometry.resample``); the pair is attributed to
the one factor in which their hparams differ (a seed difference may come on top), to "seed"
when they differ in the seed only, and to "several" when more than one factor differs. The
table gives, per factor, the mean distance over such pairs and its ratio to the seed-only mean:
factors whose ratio is near 1 do not move trajectories more than a new seed does. A factor that
never varies alone among the members (the quickstart's optimizer, which always changes together
with the learning rate) has no row; the table lists it as confounded, with the factors it moves
with, instead of leaving it out silently.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ensembles.analysis import geometry

# The factors of the paper's question, and the hparams keys that make each one. Keys that are
# not listed (dataset, schedule, epochs, label_smoothing, ...) form the factor OTHER.
FACTORS: dict[str, tuple[str, ...]] = {
    'arch': ('arch', 'width', 'depth', 'norm', 'patch_size', 'num_heads', 'kernel_size'),
    'optimizer': ('optimizer', 'momentum', 'nesterov'),
    'learning_rate': ('learning_rate',),
    'batch_size': ('batch_size',),
    'weight_decay': ('weight_decay',),
    'augment': ('augment',),
    'init': ('init', 'init_epochs', 'init_subset', 'init_scale'),
    # Stores mapped jointly (store.STORE_KEY): another framework, loop or machine.
    'store': ('store',),
}
SEED_KEY = 'seed'
SEED_ONLY = 'seed'     # pairs that differ in the seed only
SEVERAL = 'several'    # pairs that differ in more than one factor
OTHER = 'other'        # any hparams key outside FACTORS and the seed


def _canonical(value: Any) -> str:
  """A hashable, order-independent spelling of an hparams value (lists, dicts, floats)."""
  return json.dumps(value, sort_keys=True, default=str)


def _factor_of_key(key: str) -> str:
  for factor, keys in FACTORS.items():
    if key in keys:
      return factor
  return SEED_ONLY if key == SEED_KEY else OTHER


def differing_factors(a: dict[str, Any], b: dict[str, Any]) -> tuple[set[str], bool]:
  """(factors other than the seed in which two hparams dicts differ, whether the seed differs)."""
  factors = set()
  seed_differs = False
  for key in set(a) | set(b):
    if _canonical(a.get(key)) != _canonical(b.get(key)):
      factor = _factor_of_key(key)
      if factor == SEED_ONLY:
        seed_differs = True
      else:
        factors.add(factor)
  return factors, seed_differs


def pair_factor(a: dict[str, Any], b: dict[str, Any]) -> str | None:
  """The factor a pair of members is attributed to; None for identical hparams."""
  return _attribute(*differing_factors(a, b))


def _attribute(factors: set[str], seed_differs: bool) -> str | None:
  """The factor of a pair that differs in ``factors`` (and the seed, if ``seed_differs``)."""
  if not factors:
    return SEED_ONLY if seed_differs else None
  return next(iter(factors)) if len(factors) == 1 else SEVERAL


def seed_groups(members: Sequence[dict[str, Any]]) -> np.ndarray:
  """(E,) configuration index of each member: equal iff the hparams differ only in the seed.

  Indices count configurations in order of first appearance.
  """
  index: dict[str, int] = {}
  groups = []
  for hparams in members:
    key = _canonical({k: v for k, v in hparams.items() if k != SEED_KEY})
    groups.append(index.setdefault(key, len(index)))
  return np.asarray(groups, np.int64)


class FactorRow(NamedTuple):
  """One line of the factor table.

  Attributes:
    factor: name (a FACTORS key, SEED_ONLY, SEVERAL or OTHER).
    keys: the hparams keys that make the factor.
    num_pairs: pairs of members attributed to it (with at least one common progress value).
    mean: mean over those pairs of the mean d_B at equal progress.
    std: standard deviation over pairs.
    median: median over pairs.
    ratio_to_seed: mean / the seed-only mean (NaN without seed-only pairs).
  """
  factor: str
  keys: tuple[str, ...]
  num_pairs: int
  mean: float
  std: float
  median: float
  ratio_to_seed: float


class Confounded(NamedTuple):
  """A factor that varies among the members but never alone: every pair of members that differ
  in it also differ in another factor, so all its pairs count under SEVERAL and it has no row.

  Attributes:
    factor: name (a FACTORS key or OTHER).
    always_with: the factors that differ in every such pair (empty if none does).
    varies_with: the factors that differ in at least one such pair.
  """
  factor: str
  always_with: tuple[str, ...]
  varies_with: tuple[str, ...]

  def note(self) -> str:
    """``'confounded with learning_rate (never varies alone in this sweep; ...)'``."""
    if self.always_with:
      return (f'confounded with {" and ".join(self.always_with)} (never varies alone in this '
              f'sweep; its pairs count under {SEVERAL!r})')
    return (f'confounded (never varies alone in this sweep, always with one of '
            f'{", ".join(self.varies_with)}; its pairs count under {SEVERAL!r})')


_COLUMNS = ('factor', 'keys', 'num_pairs', 'mean', 'std', 'median', 'ratio_to_seed')
# The CSV's last column: empty for a measured factor, Confounded.note() for a confounded one.
_NOTE_COLUMN = 'note'


class FactorTable(NamedTuple):
  """Factor rows, by mean distance descending, and the factors that never vary alone."""
  rows: tuple[FactorRow, ...]
  confounded: tuple[Confounded, ...] = ()

  def row(self, factor: str) -> FactorRow:
    """The row of one factor; KeyError naming the ones present (or the confounding) if absent."""
    for r in self.rows:
      if r.factor == factor:
        return r
    for c in self.confounded:
      if c.factor == factor:
        raise KeyError(f'factor {factor!r} has no row: {c.note()}')
    raise KeyError(f'factor {factor!r} has no pairs; present: {[r.factor for r in self.rows]}')

  def _cells(self) -> list[list[str]]:
    return [[r.factor, ' '.join(r.keys), str(r.num_pairs), f'{r.mean:.6g}', f'{r.std:.6g}',
             f'{r.median:.6g}', f'{r.ratio_to_seed:.4g}'] for r in self.rows]

  def to_csv(self) -> str:
    """The table as CSV text with a header line; a confounded factor is a row with no pairs
    whose ``note`` says what it moves with."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow((*_COLUMNS, _NOTE_COLUMN))
    writer.writerows([*cells, ''] for cells in self._cells())
    nan = f'{np.nan}'
    writer.writerows([c.factor, ' '.join(_factor_keys(c.factor)), '0', nan, nan, nan, nan,
                      c.note()] for c in self.confounded)
    return out.getvalue()

  def to_markdown(self) -> str:
    """The table as a GitHub-flavoured Markdown table, then one line per confounded factor."""
    lines = ['| ' + ' | '.join(_COLUMNS) + ' |', '|' + '---|' * len(_COLUMNS)]
    lines += ['| ' + ' | '.join(cells) + ' |' for cells in self._cells()]
    if self.confounded:
      lines += ['', *(f'{c.factor}: {c.note()}.' for c in self.confounded)]
    return '\n'.join(lines) + '\n'


def _factor_keys(factor: str) -> tuple[str, ...]:
  return FACTORS.get(factor, (SEED_KEY,) if factor == SEED_ONLY else ())


def factor_table(pair_distances: Any, members: Sequence[dict[str, Any]]) -> FactorTable:
  """Groups pairwise trajectory distances by the factor in which the pair differs.

  Args:
    pair_distances: (E, E) distance between members (e.g. the mean over progress values of
      ``geometry.equal_progress_distances``); NaN for pairs that cannot be compared.
    members: E hparams dicts.

  Returns:
    A ``FactorTable``, by mean distance descending, with the factors that never vary alone
    among ``members`` (whatever their distances) as ``confounded``.

  Raises:
    ValueError: if the matrix is not (E, E) for the E members.
  """
  d_ExE = np.asarray(pair_distances, np.float64)
  e = len(members)
  if d_ExE.shape != (e, e):
    raise ValueError(f'pair_distances has shape {d_ExE.shape}: expected ({e}, {e}) for the {e} '
                     'members.')
  by_factor: dict[str, list[float]] = {}
  alone: set[str] = set()  # factors that some pair differs in, and in nothing else
  always: dict[str, set[str]] = {}  # factor -> the others that every pair differing in it has
  varies: dict[str, set[str]] = {}  # factor -> the others that some pair differing in it has
  for i in range(e):
    for j in range(i + 1, e):
      differing, seed_differs = differing_factors(members[i], members[j])
      for f in differing:
        others = differing - {f}
        if not others:
          alone.add(f)
        always[f] = always[f] & others if f in always else others
        varies.setdefault(f, set()).update(others)
      factor = _attribute(differing, seed_differs)
      if factor is not None and np.isfinite(d_ExE[i, j]):
        by_factor.setdefault(factor, []).append(float(d_ExE[i, j]))
  seed_mean = float(np.mean(by_factor[SEED_ONLY])) if SEED_ONLY in by_factor else np.nan
  rows = []
  for factor, values in by_factor.items():
    v = np.asarray(values)
    rows.append(FactorRow(factor, _factor_keys(factor), len(v), float(v.mean()),
                          float(v.std()), float(np.median(v)), float(v.mean()) / seed_mean))
  rows.sort(key=lambda r: -r.mean)
  confounded = tuple(Confounded(f, tuple(sorted(always[f])), tuple(sorted(varies[f])))
                     for f in sorted(set(always) - alone))
  return FactorTable(tuple(rows), confounded)


def mean_over_progress(distances_GxExE: np.ndarray) -> np.ndarray:
  """(E, E) mean over progress values where both members are present (NaN if never)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', category=RuntimeWarning)  # all-NaN pairs stay NaN
    return np.nanmean(distances_GxExE, axis=0)


def factor_analysis(traj_probs: Any, labels: Any, members: Sequence[dict[str, Any]],
                    grid: Any, traj_progress: Any = None) -> FactorTable:
  """Resamples trajectories at equal progress and tabulates their distances by factor.

  Example:
    >>> table = analysis.factor_analysis(traj.probs('train'), traj.labels('train'),
    ...                                  traj.members, grid=np.linspace(0.1, 0.8, 8))
    >>> print(table.to_markdown())

  Args:
    traj_probs: (E, T, N, C) probabilities along E trajectories (no NaN: drop diverged ones).
    labels: (N,) int labels.
    members: E hparams dicts.
    grid: (G,) progress values at which trajectories are compared.
    traj_progress: optional (E, T) precomputed progress.

  Returns:
    A ``FactorTable``.
  """
  resampled = geometry.resample(traj_probs, labels, grid, traj_progress)
  distances_GxExE = geometry.equal_progress_distances(resampled.probs, resampled.reached)
  return factor_table(mean_over_progress(distances_GxExE), members)
