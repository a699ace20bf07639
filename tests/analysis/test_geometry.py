"""Geodesic, progress, slerp, resampling, path length and tube width against closed forms."""

import math

import numpy as np
import pytest

from ensembles import analysis
from ensembles.analysis import distances


def theta(num_classes):
  """Angle between sqrt(ignorance) and sqrt(truth) on every sample."""
  return math.acos(1 / math.sqrt(num_classes))


def reference_distance(p, q):
  """Float64 d_B of two (..., N, C) predictions from the definition, with the documented clip:
  each row renormalised in float64 (float64 copies of the given inputs)."""
  p = np.asarray(p, np.float64)
  q = np.asarray(q, np.float64)
  p = p / p.sum(-1, keepdims=True)
  q = q / q.sum(-1, keepdims=True)
  return -np.mean(np.log(np.clip(np.sqrt(p * q).sum(-1), 1e-6, 1)), axis=-1)


def drifting_runs(num_runs, scales, seed):
  """(E, T, N, C) float32 runs from one start whose logits drift by ~scales[t] at step t: their
  steps, and runs at one step, are nearly equal distributions (d_B ~ 1e-7 for a scale of 1e-3)."""
  rng = np.random.default_rng(seed)
  start = 2 * rng.standard_normal((1, 1, 300, 10))
  drift = np.asarray(scales)[None, :, None, None] * rng.standard_normal(
      (num_runs, len(scales), 300, 10))
  logits = start + np.cumsum(drift, axis=1)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  return (probs / probs.sum(-1, keepdims=True)).astype(np.float32)


# Agreement asked of path lengths and equal-progress distances with float64 of the same float32
# inputs, for d_B >= 1e-7 (measured: <= 2e-7).
_RTOL = 1e-6


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


def test_path_length_of_nearly_equal_checkpoints_matches_float64():
  # Steps of d_B ~ 1e-7 .. 1e-5; the float32 form -log sum sqrt(p) sqrt(q) was 5e-3 relative
  # off the length of these runs.
  runs = drifting_runs(3, np.geomspace(1.2e-3, 1e-2, 12), seed=7)
  steps = reference_distance(runs[:, :-1], runs[:, 1:])
  assert 1e-7 <= steps.min() < 2e-7 and 5e-6 < steps.max() < 5e-5
  expected = (2 * np.sqrt(steps)).sum(axis=1)
  np.testing.assert_allclose(analysis.path_length(runs), expected, rtol=_RTOL, atol=0)
  assert analysis.path_length(runs[1]) == pytest.approx(expected[1], rel=_RTOL)


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


def test_equal_progress_distances_match_float64_and_compile_once():
  # Runs that drift apart from one start: at the first grid values d_B ~ 1e-7, where the Gram
  # matmul's rounding put these distances up to 7e-2 relative off.
  runs = drifting_runs(7, [1e-3, 1e-3, 1e-2, 1e-1], seed=9)  # (E, G, N, C)
  reached = np.ones((7, 4), bool)
  reached[2, 3] = reached[5, 1:] = False
  d = analysis.equal_progress_distances(runs, reached)
  assert d.shape == (4, 7, 7) and d.dtype == np.float32
  for g in range(4):
    present = np.flatnonzero(reached[:, g])
    rows, cols = np.meshgrid(present, present, indexing='ij')
    expected = reference_distance(runs[rows, g], runs[cols, g])
    off = rows != cols
    assert expected[off].min() >= 1e-7
    np.testing.assert_allclose(d[g][rows, cols][off], expected[off], rtol=_RTOL, atol=0)
    np.testing.assert_array_equal(np.diag(d[g])[present], 0.0)
    absent = np.flatnonzero(~reached[:, g])
    assert np.isnan(d[g, absent]).all() and np.isnan(d[g, :, absent]).all()
  assert d[0, 0, 1] < 2e-7
  before = dict(distances.TRACE_COUNTS)
  fewer = reached.copy()
  fewer[:4, 2] = False
  analysis.equal_progress_distances(runs, fewer)  # Other counts of pairs, the same batches.
  assert dict(distances.TRACE_COUNTS) == before


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
