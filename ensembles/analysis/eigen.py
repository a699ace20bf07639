"""Top eigenpairs of a symmetric matrix by |eigenvalue|, signs kept: SciPy on the host or JAX jit.

InPCA's W = -(1/2) L D L is not positive semi-definite: its large negative eigenvalues carry
structure, so every solver here ranks eigenvalues by magnitude and keeps their signs. One entry
point, ``top_by_magnitude(w, k, method)``; the methods:

* 'scipy-full': ``scipy.linalg.eigh`` in float64 on the host, the whole spectrum (O(m^3)).
* 'scipy-topk': ARPACK Lanczos in float64 on the host, ``eigsh(which='LM')``: the k largest
  eigenvalues by magnitude, from both ends of the spectrum.
* 'jax-dense': ``jnp.linalg.eigh``, jit-compiled for the default backend (float32 unless
  ``jax_enable_x64`` is on), sorted by magnitude.
* 'jax-topk': randomized block Krylov iteration, jit-compiled (below).
* 'auto': on the CPU backend the SciPy solvers, which are float64 and faster there ('scipy-full'
  up to FULL_EIGH_MAX_POINTS points, 'scipy-topk' above); on GPU/TPU 'jax-dense' up to
  ACCELERATOR_DENSE_MAX_POINTS, 'jax-topk' above.

'jax-topk' builds the block Krylov basis K = [Omega, W Omega, ..., W^q Omega] (Omega a seeded
Gaussian m x b block, b = k + KRYLOV_OVERSAMPLE, q = KRYLOV_STEPS), each new block
orthonormalised against all earlier ones, and returns the Ritz pairs of T = K^T W K (a small
``eigh``) ranked by |theta| (Halko, Martinsson and Tropp 2011, sections 4.3-4.5; Musco and Musco
2015, "Randomized block Krylov methods"). Polynomials in W amplify both ends of the spectrum, so
one basis finds the large negative eigenvalues with the positive ones. Chosen over the
alternatives tried on two Bhattacharyya InPCA matrices and two synthetic spectra of both signs
(``python -m benchmarks.eigen --candidates``; numbers in benchmarks/README.md, "Eigensolvers
(landmark fit)"), as the only one at float32 accuracy for the top 10 on all four:

* Subspace (power) iteration, Q = orth(W^q Omega) then Rayleigh-Ritz, converges as
  (|lam_{b+1}| / |lam_k|)^q. Trajectory InPCA spectra have tens of nearly equal eigenvalues
  after the large negative one; with the same block and number of products with W it stayed
  orders of magnitude short of float32 accuracy, and a block three times wider (three times
  the cost) still did on a nearly flat spectrum.
* ``jax.experimental.sparse.linalg.lobpcg_standard`` finds only the largest algebraic
  eigenvalues. Run on W and on -W and merged by magnitude it was about as fast here, but its
  own stopping test left errors ten times float32 rounding on the flat-topped InPCA matrix; run
  on W^2 (largest |lam| first, signs from a Rayleigh-Ritz step on W) it was faster and lost the
  tail of the top 10 more. It also needs 5 k < m and is an experimental API.
* Block Krylov has a fixed cost, (q + 1) products W @ (m x b) (matrix-matrix products that
  accelerators run at speed) plus small orthonormalisations, no data-dependent loop, and is
  deterministic for a given shape and seed.

Matrix products in the JAX solvers run at full float32 precision: the default on GPUs (TF32)
and TPUs (bfloat16 passes) would leave errors far above float32 rounding.
"""

from __future__ import annotations

import collections
import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from jax import lax

# Largest number of points for a full eigendecomposition on the host (O(m^3); timings in
# benchmarks/results/embedding_cpu-2cores.md); above it only the top-k eigenpairs by magnitude
# are computed.
FULL_EIGH_MAX_POINTS = 4000

# Largest number of points for 'jax-dense' under 'auto' on a GPU/TPU. The dense solver is O(m^3)
# in time and holds a few m x m float32 arrays (input, eigenvectors, workspace); at this size
# they take a small fraction of any current accelerator's memory, and published cuSOLVER
# symmetric eigensolver rates put the time at seconds, like FULL_EIGH_MAX_POINTS on the CPU.
# An estimate, not a measurement (no accelerator was available when it was set):
# ``python -m benchmarks.eigen`` on a GPU measures it.
ACCELERATOR_DENSE_MAX_POINTS = 8192

# Extra columns of the Krylov block beyond k: eigenvalues just below the k-th then converge in
# the basis too instead of slowing the k-th (Halko et al. 2011 suggest 5-10).
KRYLOV_OVERSAMPLE = 10

# Krylov steps q: the basis holds the q + 1 blocks Omega ... W^q Omega (q + 1 products with W in
# all, the last one for T). Enough for float32 accuracy of the top 10 on the flattest spectra
# tried (benchmarks/README.md); the cost grows linearly in q.
KRYLOV_STEPS = 16

# Seed of the Gaussian start block: results are reproducible for a given matrix.
KRYLOV_SEED = 0

# Relative tolerance of the Lanczos solver (0 would mean machine precision, far slower).
_EIGSH_TOLERANCE = 1e-10

# Orthogonalisation passes against the earlier blocks before each QR: one pass of classical
# Gram-Schmidt leaves errors growing with the block's condition, a second brings them to
# rounding ("twice is enough").
_GRAM_SCHMIDT_PASSES = 2

METHODS = ('auto', 'scipy-full', 'scipy-topk', 'jax-dense', 'jax-topk')
# Methods that compute the whole spectrum (k may be m); the others need k < m.
DENSE_METHODS = ('scipy-full', 'jax-dense')

# Number of times each jitted solver was traced, by name: tests use it to check that calls of
# the same shape and k do not recompile.
TRACE_COUNTS: collections.Counter[str] = collections.Counter()


class Eigenpairs(NamedTuple):
  """The top k eigenpairs of a symmetric matrix by |eigenvalue|.

  Attributes:
    values_K: float64 eigenvalues by |lam| descending, signs kept.
    vectors_MxK: float64 unit eigenvectors, column j for values_K[j] (sign arbitrary).
    residual_K: stress left unexplained after each component, sum_{a>j} lam_a^2 / ||W||_F^2.
    solver_eps: machine epsilon of the dtype the solver computed in (float64 for SciPy,
      float32 for JAX unless x64 is on): the relative rounding of the values.
  """
  values_K: np.ndarray
  vectors_MxK: np.ndarray
  residual_K: np.ndarray
  solver_eps: float


def resolve_method(method: str, m: int, platform: str | None = None,
                   full_eigh_max_points: int | None = None) -> str:
  """The solver ``method`` stands for on an (m, m) matrix: itself, or what 'auto' picks.

  Args:
    method: one of METHODS.
    m: the matrix's size.
    platform: where the matrix lives, 'cpu', 'gpu' or 'tpu' (default: JAX's default backend).
    full_eigh_max_points: FULL_EIGH_MAX_POINTS unless given.

  Raises:
    ValueError: unknown method.
  """
  if method not in METHODS:
    raise ValueError(f'method={method!r}: accepted {METHODS}.')
  if method != 'auto':
    return method
  platform = platform or jax.default_backend()
  if platform == 'cpu':
    limit = FULL_EIGH_MAX_POINTS if full_eigh_max_points is None else full_eigh_max_points
    return 'scipy-full' if m <= limit else 'scipy-topk'
  return 'jax-dense' if m <= ACCELERATOR_DENSE_MAX_POINTS else 'jax-topk'


def top_by_magnitude(w: Any, k: int, method: str = 'auto') -> Eigenpairs:
  """The k eigenpairs of the symmetric matrix w with the largest |eigenvalue|.

  Example:
    >>> pairs = eigen.top_by_magnitude(w_MxM, k=10, method='jax-topk')
    >>> pairs.values_K[0], pairs.vectors_MxK[:, 0]   # the largest |lam|, perhaps negative

  Args:
    w: (m, m) symmetric matrix, NumPy or a jax.Array (sharded or replicated arrays are accepted;
      the JAX methods compute where the array lives, the SciPy ones copy it to the host).
    k: eigenpairs wanted: 1..m for 'scipy-full' and 'jax-dense', 1..m-1 for the top-k methods.
    method: one of METHODS (see the module docstring).

  Returns:
    ``Eigenpairs`` of NumPy float64 arrays.

  Raises:
    ValueError: w not a finite square matrix, unknown method, or k out of range.
  """
  shape = tuple(np.shape(w))
  if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
    raise ValueError(f'w has shape {shape}: expected a square (m, m) matrix.')
  m = shape[0]
  on_device = isinstance(w, jax.Array)
  platform = next(iter(w.devices())).platform if on_device else None
  method = resolve_method(method, m, platform)
  _check_k(k, m, method)
  k = int(k)
  finite = jnp.isfinite(w).all() if on_device else np.isfinite(np.asarray(w)).all()
  if not bool(finite):
    raise ValueError('w contains NaN or inf: eigenpairs are only defined for finite matrices.')
  if method.startswith('scipy'):
    return _scipy_by_magnitude(_to_host(w), k, method)
  dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is on
  w_MxM = jnp.asarray(w, dtype)
  block = k + KRYLOV_OVERSAMPLE
  # A Krylov basis as large as the matrix spans all of it: the dense solver is then exact and
  # no slower.
  if method == 'jax-dense' or block * (KRYLOV_STEPS + 1) >= m:
    lam_M, u_MxK, total = _dense_by_magnitude(w_MxM, k)
    lam_M = _to_host(lam_M)
    residual_K = _tail_residual(lam_M, k, _positive(float(total)))
    values_K = lam_M[:k]
  else:
    values_K, u_MxK, total = _krylov_by_magnitude(w_MxM, k)
    values_K = _to_host(values_K)
    residual_K = _cumulative_residual(values_K, _positive(float(total)))
  return Eigenpairs(values_K, _to_host(u_MxK), residual_K, float(jnp.finfo(dtype).eps))


def _check_k(k: Any, m: int, method: str) -> None:
  dense = method in DENSE_METHODS
  top = m if dense else m - 1
  if (not isinstance(k, numbers.Integral) or isinstance(k, bool)) or not 1 <= k <= top:
    kind = f'the full method {method!r}' if dense else f'the top-k method {method!r}'
    raise ValueError(f'k={k!r}: accepted integers 1..{top} for {kind} (the matrix is {m} x {m}).')


def _to_host(x: Any) -> np.ndarray:
  """x as a NumPy float64 array; a jax.Array split over processes is gathered first."""
  if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
    from jax.experimental import multihost_utils
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x, np.float64)


def _positive(total_stress: float) -> float:
  """||W||_F^2, kept above zero so that an all-zero W divides cleanly."""
  return max(total_stress, np.finfo(np.float64).tiny)


def _tail_residual(lam_M: np.ndarray, k: int, total_stress: float) -> np.ndarray:
  """(k,) residual stress from the whole spectrum, sorted by |lam| descending.

  The tail sums of the known spectrum make ES_m exactly 1 (1 - cumsum would leave ~1e-16,
  which the square root in ES turns into ~1e-8).
  """
  tail_M = np.cumsum((lam_M**2)[::-1])[::-1]
  return np.append(tail_M[1:], 0.0)[:k] / total_stress


def _cumulative_residual(lam_K: np.ndarray, total_stress: float) -> np.ndarray:
  """(k,) residual stress from the top k eigenvalues only."""
  return 1.0 - np.cumsum(lam_K**2) / total_stress


def _scipy_by_magnitude(w_MxM: np.ndarray, k: int, method: str) -> Eigenpairs:
  m = w_MxM.shape[0]
  total_stress = _positive(float(np.sum(w_MxM**2)))  # = sum of all lam^2
  eps = float(np.finfo(np.float64).eps)
  if method == 'scipy-full':
    lam_M, u_MxM = scipy.linalg.eigh(w_MxM)
    order = np.argsort(-np.abs(lam_M), kind='stable')
    return Eigenpairs(lam_M[order[:k]], u_MxM[:, order[:k]],
                      _tail_residual(lam_M[order], k, total_stress), eps)
  # ARPACK needs k < m; 'LM' (largest magnitude) returns the extremes of both signs.
  v0_M = np.ones(m) / np.sqrt(m) + np.linspace(-1, 1, m) / m  # deterministic start vector
  lam_K, u_MxK = scipy.sparse.linalg.eigsh(w_MxM, k=k, which='LM', tol=_EIGSH_TOLERANCE, v0=v0_M)
  order = np.argsort(-np.abs(lam_K), kind='stable')
  lam_K = lam_K[order]
  return Eigenpairs(lam_K, u_MxK[:, order], _cumulative_residual(lam_K, total_stress), eps)


def _frobenius_squared(w_MxM: jax.Array) -> jax.Array:
  """||W||_F^2 as row sums first: two short float32 sums, not one of m^2 terms."""
  return jnp.sum(jnp.sum(jnp.square(w_MxM), axis=1))


@functools.partial(jax.jit, static_argnames='k')
def _dense_by_magnitude(w_MxM: jax.Array, k: int):
  """All m eigenvalues by |lam| descending, the top k eigenvectors, and ||W||_F^2."""
  TRACE_COUNTS['dense'] += 1
  with jax.default_matmul_precision('highest'):
    lam_M, u_MxM = jnp.linalg.eigh(w_MxM)
  order_M = jnp.argsort(-jnp.abs(lam_M), stable=True)
  return lam_M[order_M], u_MxM[:, order_M[:k]], _frobenius_squared(w_MxM)


def _orthonormal_against(basis_MxS: jax.Array, y_MxB: jax.Array) -> jax.Array:
  """Orthonormal columns spanning the part of y outside span(basis).

  ``basis`` has orthonormal columns, or zero columns not yet filled. Columns of y that are
  rounding noise (W's range exhausted) come out of the first QR as unit vectors with a part
  inside the span; the last projection and QR make them orthogonal to it too.
  """
  for _ in range(_GRAM_SCHMIDT_PASSES):
    y_MxB = y_MxB - basis_MxS @ (basis_MxS.T @ y_MxB)
  q_MxB, _ = jnp.linalg.qr(y_MxB)
  q_MxB = q_MxB - basis_MxS @ (basis_MxS.T @ q_MxB)
  q_MxB, _ = jnp.linalg.qr(q_MxB)
  return q_MxB


@functools.partial(jax.jit, static_argnames='k')
def _krylov_by_magnitude(w_MxM: jax.Array, k: int):
  """Top k Ritz pairs by |theta| from a block Krylov basis, and ||W||_F^2."""
  TRACE_COUNTS['krylov'] += 1
  m, dtype = w_MxM.shape[0], w_MxM.dtype
  block = k + KRYLOV_OVERSAMPLE
  size = block * (KRYLOV_STEPS + 1)
  with jax.default_matmul_precision('highest'):
    omega_MxB = jax.random.normal(jax.random.key(KRYLOV_SEED), (m, block), dtype)
    basis_MxS = jnp.zeros((m, size), dtype).at[:, :block].set(jnp.linalg.qr(omega_MxB)[0])

    def step(i, carry):
      basis_MxS, w_basis_MxS = carry
      w_block_MxB = w_MxM @ lax.dynamic_slice_in_dim(basis_MxS, i * block, block, axis=1)
      w_basis_MxS = lax.dynamic_update_slice_in_dim(w_basis_MxS, w_block_MxB, i * block, axis=1)
      next_MxB = _orthonormal_against(basis_MxS, w_block_MxB)
      basis_MxS = lax.dynamic_update_slice_in_dim(basis_MxS, next_MxB, (i + 1) * block, axis=1)
      return basis_MxS, w_basis_MxS

    basis_MxS, w_basis_MxS = lax.fori_loop(0, KRYLOV_STEPS, step,
                                           (basis_MxS, jnp.zeros_like(basis_MxS)))
    w_basis_MxS = w_basis_MxS.at[:, -block:].set(w_MxM @ basis_MxS[:, -block:])
    t_SxS = basis_MxS.T @ w_basis_MxS
    theta_S, v_SxS = jnp.linalg.eigh(0.5 * (t_SxS + t_SxS.T))
    order_K = jnp.argsort(-jnp.abs(theta_S), stable=True)[:k]
    u_MxK = basis_MxS @ v_SxS[:, order_K]
  return theta_S[order_K], u_MxK, _frobenius_squared(w_MxM)
