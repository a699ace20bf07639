"""Intensive PCA (InPCA): an embedding of points from a matrix of (squared-like) distances.

    L = I - (1/m) 1 1^T,   W = -(1/2) L D L,   W = U diag(lam) U^T  (|lam| descending)
    X = U sqrt(|lam|)      coordinates; axes with lam < 0 are "time-like"
    ES_k = 1 - sqrt(1 - sum_{a<=k} lam_a^2 / ||W||_F^2)

Unlike classical MDS, W need not be positive semi-definite: Bhattacharyya distances give large
negative eigenvalues, which carry real structure and keep their sign here. W is formed in float64
on the host; its eigenpairs by magnitude come from ``ensembles.analysis.eigen``: by default SciPy
float64 on a CPU backend (full ``eigh`` up to FULL_EIGH_MAX_POINTS points, ARPACK top-k by
magnitude above), jit-compiled JAX on a GPU/TPU (dense ``eigh``, or block Krylov for large m).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ensembles.analysis import checks
from ensembles.analysis import eigen

# Largest number of points for a full eigendecomposition on the CPU under method='auto' (the
# bound and its reasons live in eigen.py; ``inpca`` reads this name, so it can be lowered here).
FULL_EIGH_MAX_POINTS = eigen.FULL_EIGH_MAX_POINTS

# Components kept when k is None and the top-k solver is used (all m are kept otherwise).
DEFAULT_TOP_K = 20

# Eigenvalues below this fraction of the largest |lam| are treated as zero by project(), for a
# float64 solver. A solver in another precision gets the same number of its own ulps, and inpca
# stores its eigenvalues below that as exactly 0 (float32 rounding can leave W's null
# eigenvalue, along the all-ones vector, above this fraction).
_NULL_EIGENVALUE = 1e-12

# Earlier names of the SciPy methods, still accepted.
_METHOD_ALIASES = {'full': 'scipy-full', 'topk': 'scipy-topk'}
_METHODS = eigen.METHODS + tuple(_METHOD_ALIASES)


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


def _null(lam_K: np.ndarray, tolerance: float = _NULL_EIGENVALUE) -> np.ndarray:
  """Eigenvalues that are zero up to rounding (W always has one, along the all-ones vector):
  their axis carries no coordinate."""
  magnitude_K = np.abs(lam_K)
  return magnitude_K <= tolerance * float(magnitude_K.max(initial=0.0))


def _double_center(d_MxM: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
  """W = -(1/2) L D L, plus D's column means and grand mean (for projections)."""
  column_means_M = d_MxM.mean(axis=0)
  row_means_M = d_MxM.mean(axis=1)
  grand_mean = float(column_means_M.mean())
  w_MxM = -0.5 * (d_MxM - row_means_M[:, None] - column_means_M[None, :] + grand_mean)
  return w_MxM, column_means_M, grand_mean


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
    method: an ``eigen.METHODS`` solver: 'scipy-full' (eigh), 'scipy-topk' (Lanczos by
      magnitude, needs k < m), 'jax-dense', 'jax-topk' (needs k < m), or 'auto' (on a CPU
      backend 'scipy-full' up to FULL_EIGH_MAX_POINTS points, else 'scipy-topk'; on GPU/TPU
      'jax-dense', or 'jax-topk' for large m). 'full' and 'topk' name the SciPy ones. The JAX
      solvers run in float32 unless x64 is on.

  Returns:
    An ``InPCA`` result (coords, eigenvalues, explained_stress, project()).

  Raises:
    ValueError: if d is not a finite symmetric square matrix, k is out of [1, m] (or not < m for
      a top-k method), or method is unknown.
  """
  d_MxM = checks.check_distance_matrix(d)
  d_MxM = 0.5 * (d_MxM + d_MxM.T)  # float rounding only: asymmetry was checked above
  m = d_MxM.shape[0]
  if method not in _METHODS:
    raise ValueError(f'method={method!r}: accepted {_METHODS}.')
  method = eigen.resolve_method(_METHOD_ALIASES.get(method, method), m,
                                full_eigh_max_points=FULL_EIGH_MAX_POINTS)
  if k is None:
    k = m if method in eigen.DENSE_METHODS else min(DEFAULT_TOP_K, m - 1)
  w_MxM, column_means_M, grand_mean = _double_center(d_MxM)
  pairs = eigen.top_by_magnitude(w_MxM, k, method)
  lam_K = pairs.values_K
  if pairs.solver_eps > np.finfo(np.float64).eps:
    tolerance = _NULL_EIGENVALUE * pairs.solver_eps / np.finfo(np.float64).eps
    lam_K = np.where(_null(lam_K, tolerance), 0.0, lam_K)
  u_MxK = _fix_signs(pairs.vectors_MxK)
  explained_K = 1.0 - np.sqrt(np.clip(pairs.residual_K, 0.0, 1.0))
  coords_MxK = np.where(_null(lam_K), 0.0, u_MxK * np.sqrt(np.abs(lam_K)))
  return InPCA(coords=coords_MxK, eigenvalues=lam_K,
               explained_stress=explained_K, eigenvectors=u_MxK, column_means=column_means_M,
               grand_mean=grand_mean)
