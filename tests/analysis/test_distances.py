"""Bhattacharyya distances against a float64 NumPy reference, closed forms and bad inputs."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import analysis
from analysis import distances


def reference_bhattacharyya(p, q):
  """Slow float64 d_B with the documented clip, written from the formula in SCIENCE.md."""
  p = np.asarray(p, np.float64)
  q = np.asarray(q, np.float64)
  p = p / p.sum(-1, keepdims=True)
  q = q / q.sum(-1, keepdims=True)
  out = np.empty((len(p), len(q)))
  for i in range(len(p)):
    for j in range(len(q)):
      bc_n = np.sqrt(p[i] * q[j]).sum(-1)
      out[i, j] = -np.mean(np.log(np.clip(bc_n, 1e-6, 1.0)))
  return out


def dirichlet(shape, num_classes, seed, alpha=1.0):
  rng = np.random.default_rng(seed)
  return rng.dirichlet(np.full(num_classes, alpha), size=shape).astype(np.float32)


@pytest.fixture
def small_tiles(monkeypatch):
  """Tiles of 8 points and chunks of a few samples, so small inputs cross every boundary."""
  monkeypatch.setattr(distances, 'MAX_BLOCK', 8)
  monkeypatch.setattr(distances, 'CHUNK_BYTES', 4 * 16 * 6 * 10)


@pytest.mark.parametrize('m', [1, 5, 23])
def test_symmetric_matches_float64_reference(small_tiles, m):
  p = dirichlet((m, 53), 10, seed=m)
  d = np.asarray(analysis.bhattacharyya(p))
  assert d.dtype == np.float32 and d.shape == (m, m)
  np.testing.assert_allclose(d, reference_bhattacharyya(p, p), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('m,m2', [(17, 9), (3, 20)])
def test_rectangular_matches_float64_reference(small_tiles, m, m2):
  p, q = dirichlet((m, 31), 7, seed=1), dirichlet((m2, 31), 7, seed=2)
  d = np.asarray(analysis.bhattacharyya(p, q))
  assert d.shape == (m, m2)
  np.testing.assert_allclose(d, reference_bhattacharyya(p, q), atol=1e-5, rtol=1e-5)


def test_default_tiling_matches_reference_on_peaked_distributions():
  # Small Dirichlet alpha: confident, disagreeing predictions with coefficients near the clip.
  p = dirichlet((40, 200), 10, seed=3, alpha=0.05)
  d = np.asarray(analysis.bhattacharyya(p))
  np.testing.assert_allclose(d, reference_bhattacharyya(p, p), atol=1e-5, rtol=1e-5)


def test_distance_is_nonnegative_symmetric_with_tiny_diagonal(small_tiles):
  p = dirichlet((30, 64), 10, seed=4)
  d = np.asarray(analysis.bhattacharyya(p))
  assert (d >= 0).all()
  np.testing.assert_array_equal(d, d.T)
  assert np.abs(np.diag(d)).max() <= 1e-6


@pytest.mark.parametrize('num_classes', [2, 3, 10])
def test_ignorance_to_truth_is_half_log_c(num_classes):
  labels = np.arange(50) % num_classes
  ignorance = analysis.ignorance(50, num_classes)[None]
  truth = analysis.truth(labels, num_classes)[None]
  d = float(analysis.bhattacharyya(ignorance, truth)[0, 0])
  assert d == pytest.approx(0.5 * math.log(num_classes), abs=1e-6)


def test_disjoint_predictions_are_clipped_at_documented_value():
  one_hot = np.eye(4, dtype=np.float32)[None, :, :]     # point 0: sample n predicts class n
  shifted = np.roll(one_hot, 1, axis=-1)                # point 1: always a different class
  d = float(analysis.bhattacharyya(one_hot, shifted)[0, 0])
  assert d == pytest.approx(-math.log(analysis.BC_CLIP), rel=1e-6)


def test_float16_and_jax_inputs(small_tiles):
  p16 = dirichlet((12, 40), 10, seed=5).astype(np.float16)
  d = np.asarray(analysis.bhattacharyya(jnp.asarray(p16)))
  np.testing.assert_allclose(d, reference_bhattacharyya(p16, p16), atol=1e-5)
  assert np.abs(np.diag(d)).max() <= 1e-6


def test_one_log_per_sample_agrees_with_grouped_logs(small_tiles):
  p = dirichlet((20, 45), 10, seed=6)
  grouped = np.asarray(analysis.bhattacharyya(p))
  single = np.asarray(analysis.bhattacharyya(p, samples_per_log=1))
  np.testing.assert_allclose(grouped, single, atol=2e-6)


def test_symmetric_path_equals_explicit_q(small_tiles):
  p = dirichlet((19, 25), 5, seed=7)
  np.testing.assert_allclose(np.asarray(analysis.bhattacharyya(p)),
                             np.asarray(analysis.bhattacharyya(p, p)), atol=1e-6)


def test_paired_matches_reference_diagonal():
  p, q = dirichlet((300, 30), 6, seed=8), dirichlet((300, 30), 6, seed=9)
  expected = [reference_bhattacharyya(p[i:i + 1], q[i:i + 1])[0, 0] for i in range(len(p))]
  np.testing.assert_allclose(analysis.bhattacharyya_paired(p, q), expected, atol=1e-5)


def test_same_shapes_do_not_retrace():
  p = dirichlet((10, 30), 4, seed=10)
  analysis.bhattacharyya(p).block_until_ready()
  analysis.bhattacharyya(p, p[:3]).block_until_ready()
  before = dict(distances.TRACE_COUNTS)
  for seed in range(3):
    other = dirichlet((10, 30), 4, seed=11 + seed)
    analysis.bhattacharyya(other).block_until_ready()
    analysis.bhattacharyya(other, other[:3]).block_until_ready()
  assert dict(distances.TRACE_COUNTS) == before


def _with(p, index, value):
  p = p.copy()
  p[index] = value
  return p


GOOD = dirichlet((4, 6), 3, seed=12)  # 4 points, 6 samples, 3 classes


@pytest.mark.parametrize('bad, message', [
    (_with(GOOD, (2, 1, 0), np.nan), r'point 2 contains NaN.*diverged'),
    (_with(GOOD, (1, 3, 0), -0.2), r'negative probability .* point 1, sample 3'),
    (GOOD * 1.5, r'sums to 1\.5'),
    (GOOD[0], r'expected rank 3'),
    (GOOD[:, :, None], r'expected rank 3'),
    (GOOD.astype(np.int32), r'dtype int32'),
    (GOOD[:, :0], r'non-empty'),
])
def test_bad_inputs_raise_value_error(bad, message):
  with pytest.raises(ValueError, match=message):
    analysis.bhattacharyya(bad)


def test_mismatched_p_and_q_raise_value_error():
  with pytest.raises(ValueError, match=r'must agree in samples N and classes C'):
    analysis.bhattacharyya(GOOD, dirichlet((4, 6), 4, seed=13))
  with pytest.raises(ValueError, match=r'must agree in samples N and classes C'):
    analysis.bhattacharyya(GOOD, dirichlet((4, 7), 3, seed=13))
  with pytest.raises(ValueError, match=r'samples_per_log=7'):
    analysis.bhattacharyya(GOOD, samples_per_log=7)


def test_bad_input_fails_before_compiling():
  before = dict(distances.TRACE_COUNTS)
  with pytest.raises(ValueError):
    analysis.bhattacharyya(_with(dirichlet((3, 5), 7, seed=14), (0, 0, 0), np.nan))
  assert dict(distances.TRACE_COUNTS) == before
