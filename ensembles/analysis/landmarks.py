"""Landmark InPCA: fit on L chosen points, place every other point by the out-of-sample formula.

Classical MDS at scale is done on landmarks (de Silva and Tenenbaum 2004, "Sparse multidimensional
scaling using landmark points"); InPCA admits the same because its projection of a new point
from its distances to the fitted ones is exact for the fitted points themselves
(``InPCA.project``). With L landmarks the fit costs an L x L Gram and one eigendecomposition,
and each other point costs one row of distances to the landmarks: time linear in the number of
points, memory independent of it.

Landmarks are stratified over members and recording times (``choose_landmarks``), so every
cohort, hyperparameter and phase of training is represented, not only the long late plateaus
that dominate a uniform sample of checkpoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ensembles.analysis import distances
from ensembles.analysis import eigen
from ensembles.analysis import embedding as embedding_lib

# The landmark fit needs k components only: above this many landmarks a top-k solver replaces
# the full eigendecomposition ('auto'; at L = 4,000, k = 10 the full one took 46-55 s on the
# 2-core CPU, benchmarks/README.md "Landmark map"; ARPACK a few seconds, eigen.py's table).
FIT_FULL_EIGH_MAX_POINTS = 500

# The golden-ratio fraction: member e starts its evenly spaced landmark times at phase
# frac(e * GOLDEN), so members with few landmarks each still cover all phases together
# (a low-discrepancy sequence: any run of consecutive members spreads evenly over [0, 1)).
GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def choose_landmarks(valid_ExT: Any, num_landmarks: int) -> np.ndarray:
  """Flat indices (member * T + time) of ``num_landmarks`` points, stratified.

  Each valid member gets an equal share of the landmarks (the remainder, and the whole share
  when there are fewer landmarks than members, goes to members evenly spaced through the sweep
  order, which groups cohorts and hyperparameters). Within a member, its landmarks sit at evenly
  spaced positions among its valid recording times, shifted by a low-discrepancy phase per
  member, so together the members cover every phase of training. Deterministic.

  Args:
    valid_ExT: (E, T) bool, the points that may be landmarks (recorded, member not diverged).
    num_landmarks: L, at most the number of valid points.

  Returns:
    (L,) sorted int64 flat indices into the member-major (E * T) point grid.

  Raises:
    ValueError: L < 1 or more than the valid points.
  """
  valid_ExT = np.asarray(valid_ExT, bool)
  total = int(valid_ExT.sum())
  if not 1 <= num_landmarks <= total:
    raise ValueError(f'{num_landmarks} landmarks: accepted 1..{total}, the points that can be '
                     'embedded (recorded points of members that did not diverge).')
  num_times = valid_ExT.shape[1]
  members = np.flatnonzero(valid_ExT.any(axis=1))
  available_E = valid_ExT[members].sum(axis=1)
  share_E = np.zeros(len(members), np.int64)
  left = num_landmarks
  # Water-filling: equal shares, capped by what each member has; repeat with the rest.
  while left:
    open_E = share_E < available_E
    per, extra = divmod(left, int(open_E.sum()))
    grant_E = np.where(open_E, per, 0)
    if per == 0:  # Fewer landmarks left than open members: spread them over the sweep order.
      chosen = np.flatnonzero(open_E)[np.linspace(0, open_E.sum() - 1, extra).round().astype(int)]
      grant_E[chosen] = 1
    grant_E = np.minimum(grant_E, available_E - share_E)
    share_E += grant_E
    left = num_landmarks - int(share_E.sum())
  flat = []
  for e, share in zip(members, share_E):
    if not share:
      continue
    times = np.flatnonzero(valid_ExT[e])
    phase = (e * GOLDEN) % 1.0
    positions = np.floor((np.arange(share) + phase) * len(times) / share).astype(np.int64)
    flat.append(e * num_times + times[np.minimum(positions, len(times) - 1)])
  return np.sort(np.concatenate(flat))


def fit_landmarks(probs_LxNxC: Any, k: int, method: str = 'auto', devices=None
                  ) -> embedding_lib.InPCA:
  """InPCA of the landmarks: their Bhattacharyya Gram (tiled, over ``devices``) decomposed.

  Args:
    probs_LxNxC: the landmarks' probabilities.
    k: components kept (at most L; below L for the top-k solvers).
    method: eigensolver, as ``embedding.inpca``; 'auto' takes a top-k solver above
      FIT_FULL_EIGH_MAX_POINTS landmarks (``eigen.resolve_method``).
    devices: devices of the Gram (default: all).

  Returns:
    The ``InPCA`` fit; its ``project`` places any other point.
  """
  num_landmarks = len(probs_LxNxC)
  if method == 'auto':
    full_up_to = FIT_FULL_EIGH_MAX_POINTS if k < num_landmarks - 1 else num_landmarks
    method = eigen.resolve_method(method, num_landmarks, full_eigh_max_points=full_up_to)
  d_LxL = np.asarray(distances.bhattacharyya(probs_LxNxC, devices=devices))
  return embedding_lib.inpca(d_LxL, k=k, method=method)
