"""Geodesic, progress, slerp, resampling, path length and tube width against closed forms."""

import math

import numpy as np
import pytest

from ensembles import analysis


def theta(num_classes):
  """Angle between sqrt(ignorance) and sqrt(truth) on every sample."""
  return math.acos(1 / math.sqrt(num_classes))


def reference_distance(p, q):
  """Float64 d_B of two (N, C) predictions, with the documented clip."""
  bc = np.sqrt(np.asarray(p, np.float64) * np.asarray(q, np.float64)).sum(-1)
  return -np.mean(np.log(np.clip(bc, 1e-6, 1)))


@pytest.fixture
def labels():
  return np.random.default_rng(0).integers(0, 10, 60)


def test_geodesic_ends_at_ignorance_and_truth(labels):
  ends = analysis.geodesic(labels, 10, [0.0, 1.0])
  np.testing.assert_allclose(ends[0], np.full((60, 10), 0.1), atol=1e-7)
  np.testing.assert_allclose(ends[1], np.eye(10)[labels], atol=1e-7)


def test_distance_from_ignorance_grows_as_minus_log_cos(labels):
  # On the great circle, BC(gamma(0), gamma(t)) = cos(t theta) on every sample.
  t = np.linspace(0, 1, 11)
  path = analysis.geodesic(labels, 10, t)
  d = np.asarray(analysis.bhattacharyya(path[:1], path))[0]
  np.testing.assert_allclose(d, -np.log(np.cos(t * theta(10))), atol=1e-6)
  assert np.all(np.diff(d) > 0)


def test_progress_of_geodesic_points_is_their_t(labels):
  t = np.concatenate([[0.0, 1.0], np.random.default_rng(1).uniform(0, 1, 30)])
  np.testing.assert_allclose(analysis.progress(analysis.geodesic(labels, 10, t), labels), t,
                             atol=1e-5)


def test_progress_off_the_geodesic_matches_dense_search(labels):
  rng = np.random.default_rng(2)
  points = analysis.slerp(analysis.geodesic(labels, 10, rng.uniform(0.1, 0.9, 6)),
                          rng.dirichlet(np.ones(10), (6, 60)), 0.3)


  def argmin_on_grid(p, t):
    # float64 geodesic from SCIENCE.md's formula (analysis.geodesic returns float32).
    sqrt_path = (np.sin((1 - t) * theta(10))[:, None, None] / math.sqrt(10)
                 + np.sin(t * theta(10))[:, None, None] * np.eye(10)[labels]) / math.sin(theta(10))
    bc = np.einsum('tnc,nc->tn', sqrt_path, np.sqrt(p.astype(np.float64)))
    return t[np.argmin(-np.log(np.clip(bc, 1e-6, 1)).mean(-1))]

  # Two rounds of 2,001-point grids: the second resolves the minimum to 1e-6.
  expected = []
  for p in points:
    coarse = argmin_on_grid(p, np.linspace(0, 1, 2001))
    expected.append(argmin_on_grid(p, np.linspace(max(coarse - 1e-3, 0), min(coarse + 1e-3, 1),
                                                  2001)))
  np.testing.assert_allclose(analysis.progress(points, labels), expected, atol=1e-5)
  assert analysis.progress(points[0], labels) == pytest.approx(expected[0], abs=1e-5)


def test_slerp_interpolates_square_roots_not_probabilities():
  rng = np.random.default_rng(3)
  p, q = rng.dirichlet(np.ones(5), 20), rng.dirichlet(np.ones(5), 20)
  mid = analysis.slerp(p, q, 0.5)
  np.testing.assert_allclose(analysis.slerp(p, q, 0.0), p, atol=1e-6)
  np.testing.assert_allclose(analysis.slerp(p, q, 1.0), q, atol=1e-6)
  # Half-way along the great circle: BC with both ends is cos(angle / 2), per sample.
  angle = np.arccos(np.sqrt(p * q).sum(-1))
  np.testing.assert_allclose(np.sqrt(mid * p).sum(-1), np.cos(angle / 2), atol=1e-6)
  np.testing.assert_allclose(np.sqrt(mid * q).sum(-1), np.cos(angle / 2), atol=1e-6)
  assert np.abs(mid - (p + q) / 2).max() > 1e-3


def test_path_length_of_sampled_geodesic(labels):
  steps = 8
  path = analysis.geodesic(labels, 10, np.linspace(0, 1, steps + 1))
  step_distance = -math.log(math.cos(theta(10) / steps))
  assert analysis.path_length(path) == pytest.approx(steps * 2 * math.sqrt(step_distance),
                                                     rel=1e-5)
  both = analysis.path_length(np.stack([path, path[::-1]]))
  np.testing.assert_allclose(both, [steps * 2 * math.sqrt(step_distance)] * 2, rtol=1e-5)


def test_resample_along_the_geodesic_is_exact(labels):
  # Progress along the geodesic is t and slerp between two of its points stays on it.
  traj = analysis.geodesic(labels, 10, [0.0, 0.2, 0.5, 0.9])
  grid = [0.1, 0.3, 0.7, 0.95]
  out = analysis.resample(traj, labels, grid)
  np.testing.assert_array_equal(out.reached, [True, True, True, False])
  np.testing.assert_allclose(out.progress, [0.0, 0.2, 0.5, 0.9], atol=1e-5)
  np.testing.assert_allclose(out.probs[:3], analysis.geodesic(labels, 10, grid[:3]), atol=1e-5)
  assert np.isnan(out.probs[3]).all()


def test_resample_uses_first_crossing_when_progress_goes_back(labels):
  traj = analysis.geodesic(labels, 10, [0.0, 0.5, 0.3, 0.8])
  out = analysis.resample(np.stack([traj, traj]), labels, [0.4, 0.6])
  assert out.probs.shape == (2, 2, 60, 10)
  np.testing.assert_allclose(out.probs[0], analysis.geodesic(labels, 10, [0.4, 0.6]), atol=1e-5)


def test_tube_width_is_distance_to_the_seed_mean():
  rng = np.random.default_rng(4)
  probs = rng.dirichlet(np.ones(4), (5, 2, 30)).astype(np.float32)  # 5 runs, 2 grid values
  reached = np.ones((5, 2), bool)
  reached[2, 1] = False
  groups = np.array([0, 0, 0, 1, 2])
  width = analysis.tube_width(probs, reached, groups)
  mean_0 = probs[:3, 0].astype(np.float64).mean(0)
  np.testing.assert_allclose(width[:3, 0], [reference_distance(p, mean_0) for p in probs[:3, 0]],
                             atol=1e-5)
  mean_1 = probs[:2, 1].astype(np.float64).mean(0)  # run 2 did not reach grid value 1
  np.testing.assert_allclose(width[:2, 1], [reference_distance(p, mean_1) for p in probs[:2, 1]],
                             atol=1e-5)
  assert np.isnan(width[2, 1]) and np.isnan(width[3:]).all()  # absent, or alone in its group


def test_distance_to_mean_of_other_runs():
  rng = np.random.default_rng(6)
  probs = rng.dirichlet(np.ones(4), (5, 2, 30)).astype(np.float32)
  reached = np.ones((5, 2), bool)
  reached[0, 1] = reached[1, 1] = False  # Only one reference run reaches grid value 1.
  reference = np.array([True, True, True, False, False])
  runs = np.array([False, False, False, True, True])
  d = analysis.distance_to_mean(probs, reached, runs, reference, min_reference=2)
  mean_0 = probs[:3, 0].astype(np.float64).mean(0)
  np.testing.assert_allclose(d[3:, 0], [reference_distance(p, mean_0) for p in probs[3:, 0]],
                             atol=1e-5)
  assert np.isnan(d[:3]).all() and np.isnan(d[:, 1]).all()
  d1 = analysis.distance_to_mean(probs, reached, runs, reference)  # One reference run suffices.
  np.testing.assert_allclose(d1[3:, 1], [reference_distance(p, probs[2, 1]) for p in probs[3:, 1]],
                             atol=1e-5)


def test_equal_progress_distances_mask_absent_runs():
  rng = np.random.default_rng(5)
  probs = rng.dirichlet(np.ones(3), (3, 2, 20)).astype(np.float32)
  reached = np.array([[True, True], [True, False], [True, True]])
  d = analysis.equal_progress_distances(probs, reached)
  assert d.shape == (2, 3, 3)
  assert d[1, 0, 2] == pytest.approx(reference_distance(probs[0, 1], probs[2, 1]), abs=1e-5)
  assert np.isnan(d[1, 1]).all() and np.isnan(d[1, :, 1]).all()
  assert not np.isnan(d[0]).any()


def test_bad_inputs_raise_value_error(labels):
  with pytest.raises(ValueError, match=r't=.*\[0, 1\]'):
    analysis.geodesic(labels, 10, [1.5])
  with pytest.raises(ValueError, match=r'outside \[0, 10\)'):
    analysis.geodesic(labels + 10, 10, [0.5])
  with pytest.raises(ValueError, match=r'labels has shape'):
    analysis.progress(analysis.geodesic(labels, 10, [0.5]), labels[:-1])
  with pytest.raises(ValueError, match=r'NaN'):
    analysis.progress(np.full((2, 60, 10), np.nan, np.float32), labels)
  with pytest.raises(ValueError, match=r'expected \(E, T, N, C\)'):
    analysis.resample(np.zeros((60, 10)), labels, [0.5])
