"""Tests of ensembles.analysis.checks: good input passes, each bad input is refused with an
error naming the argument, the place at fault and what is accepted."""

import re

import ml_dtypes
import numpy as np
import pytest

from ensembles.analysis import checks


def _probs(shape, seed=0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.dirichlet(np.ones(shape[-1]), shape[:-1]).astype(np.float32)


@pytest.mark.parametrize('dtype', [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_probabilities_pass_in_every_float_dtype(dtype):
  # Rounded to 16 bits, rows sum to 1 only within the dtype's precision: still accepted.
  checks.check_probabilities(_probs((3, 50, 10)).astype(dtype), 'probs')
  checks.check_probabilities(_probs((50, 10)).astype(dtype), 'p_NxC', ndim=2)


@pytest.mark.parametrize('p, ndim, message', [
    (np.full((5, 3), 1 / 3), 3, r'probs_MxNxC has shape \(5, 3\): expected rank 3'),
    (np.full((2, 5, 3), 1 / 3), 2, r'probs_MxNxC has shape \(2, 5, 3\): expected rank 2'),
    (np.zeros((2, 0, 3)), 3, r'probs_MxNxC has shape \(2, 0, 3\): every axis must be non-empty'),
    (np.ones((2, 5, 3), np.int32), 3, r'probs_MxNxC has dtype int32: probabilities must be '
                                      'float16, bfloat16, float32 or float64'),
])
def test_probabilities_of_wrong_rank_size_or_dtype_are_refused(p, ndim, message):
  with pytest.raises(ValueError, match=message):
    checks.check_probabilities(p, 'probs_MxNxC', ndim=ndim)


def test_non_finite_points_are_listed():
  p = _probs((9, 4, 3))
  p[[1, 2, 3, 5, 6, 8], 2, 0] = np.nan
  p[3, 1, 1] = np.inf
  with pytest.raises(ValueError, match=r'probs_MxNxC point 1, 2, 3, 5, 6 and 1 more contains '
                                       r'NaN or inf \(a diverged run\?\)'):
    checks.check_probabilities(p, 'probs_MxNxC')
  with pytest.raises(ValueError, match=r'p_NxC 0 contains NaN'):
    checks.check_probabilities(p[5], 'p_NxC', ndim=2)


def test_negative_probability_names_point_and_sample():
  p = _probs((4, 6, 3))
  p[2, 4] = [1.2, -0.2, 0.0]  # Sums to 1: only the sign is wrong.
  with pytest.raises(ValueError, match=r'probs_MxNxC has a negative probability -0.2 at point 2, '
                                       r'sample 4: .*not logits'):
    checks.check_probabilities(p, 'probs_MxNxC')
  with pytest.raises(ValueError, match=r'at sample 4:'):
    checks.check_probabilities(p[2], 'p_NxC', ndim=2)


@pytest.mark.parametrize('dtype, scale, tolerance', [
    (np.float32, 1.002, '0.001'),  # 2e-3 off: past float32's 1e-3.
    (np.float16, 1.004, '0.002'),  # 4e-3 off: past float16's 2e-3.
])
def test_rows_that_do_not_sum_to_one_are_refused(dtype, scale, tolerance):
  p = _probs((3, 5, 4)).astype(np.float64)
  p[1, 3] *= scale
  p = p.astype(dtype)
  total = float(p[1, 3].astype(np.float64).sum())  # The row's sum after rounding to dtype.
  with pytest.raises(ValueError, match=rf'probs_MxNxC at point 1, sample 3 sums to '
                                       rf'{re.escape(f"{total:.6g}")} '
                                       rf'.*within {tolerance} for {np.dtype(dtype).name}'):
    checks.check_probabilities(p, 'probs_MxNxC')


def test_float_dtype_or_raise():
  assert checks.float_dtype_or_raise(np.zeros(2, np.float16), 'x') == np.float16
  assert checks.float_dtype_or_raise([0.5, 0.5], 'x') == np.float64
  with pytest.raises(ValueError, match='x has dtype bool'):
    checks.float_dtype_or_raise(np.zeros(2, bool), 'x')


def test_labels_pass_and_each_bad_kind_is_refused():
  checks.check_labels(np.array([0, 3, 2], np.uint8), 3, 4)
  checks.check_labels([0, 1, 1], 3, 2, name='y_N')
  with pytest.raises(ValueError, match=r'y_N has shape \(2,\): expected \(3,\), one label per'):
    checks.check_labels([0, 1], 3, 4, name='y_N')
  with pytest.raises(ValueError, match=r'y_N has shape \(1, 3\)'):
    checks.check_labels([[0, 1, 2]], 3, 4, name='y_N')
  with pytest.raises(ValueError, match='y_N has dtype float64: expected integer class indices'):
    checks.check_labels([0.0, 1.0, 2.0], 3, 4, name='y_N')
  with pytest.raises(ValueError, match=r'y_N at samples 1, 3 are outside \[0, 4\) '
                                       r'\(first bad value -1\)'):
    checks.check_labels([0, -1, 3, 4], 4, 4, name='y_N')
  with pytest.raises(ValueError, match=r'^labels at samples 0'):
    checks.check_labels([7], 1, 4)


def test_distance_matrix_passes_as_float64():
  d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]], np.float32)
  d[0, 1] += 1e-5  # Asymmetric within the tolerance (5e-6 of max |D|).
  out = checks.check_distance_matrix(d, 'D_MxM')
  assert out.dtype == np.float64
  np.testing.assert_array_equal(out, d.astype(np.float64))


@pytest.mark.parametrize('d, message', [
    (np.zeros((2, 3)), r'D_MxM has shape \(2, 3\): expected a square'),
    (np.zeros(4), r'D_MxM has shape \(4,\): expected a square'),
    (np.zeros((1, 1)), r'D_MxM has shape \(1, 1\): at least 2 points'),
    (np.array([[0, np.nan, 1], [np.nan, 0, 1], [1, 1, 0]]), r'D_MxM rows 0, 1 contain NaN or inf'),
    (np.array([[0, np.inf], [np.inf, 0]]), r'D_MxM rows 0, 1 contain NaN or inf'),
    (np.array([[0.0, 1.0], [0.9, 0.0]]), r'D_MxM is not symmetric: max \|D - D\^T\| / max \|D\| '
                                        r'= 0.1 > 0.0001'),
])
def test_bad_distance_matrices_are_refused(d, message):
  with pytest.raises(ValueError, match=message):
    checks.check_distance_matrix(d, 'D_MxM')


def test_symmetry_tolerance_is_a_parameter():
  d = np.array([[0.0, 1.0], [0.9, 0.0]])
  np.testing.assert_array_equal(checks.check_distance_matrix(d, symmetric_tolerance=0.2), d)
  with pytest.raises(ValueError, match='^D is not symmetric'):
    checks.check_distance_matrix(d)
