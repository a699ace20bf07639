"""Comparisons within a one-factor-at-a-time design, at equal progress.

A design has, per architecture family, a base configuration and variants that each change one
factor, every configuration with the same seeds; each member carries a ``Label(family,
variant)``. These functions measure how far a factor moves trajectories: the mean d_B at equal
progress between the base and a variant (seed-matched, and with different seeds), divided by the
seed-only baseline measured on the same progress values; and where other initialisations start
and how they join the base runs. ``ensembles.reproduction`` reports them for the paper's sweep.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ensembles.analysis import distances
from ensembles.analysis import geometry
from ensembles.analysis.summary import progress_grid

BASE = 'base'                  # the variant every other one of its family is compared with
WIDTH = 'width'                # the wider-network variant (finding 3)
SEED_ONLY = 'seed'             # row of the seed-only baseline
ARCH = 'arch'                  # row of base-vs-base pairs across families
INIT_VARIANTS = ('random_labels', 'subset')

# Progress values at which trajectories are compared (per family, and across families).
GRID_SIZE = 10

class Label(NamedTuple):
  """Which configuration of the one-factor design a member runs."""
  family: str
  variant: str


def check_labels(members: Sequence[dict[str, Any]], labels: Sequence[Label],
                 changes: dict[Label, dict[str, Any]]) -> None:
  """Checks that every member holds the hparams its label's variant sets.

  Raises:
    ValueError: naming the first member whose hparams disagree with its label.
  """
  if len(members) != len(labels):
    raise ValueError(f'{len(members)} members but {len(labels)} labels.')
  for e, (hp, label) in enumerate(zip(members, labels)):
    wrong = {k: (hp.get(k), v) for k, v in changes[label].items() if hp.get(k) != v}
    if wrong:
      raise ValueError(f'member {e} is labelled {label} but has (stored, expected) {wrong}: '
                       'the store was trained from another config.')


# ---------------------------------------------------------------------------------------------
# Comparisons at equal progress.


class PairStats(NamedTuple):
  """Mean d_B at equal progress over pairs of members, and its ratio to the seed baseline.

  The baseline of a pair is the seed-only distance averaged over the progress values that
  pair covers, so pairs that cover only part of the grid (a run that progresses little, or
  starts late) are held against seed pairs at the same progress values.
  """
  num_pairs: int
  mean: float
  ratio_to_seed: float


_EMPTY = PairStats(0, float('nan'), float('nan'))


class FactorComparison(NamedTuple):
  """One factor in one family (or across families for ARCH).

  Attributes:
    factor: the variant name, SEED_ONLY or ARCH.
    family: the family ('all' for ARCH).
    same_seed: pairs with equal seeds (the factor alone differs).
    other_seed: pairs with different seeds (factor plus seed).
  """
  factor: str
  family: str
  same_seed: PairStats
  other_seed: PairStats


def _pairs(rows_a: np.ndarray, rows_b: np.ndarray, seeds_E: np.ndarray, same_seed: bool,
           keep=lambda a, b: True) -> np.ndarray:
  """(P, 2) unordered pairs (a, b), a in rows_a, b in rows_b, a != b, seeds equal or not."""
  pairs = {tuple(sorted((a, b))) for a in rows_a for b in rows_b
           if a != b and (seeds_E[a] == seeds_E[b]) == same_seed and keep(a, b)}
  return np.asarray(sorted(pairs), np.int64).reshape(-1, 2)


def _seed_curve(distances_GxExE: np.ndarray, pairs_Px2: np.ndarray) -> np.ndarray:
  """(G,) mean over the seed pairs of d_B at each progress value (NaN where none is present)."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', category=RuntimeWarning)  # all-NaN columns stay NaN
    return np.nanmean(distances_GxExE[:, pairs_Px2[:, 0], pairs_Px2[:, 1]], axis=1)


def pair_stats(distances_GxExE: np.ndarray, pairs_Px2: np.ndarray,
               seed_G: np.ndarray) -> PairStats:
  """Mean over pairs of their mean d_B over progress, and its ratio to the matched seed mean.

  Args:
    distances_GxExE: d_B at each progress value (NaN where either member is absent).
    pairs_Px2: member pairs.
    seed_G: seed-only distance at each progress value (``_seed_curve``).
  """
  if not len(pairs_Px2):
    return _EMPTY
  d_GxP = distances_GxExE[:, pairs_Px2[:, 0], pairs_Px2[:, 1]].astype(np.float64)
  covered_GxP = np.isfinite(d_GxP) & np.isfinite(seed_G)[:, None]
  used_P = covered_GxP.any(axis=0)
  if not used_P.any():
    return _EMPTY
  count_P = covered_GxP[:, used_P].sum(axis=0)
  d_P = np.where(covered_GxP, d_GxP, 0.0)[:, used_P].sum(axis=0) / count_P
  ref_P = np.where(covered_GxP, seed_G[:, None], 0.0)[:, used_P].sum(axis=0) / count_P
  return PairStats(int(used_P.sum()), float(d_P.mean()), float(d_P.mean() / ref_P.mean()))


def factor_rows(distances_GxExE: np.ndarray, labels: Sequence[Label], seeds: Sequence[int],
                family: str) -> list[FactorComparison]:
  """The seed baseline and every variant of one family against its base.

  Args:
    distances_GxExE: d_B at equal progress between the E members (NaN where absent).
    labels: E labels (all of one family).
    seeds: E seeds.
    family: the family name, for the rows.

  Returns:
    The SEED_ONLY row first (base vs base, different seeds; its same-seed entry is empty),
    then one row per variant present, in order of first appearance.
  """
  seeds_E = np.asarray(seeds)
  variant_E = np.asarray([label.variant for label in labels])
  base = np.flatnonzero(variant_E == BASE)
  seed_pairs = _pairs(base, base, seeds_E, same_seed=False)
  seed_G = _seed_curve(distances_GxExE, seed_pairs)
  rows = [FactorComparison(SEED_ONLY, family, _EMPTY, pair_stats(distances_GxExE, seed_pairs, seed_G))]
  for variant in dict.fromkeys(variant_E):
    if variant != BASE:
      other = np.flatnonzero(variant_E == variant)
      rows.append(FactorComparison(variant, family, *(
          pair_stats(distances_GxExE, _pairs(base, other, seeds_E, same), seed_G)
          for same in (True, False))))
  return rows


def arch_rows(distances_GxExE: np.ndarray, families: Sequence[str],
              seeds: Sequence[int]) -> list[FactorComparison]:
  """Base configurations of different families against the pooled within-family seed baseline.

  Args:
    distances_GxExE: d_B at equal progress between base members of every family.
    families: E family names.
    seeds: E seeds.

  Returns:
    The ARCH row, then the pooled SEED_ONLY row (family 'all').
  """
  fam_E, seeds_E, every = np.asarray(families), np.asarray(seeds), np.arange(len(families))
  seed_pairs = _pairs(every, every, seeds_E, False, lambda a, b: fam_E[a] == fam_E[b])
  seed_G = _seed_curve(distances_GxExE, seed_pairs)
  across = lambda a, b: fam_E[a] != fam_E[b]  # noqa: E731
  return [FactorComparison(ARCH, 'all', *(
              pair_stats(distances_GxExE, _pairs(every, every, seeds_E, same, across), seed_G)
              for same in (True, False))),
          FactorComparison(SEED_ONLY, 'all', _EMPTY, pair_stats(distances_GxExE, seed_pairs, seed_G))]


class Compared(NamedTuple):
  """Members resampled and compared at equal progress on one grid."""
  rows: np.ndarray             # positions of the members among the analysed ones
  grid_G: np.ndarray
  resampled_probs: np.ndarray  # (E', G, N, C)
  reached_ExG: np.ndarray
  distances_GxExE: np.ndarray  # d_B at each progress value, NaN where either is absent


def compare(probs_ExTxNxC: np.ndarray, labels_N: np.ndarray, progress_ExT: np.ndarray,
            rows: np.ndarray, grid_rows: np.ndarray, notes: list[str]) -> Compared:
  """Resamples ``rows`` at equal progress on a grid set by ``grid_rows`` and compares them.

  The grid runs from where every member of ``grid_rows`` has started to where the median one
  gets (``summary.progress_grid``); members that start later (other inits) are compared where reached.
  """
  # The standard analysis's grid rule, on the rows that set the grid.
  grid_G = progress_grid(progress_ExT[grid_rows], GRID_SIZE, notes)
  resampled = geometry.resample(probs_ExTxNxC[rows], labels_N, grid_G, progress_ExT[rows])
  distances_GxExE = geometry.equal_progress_distances(resampled.probs, resampled.reached)
  return Compared(rows, grid_G, resampled.probs, resampled.reached, distances_GxExE)


class InitJoin(NamedTuple):
  """Distance of each init variant to the mean of the default-init base runs, one family.

  Attributes:
    grid: (G,) progress values.
    distance: variant -> (G,) mean over its seeds of d_B(run, base mean) (NaN: none reached).
    start_progress: variant -> (mean, std) of progress at step 0 over its seeds.
    start_to_ignorance: variant -> mean d_B(step 0, ignorance).
  """
  grid: np.ndarray
  distance: dict[str, np.ndarray]
  start_progress: dict[str, tuple[float, float]]
  start_to_ignorance: dict[str, float]


def init_join(cmp: Compared, variants_E: np.ndarray, start_ExNxC: np.ndarray,
              start_progress_E: np.ndarray) -> InitJoin:
  """Where each init variant of one family starts and how it joins the base runs.

  Args:
    cmp: the family's members compared at equal progress.
    variants_E: variant of each of ``cmp.rows``.
    start_ExNxC: their step-0 probabilities.
    start_progress_E: their progress at step 0.
  """
  base = variants_E == BASE
  shown = [BASE] + [v for v in INIT_VARIANTS if v in set(variants_E)]
  distance = {}
  for v in shown:
    runs = variants_E == v
    d_ExG = geometry.distance_to_mean(cmp.resampled_probs, cmp.reached_ExG, runs, base)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', category=RuntimeWarning)  # all-NaN columns stay NaN
      distance[v] = np.nanmean(d_ExG[runs], axis=0)
  num_samples, num_classes = start_ExNxC.shape[1:]
  to_ignorance_E = np.asarray(distances.bhattacharyya(
      start_ExNxC, geometry.ignorance(num_samples, num_classes)[None]))[:, 0]
  start_progress, start_to_ignorance = {}, {}
  for v in shown:
    sel = variants_E == v
    start_progress[v] = (float(start_progress_E[sel].mean()), float(start_progress_E[sel].std()))
    start_to_ignorance[v] = float(to_ignorance_E[sel].mean())
  return InitJoin(cmp.grid_G, distance, start_progress, start_to_ignorance)
