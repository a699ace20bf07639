"""Intensive PCA (InPCA): an embedding of points from a matrix of (squared-like) distances.

    L = I - (1/m) 1 1^T,   W = -(1/2) L D L,   W = U diag(lam) U^T  (|lam| descending)
    X = U sqrt(|lam|)      coordinates; axes with lam < 0 are "time-like"
    ES_k = 1 - sqrt(1 - sum_{a<=k} lam_a^2 / ||W||_F^2)

Unlike classical MDS, W need not be positive semi-definite: Bhattacharyya distances give large
negative eigenvalues, which carry real structure and keep their sign here. Computed in float64
on the host (NumPy/SciPy): full ``eigh`` up to FULL_EIGH_MAX_POINTS points, a top-k Lanczos
solver by magnitude (ARPACK ``eigsh(which='LM')``, which finds both ends of the spectrum) above.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ensembles.analysis import checks

# Largest number of points for a full eigendecomposition (O(m^3); timings in
# benchmarks/results/embedding_cpu-2cores.md); above it only the top-k eigenpairs by magnitude
# are computed.
FULL_EIGH_MAX_POINTS = 4000

# Components kept when k is None and the top-k solver is used (all m are kept otherwise).
DEFAULT_TOP_K = 20

# Relative tolerance of the Lanczos solver (0 would mean machine precision, far slower).
_EIGSH_TOLERANCE = 1e-10

# Eigenvalues below this fraction of the largest |lam| are treated as zero by project().
_NULL_EIGENVALUE = 1e-12

_METHODS = ('auto', 'full', 'topk')


class InPCA(NamedTuple):
  """An InPCA fit.

  Attributes:
    coords: (m, k) coordinates X = U sqrt(|lam|) of the fitted points.
    eigenvalues: (k,) eigenvalues of W, by |lam| descending, signs kept.
    explained_stress: (k,) cumulative explained stress ES_1..ES_k.
    eigenvectors: (m, k) the matching columns U of W's eigenvectors.
    column_means: (m,) mean of each column of the fitted D.
    grand_mean: mean of all entries of the fitted D.
  """
  coords: np.ndarray
  eigenvalues: np.ndarray
  explained_stress: np.ndarray
  eigenvectors: np.ndarray
  column_means: np.ndarray
  grand_mean: float

  @property
  def signs(self) -> np.ndarray:
    """(k,) +1 for space-like axes, -1 for time-like ones (negative eigenvalues)."""
    return np.where(self.eigenvalues < 0, -1.0, 1.0)

  def project(self, d_new: Any) -> np.ndarray:
    """Places new points from their distances to the fitted ones.

    x_q = -(1/2) (d_q - mean(d_q) - colmean(D) + mean(D)) U / (sign(lam) sqrt|lam|), so a fitted
    point given its own row of D lands exactly on its coordinates.

    Args:
      d_new: (q, m) distances from q new points to the m fitted points (or (m,) for one).

    Returns:
      (q, k) coordinates (or (k,) for a single point).

    Raises:
      ValueError: wrong width or non-finite distances.
    """
    d_QxM = np.asarray(d_new, np.float64)
    single = d_QxM.ndim == 1
    d_QxM = np.atleast_2d(d_QxM)
    m = self.column_means.shape[0]
    if d_QxM.ndim != 2 or d_QxM.shape[1] != m:
      raise ValueError(f'd_new has shape {np.shape(d_new)}: expected (q, {m}), distances to the '
                       f'{m} fitted points.')
    if not np.isfinite(d_QxM).all():
      raise ValueError('d_new contains NaN or inf: distances of diverged runs cannot be placed.')
    w_QxM = -0.5 * (d_QxM - d_QxM.mean(axis=1, keepdims=True) - self.column_means
                    + self.grand_mean)
    scale_K = np.where(_null(self.eigenvalues), np.inf, self.signs * np.sqrt(
        np.abs(self.eigenvalues)))
    x_QxK = (w_QxM @ self.eigenvectors) / scale_K
    return x_QxK[0] if single else x_QxK

  def pseudo_distances(self, k: int | None = None) -> np.ndarray:
    """(m, m) embedded pseudo-distances sum_{a<=k} sign(lam_a) (X[i,a] - X[j,a])^2."""
    x_MxK = self.coords[:, :k]
    signs_K = self.signs[:k]
    gram_MxM = (x_MxK * signs_K) @ x_MxK.T
    diag_M = np.diag(gram_MxM)
    return diag_M[:, None] + diag_M[None, :] - 2 * gram_MxM


def _null(lam_K: np.ndarray) -> np.ndarray:
  """Eigenvalues that are zero up to rounding (W always has one, along the all-ones vector):
  their axis carries no coordinate."""
  magnitude_K = np.abs(lam_K)
  return magnitude_K <= _NULL_EIGENVALUE * float(magnitude_K.max(initial=0.0))


def _double_center(d_MxM: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
  """W = -(1/2) L D L, plus D's column means and grand mean (for projections)."""
  column_means_M = d_MxM.mean(axis=0)
  row_means_M = d_MxM.mean(axis=1)
  grand_mean = float(column_means_M.mean())
  w_MxM = -0.5 * (d_MxM - row_means_M[:, None] - column_means_M[None, :] + grand_mean)
  return w_MxM, column_means_M, grand_mean


def _top_k_by_magnitude(w_MxM: np.ndarray, k: int, method: str):
  """(k,) eigenvalues by |lam| descending, their (m, k) eigenvectors, and the stress left
  unexplained after each component, (k,) sum_{a>k} lam_a^2 / ||W||_F^2."""
  m = w_MxM.shape[0]
  total_stress = max(float(np.sum(w_MxM**2)), np.finfo(np.float64).tiny)  # = sum of all lam^2
  if method == 'full':
    lam_M, u_MxM = scipy.linalg.eigh(w_MxM)
    order = np.argsort(-np.abs(lam_M), kind='stable')
    # The tail sums of the known spectrum make ES_m exactly 1 (1 - cumsum would leave ~1e-16,
    # which the square root in ES turns into ~1e-8).
    tail_M = np.cumsum((lam_M[order]**2)[::-1])[::-1]
    residual_K = np.append(tail_M[1:], 0.0)[:k] / total_stress
    return lam_M[order[:k]], u_MxM[:, order[:k]], residual_K
  # ARPACK needs k < m; 'LM' (largest magnitude) returns the extremes of both signs.
  v0_M = np.ones(m) / np.sqrt(m) + np.linspace(-1, 1, m) / m  # deterministic start vector
  lam_K, u_MxK = scipy.sparse.linalg.eigsh(w_MxM, k=k, which='LM', tol=_EIGSH_TOLERANCE, v0=v0_M)
  order = np.argsort(-np.abs(lam_K), kind='stable')
  lam_K = lam_K[order]
  return lam_K, u_MxK[:, order], 1.0 - np.cumsum(lam_K**2) / total_stress


def _fix_signs(u_MxK: np.ndarray) -> np.ndarray:
  """Flips each eigenvector so its largest-magnitude entry is positive (reproducible axes)."""
  rows = np.argmax(np.abs(u_MxK), axis=0)
  return u_MxK * np.where(u_MxK[rows, np.arange(u_MxK.shape[1])] < 0, -1.0, 1.0)


def inpca(d: Any, k: int | None = None, method: str = 'auto') -> InPCA:
  """Intensive PCA of a distance matrix.

  Example:
    >>> fit = analysis.inpca(analysis.bhattacharyya(probs), k=3)
    >>> fit.coords.shape, fit.explained_stress[-1]
    >>> fit.project(analysis.bhattacharyya(new_probs, probs))   # new points, same axes

  Args:
    d: (m, m) symmetric matrix of distances, used as squared distances (Bhattacharyya d_B).
    k: components to keep; None keeps all m when the full solver runs, DEFAULT_TOP_K otherwise.
    method: 'full' (eigh), 'topk' (Lanczos by magnitude, needs k < m) or 'auto' (full up to
      FULL_EIGH_MAX_POINTS points).

  Returns:
    An ``InPCA`` result (coords, eigenvalues, explained_stress, project()).

  Raises:
    ValueError: if d is not a finite symmetric square matrix, k is out of [1, m] (or not < m for
      'topk'), or method is unknown.
  """
  d_MxM = checks.check_distance_matrix(d)
  d_MxM = 0.5 * (d_MxM + d_MxM.T)  # float rounding only: asymmetry was checked above
  m = d_MxM.shape[0]
  if method not in _METHODS:
    raise ValueError(f'method={method!r}: accepted {_METHODS}.')
  if method == 'auto':
    method = 'full' if m <= FULL_EIGH_MAX_POINTS else 'topk'
  if k is None:
    k = m if method == 'full' else min(DEFAULT_TOP_K, m - 1)
  if not 1 <= k <= m or (method == 'topk' and k >= m):
    limit = f'1..{m - 1} for the top-k solver' if method == 'topk' else f'1..{m}'
    raise ValueError(f'k={k}: accepted {limit} (D has {m} points).')
  w_MxM, column_means_M, grand_mean = _double_center(d_MxM)
  lam_K, u_MxK, residual_K = _top_k_by_magnitude(w_MxM, k, method)
  u_MxK = _fix_signs(u_MxK)
  explained_K = 1.0 - np.sqrt(np.clip(residual_K, 0.0, 1.0))
  coords_MxK = np.where(_null(lam_K), 0.0, u_MxK * np.sqrt(np.abs(lam_K)))
  return InPCA(coords=coords_MxK, eigenvalues=lam_K,
               explained_stress=explained_K, eigenvectors=u_MxK, column_means=column_means_M,
               grand_mean=grand_mean)
