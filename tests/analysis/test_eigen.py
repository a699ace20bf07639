"""Eigensolvers by magnitude against float64 references: a known spectrum and a real InPCA W.

References are independent of the code under test: a matrix built as Q diag(lam) Q^T from a
chosen spectrum of both signs, and ``scipy.linalg.eigh`` in float64 on a W formed here with an
explicit centring matrix. Matrices have m = 400 points, so that 'jax-topk' with k = 5 runs its
Krylov iteration (its basis, (k + KRYLOV_OVERSAMPLE) (KRYLOV_STEPS + 1) columns, is below m).
"""

import jax
import numpy as np
import pytest
import scipy.linalg
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ensembles.analysis import distances
from ensembles.analysis import eigen

POINTS = 400
TOP = 5
# float32 solvers: eigenvalues within this fraction of |lam_1| of the float64 reference (float32
# rounding gives a few 1e-7; the margin covers other BLAS/LAPACK builds and accelerators).
FLOAT32_TOLERANCE = 1e-5
# float64 SciPy solvers.
FLOAT64_TOLERANCE = 1e-10
# Eigenvectors are compared (|<u, v>| = 1 within the method's tolerance) only for eigenvalues
# at least this fraction of |lam_1| away from every other eigenvalue: closer ones mix.
SEPARATION = 0.05
JAX_METHODS = ('jax-dense', 'jax-topk')
TOLERANCE = {'scipy-full': FLOAT64_TOLERANCE, 'scipy-topk': FLOAT64_TOLERANCE,
             'jax-dense': FLOAT32_TOLERANCE, 'jax-topk': FLOAT32_TOLERANCE}


def known_spectrum(m=POINTS, seed=0):
  """W = Q diag(lam) Q^T, lam: large negative and positive leaders, then a small tail.

  Returns:
    (W, lam sorted by |lam| descending, matching columns of Q).
  """
  rng = np.random.default_rng(seed)
  q_MxM, _ = np.linalg.qr(rng.standard_normal((m, m)))
  leaders = np.array([-10.0, 7.0, -5.0, 3.5, 2.5, -2.0, 1.6, 1.3])
  tail = rng.uniform(-1.0, 1.0, m - len(leaders))  # below every leader
  lam_M = np.concatenate([leaders, tail])
  w_MxM = (q_MxM * lam_M) @ q_MxM.T
  order = np.argsort(-np.abs(lam_M))
  return 0.5 * (w_MxM + w_MxM.T), lam_M[order], q_MxM[:, order]


def inpca_w(m=POINTS, runs=40, samples=60, classes=4, seed=1):
  """InPCA W of Bhattacharyya distances of softmax trajectories, and its float64 eigh.

  Each run has its own random logits L and is recorded at m / runs temperatures t:
  softmax(t L), from ignorance towards its own sharp predictions. With tens of runs leaving
  the same start, the leading eigenvalue is negative and well separated.
  """
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal((runs, 1, samples, classes))
  t = np.linspace(0.0, 4.0, m // runs)[None, :, None, None]
  z = t * logits
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs = (probs / probs.sum(-1, keepdims=True)).reshape(m, samples, classes)
  d_MxM = np.asarray(distances.bhattacharyya(probs.astype(np.float32)), np.float64)
  d_MxM = 0.5 * (d_MxM + d_MxM.T)
  centring_MxM = np.eye(m) - np.ones((m, m)) / m
  w_MxM = -0.5 * centring_MxM @ d_MxM @ centring_MxM
  lam_M, u_MxM = scipy.linalg.eigh(w_MxM)
  order = np.argsort(-np.abs(lam_M))
  return 0.5 * (w_MxM + w_MxM.T), lam_M[order], u_MxM[:, order]


@pytest.fixture(scope='module', params=['known', 'inpca'])
def problem(request):
  return known_spectrum() if request.param == 'known' else inpca_w()


@pytest.mark.parametrize('method', ['scipy-full', 'scipy-topk', *JAX_METHODS])
def test_top_eigenpairs_match_float64_reference(problem, method):
  w_MxM, lam_M, u_MxM = problem
  assert (lam_M[:TOP] < 0).any() and (lam_M[:TOP] > 0).any(), 'the test needs both signs'
  pairs = eigen.top_by_magnitude(w_MxM, TOP, method)
  assert pairs.values_K.dtype == np.float64 and pairs.vectors_MxK.shape == (POINTS, TOP)
  scale = abs(lam_M[0])
  tol = TOLERANCE[method]
  np.testing.assert_allclose(pairs.values_K, lam_M[:TOP], rtol=0, atol=tol * scale)
  residual_K = 1.0 - np.cumsum(lam_M[:TOP]**2) / np.sum(lam_M**2)
  np.testing.assert_allclose(pairs.residual_K, residual_K, rtol=0, atol=tol)
  gaps_M = np.where(np.eye(TOP, POINTS, dtype=bool), np.inf,
                    np.abs(lam_M[:TOP, None] - lam_M[None, :]))
  separated = np.flatnonzero(gaps_M.min(axis=1) > SEPARATION * scale)
  assert 0 in separated, 'the test needs the leading eigenvalue well separated'
  cosines = np.abs(np.sum(pairs.vectors_MxK[:, separated] * u_MxM[:, separated], axis=0))
  np.testing.assert_allclose(cosines, 1.0, atol=tol)


def test_dense_methods_return_the_whole_spectrum():
  w_MxM, lam_M, _ = known_spectrum(m=60)
  for method, tol in [('scipy-full', FLOAT64_TOLERANCE), ('jax-dense', FLOAT32_TOLERANCE)]:
    pairs = eigen.top_by_magnitude(w_MxM, 60, method)
    np.testing.assert_allclose(pairs.values_K, lam_M, rtol=0, atol=tol * abs(lam_M[0]))
    assert pairs.residual_K[-1] == 0.0  # ES_m = 1 exactly


def test_krylov_finds_a_low_rank_spectrum():
  # Squared Euclidean distances of 4-D points: W = Xc Xc^T has rank 4 (PCA variances), so the
  # Krylov basis exhausts W's range after one step and the rest of it is rounding noise.
  rng = np.random.default_rng(2)
  x = rng.normal(size=(POINTS, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
  centred = x - x.mean(0)
  variances = np.linalg.svd(centred, compute_uv=False)**2
  pairs = eigen.top_by_magnitude(centred @ centred.T, 6, 'jax-topk')
  np.testing.assert_allclose(pairs.values_K[:4], variances, rtol=FLOAT32_TOLERANCE)
  np.testing.assert_allclose(pairs.values_K[4:], 0.0, atol=FLOAT32_TOLERANCE * variances[0])


def test_topk_on_a_small_matrix_is_exact():
  # The Krylov basis would be as large as the matrix: the dense solver answers instead.
  w_MxM, lam_M, _ = known_spectrum(m=30)
  pairs = eigen.top_by_magnitude(w_MxM, TOP, 'jax-topk')
  np.testing.assert_allclose(pairs.values_K, lam_M[:TOP], atol=FLOAT32_TOLERANCE * abs(lam_M[0]))


@pytest.mark.parametrize('method', JAX_METHODS)
def test_same_shape_does_not_recompile(method):
  # Sizes no other test uses, so the first call must compile; 'jax-topk' needs one large enough
  # for its Krylov iteration.
  m = {'jax-dense': 61, 'jax-topk': POINTS + 1}[method]
  w_MxM, _, _ = known_spectrum(m, seed=3)
  other_MxM, lam_M, _ = known_spectrum(m, seed=4)
  before = sum(eigen.TRACE_COUNTS.values())
  eigen.top_by_magnitude(w_MxM, TOP, method)
  assert sum(eigen.TRACE_COUNTS.values()) == before + 1
  pairs = eigen.top_by_magnitude(other_MxM, TOP, method)
  assert sum(eigen.TRACE_COUNTS.values()) == before + 1
  np.testing.assert_allclose(pairs.values_K, lam_M[:TOP], atol=FLOAT32_TOLERANCE * abs(lam_M[0]))
  eigen.top_by_magnitude(other_MxM, TOP + 1, method)  # a new k is a new program
  assert sum(eigen.TRACE_COUNTS.values()) == before + 2


@pytest.mark.parametrize('method, spec', [
    ('scipy-full', PartitionSpec('points')),
    ('jax-dense', PartitionSpec()),
    ('jax-topk', PartitionSpec()),
    ('jax-topk', PartitionSpec('points')),
], ids=['scipy-full-sharded', 'jax-dense-replicated', 'jax-topk-replicated', 'jax-topk-sharded'])
def test_jax_array_input(method, spec):
  w_MxM, lam_M, _ = known_spectrum(seed=5)
  mesh = Mesh(np.array(jax.devices()[:2]), ('points',))  # the tests run on 2 CPU devices
  w = jax.device_put(w_MxM.astype(np.float32), NamedSharding(mesh, spec))
  pairs = eigen.top_by_magnitude(w, TOP, method)
  assert isinstance(pairs.values_K, np.ndarray) and pairs.vectors_MxK.dtype == np.float64
  np.testing.assert_allclose(pairs.values_K, lam_M[:TOP], atol=FLOAT32_TOLERANCE * abs(lam_M[0]))


@pytest.mark.parametrize('method, m, platform, expected', [
    ('auto', eigen.FULL_EIGH_MAX_POINTS, 'cpu', 'scipy-full'),
    ('auto', eigen.FULL_EIGH_MAX_POINTS + 1, 'cpu', 'scipy-topk'),
    ('auto', eigen.ACCELERATOR_DENSE_MAX_POINTS, 'gpu', 'jax-dense'),
    ('auto', eigen.ACCELERATOR_DENSE_MAX_POINTS + 1, 'tpu', 'jax-topk'),
    ('jax-topk', 10, 'cpu', 'jax-topk'),
])
def test_resolve_method(method, m, platform, expected):
  assert eigen.resolve_method(method, m, platform) == expected


@pytest.mark.parametrize('w, k, method, message', [
    (np.zeros((4, 4)), 0, 'auto', r"k=0: accepted integers 1\.\.4 .*'scipy-full'"),
    (np.zeros((4, 4)), 5, 'jax-dense', r'k=5: accepted integers 1\.\.4'),
    (np.zeros((4, 4)), 4, 'jax-topk', r"k=4: accepted integers 1\.\.3 for the top-k method"),
    (np.zeros((4, 4)), 4, 'scipy-topk', r'k=4: accepted integers 1\.\.3 for the top-k'),
    (np.zeros((4, 4)), 2.0, 'scipy-full', r'k=2\.0: accepted integers'),
    (np.zeros((4, 4)), True, 'scipy-full', r'k=True: accepted integers'),
    (np.zeros((4, 4)), 2, 'lanczos', r"method='lanczos': accepted \('auto', 'scipy-full'"),
    (np.zeros((4, 3)), 2, 'auto', r'shape \(4, 3\): expected a square'),
    (np.full((4, 4), np.nan), 2, 'jax-dense', r'NaN or inf'),
])
def test_bad_arguments_raise_value_error(w, k, method, message):
  with pytest.raises(ValueError, match=message):
    eigen.top_by_magnitude(w, k, method)
