"""InPCA against classical MDS / PCA, a Minkowski example with a known negative eigenvalue."""

import numpy as np
import pytest

from ensembles import analysis
from ensembles.analysis import embedding as embedding_lib


def squared_distances(x, y=None):
  y = x if y is None else y
  return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def space_and_time_distances(m, seed):
  """Squared distances of m points with 5 space-like and 3 time-like directions of comparable
  size, plus symmetric noise: a W with large eigenvalues of both signs."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(m, 5)) * np.array([3.0, 2.0, 1.5, 1.0, 0.5])
  t = rng.normal(size=(m, 3)) * np.array([2.5, 1.2, 0.7])
  noise = rng.normal(scale=0.05, size=(m, m))
  return squared_distances(x) - squared_distances(t) + noise + noise.T


def pca(x):
  """Reference: principal axes of centred points by SVD (no eigen-solver shared with inpca)."""
  centred = x - x.mean(0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt.T, s**2, vt, x.mean(0)


def assert_equal_up_to_column_signs(a, b, atol):
  for col in range(a.shape[1]):
    sign = np.sign(a[:, col] @ b[:, col])
    np.testing.assert_allclose(a[:, col], sign * b[:, col], atol=atol)


@pytest.fixture
def points():
  rng = np.random.default_rng(0)
  return rng.normal(size=(30, 4)) * np.array([3.0, 2.0, 1.0, 0.5])


def test_squared_euclidean_is_classical_mds(points):
  fit = analysis.inpca(squared_distances(points), k=4)
  coords, variances, _, _ = pca(points)
  np.testing.assert_allclose(fit.eigenvalues, variances, rtol=1e-10)
  assert_equal_up_to_column_signs(fit.coords, coords, atol=1e-9)
  full = analysis.inpca(squared_distances(points))
  assert full.eigenvalues.min() > -1e-9 * full.eigenvalues.max()  # no negative eigenvalues


def test_projection_of_new_points_is_pca_projection(points):
  fit = analysis.inpca(squared_distances(points), k=4)
  _, _, axes, mean = pca(points)
  new = np.random.default_rng(1).normal(size=(5, 4))
  projected = fit.project(squared_distances(new, points))
  signs = np.sign(np.sum(fit.coords * pca(points)[0], axis=0))  # axis orientation of the fit
  np.testing.assert_allclose(projected, (new - mean) @ axes.T * signs, atol=1e-9)


def test_minkowski_distances_keep_a_negative_eigenvalue():
  # D = dx^2 - dt^2: W = Xc Xc^T - Tc Tc^T has eigenvalues |Xc|^2 > 0 and -|Tc|^2 < 0.
  rng = np.random.default_rng(2)
  x, t = rng.normal(size=(25, 1)), 3.0 * rng.normal(size=(25, 1))
  xc, tc = x - x.mean(), t - t.mean()
  # Orthogonalise t against x so the two eigenvalues are exact closed forms.
  tc = tc - xc * (xc.T @ tc) / (xc.T @ xc)
  fit = analysis.inpca(squared_distances(x) - squared_distances(tc), k=2)
  np.testing.assert_allclose(fit.eigenvalues, [-(tc**2).sum(), (xc**2).sum()], rtol=1e-10)
  np.testing.assert_array_equal(fit.signs, [-1.0, 1.0])
  # The signed pseudo-distance of the two components rebuilds D exactly.
  np.testing.assert_allclose(fit.pseudo_distances(), squared_distances(x) - squared_distances(tc),
                             atol=1e-9)


def test_explained_stress_increases_to_one():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(12, 12))
  d = np.abs(a + a.T)
  np.fill_diagonal(d, 0)
  fit = analysis.inpca(d)
  assert fit.coords.shape == (12, 12)
  assert np.all(np.diff(fit.explained_stress) >= -1e-12)
  assert fit.explained_stress[-1] == pytest.approx(1.0, abs=1e-12)
  # Independent ES_k: centring matrix built explicitly, eigenvalues from eigvalsh.
  lc = np.eye(12) - np.ones((12, 12)) / 12
  w = -0.5 * lc @ d @ lc
  lam = np.linalg.eigvalsh(w)
  lam = lam[np.argsort(-np.abs(lam))]
  expected = 1 - np.sqrt(np.clip(1 - np.cumsum(lam**2) / np.sum(w**2), 0, 1))
  np.testing.assert_allclose(fit.explained_stress, expected, atol=1e-12)
  np.testing.assert_allclose(fit.eigenvalues, lam, atol=1e-12)


@pytest.mark.parametrize('k', [3, 12])
def test_project_fitted_points_returns_their_coords(k):
  rng = np.random.default_rng(4)
  a = rng.normal(size=(12, 12))
  d = np.abs(a + a.T)
  np.fill_diagonal(d, 0)
  fit = analysis.inpca(d, k=k)
  np.testing.assert_allclose(fit.project(d), fit.coords, atol=1e-9)
  np.testing.assert_allclose(fit.project(d[5]), fit.coords[5], atol=1e-9)


def test_top_k_solver_agrees_with_full():
  # Space-like and time-like directions of comparable size, plus symmetric noise.
  d = space_and_time_distances(150, seed=5)
  full = analysis.inpca(d, k=8, method='full')
  top = analysis.inpca(d, k=8, method='topk')
  assert (full.eigenvalues < 0).any(), 'the test needs negative eigenvalues among the top 8'
  np.testing.assert_allclose(top.eigenvalues, full.eigenvalues, rtol=1e-8)
  np.testing.assert_allclose(top.explained_stress, full.explained_stress, rtol=1e-8)
  assert_equal_up_to_column_signs(top.coords, full.coords, atol=1e-6)


def test_auto_uses_top_k_above_threshold(monkeypatch):
  monkeypatch.setattr(embedding_lib, 'FULL_EIGH_MAX_POINTS', 10)
  rng = np.random.default_rng(6)
  x = rng.normal(size=(30, 3))
  fit = analysis.inpca(squared_distances(x))
  assert fit.coords.shape == (30, embedding_lib.DEFAULT_TOP_K)
  np.testing.assert_allclose(fit.eigenvalues[:3], pca(x)[1], rtol=1e-8)


@pytest.mark.parametrize('d, kwargs, message', [
    (np.zeros((3, 4)), {}, r'square'),
    (np.zeros((1, 1)), {}, r'at least 2 points'),
    (np.array([[0, np.nan], [np.nan, 0]]), {}, r'NaN'),
    (np.array([[0, 1.0], [2.0, 0]]), {}, r'not symmetric'),
    (np.zeros((3, 3)), {'k': 4}, r'k=4'),
    (np.zeros((3, 3)), {'k': 3, 'method': 'topk'}, r'k=3.*top-k'),
    (np.zeros((3, 3)), {'method': 'lanczos'}, r"method='lanczos'"),
])
def test_bad_inputs_raise_value_error(d, kwargs, message):
  with pytest.raises(ValueError, match=message):
    analysis.inpca(d, **kwargs)


def test_project_rejects_wrong_width():
  fit = analysis.inpca(squared_distances(np.arange(8.0)[:, None]), k=1)
  with pytest.raises(ValueError, match=r'expected \(q, 8\)'):
    fit.project(np.zeros((2, 7)))


@pytest.mark.parametrize('method', ['jax-dense', 'jax-topk'])
def test_jax_methods_agree_with_scipy(method):
  # As test_top_k_solver_agrees_with_full, at a size where 'jax-topk' runs its Krylov iteration.
  d = space_and_time_distances(400, seed=7)
  full = analysis.inpca(d, k=8, method='full')
  fit = analysis.inpca(d, k=8, method=method)
  assert (full.eigenvalues < 0).any(), 'the test needs negative eigenvalues among the top 8'
  scale = np.abs(full.eigenvalues).max()
  # float32 solvers: 1e-5 of the largest |lambda| (float32 rounding gives a few 1e-7).
  np.testing.assert_allclose(fit.eigenvalues, full.eigenvalues, rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(fit.explained_stress, full.explained_stress, atol=1e-5)
  assert_equal_up_to_column_signs(fit.coords, full.coords, atol=1e-3 * np.sqrt(scale))


def test_float32_solver_leaves_null_axes_empty(points):
  # Squared Euclidean distances of 4-D points: W has rank 4. In float32 its other eigenvalues
  # are rounding noise; they are stored as 0, so their axes get no coordinate and projecting
  # the fitted points still returns their coordinates.
  d = squared_distances(points)
  fit = analysis.inpca(d, method='jax-dense')
  assert fit.coords.shape == (30, 30)
  np.testing.assert_allclose(fit.eigenvalues[:4], pca(points)[1], rtol=1e-5)
  np.testing.assert_array_equal(fit.eigenvalues[4:], 0.0)
  np.testing.assert_array_equal(fit.coords[:, 4:], 0.0)
  np.testing.assert_allclose(fit.project(d), fit.coords, atol=1e-4 * np.abs(fit.coords).max())
  assert fit.explained_stress[-1] == pytest.approx(1.0, abs=1e-6)
