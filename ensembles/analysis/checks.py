"""Input checks shared by the analysis: are these arrays probabilities, is this a distance matrix.

Every check runs on the host, in slices of bounded size, before anything is compiled, and its
error names the offending array, the point (and sample) at fault and what would be accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Row sums of probabilities must be within this distance of 1, by input dtype. Softmax outputs
# in float32 sum to 1 within a few 1e-7, so 1e-3 only rejects unnormalised input. Rounding each
# entry to a 16-bit float moves a row sum by at most half an ulp of 1 (eps/2: 4.9e-4 for float16,
# 3.9e-3 for bfloat16), so stored 16-bit probabilities pass with a 4x margin.
ROW_SUM_TOLERANCE = {'float16': 2e-3, 'bfloat16': 1.6e-2, 'float32': 1e-3, 'float64': 1e-3}

# The checks read the input in slices of at most this many bytes (as float32), so that checking
# a large array costs no more than a few MiB on top of it.
_CHECK_SLICE_BYTES = 8 * 2**20

# How many offending indices an error message lists before it says "and K more".
_MAX_LISTED = 5

_ACCEPTED_DTYPES = 'float16, bfloat16, float32 or float64'


def _describe_indices(indices: np.ndarray) -> str:
  listed = ', '.join(str(int(i)) for i in indices[:_MAX_LISTED])
  more = len(indices) - _MAX_LISTED
  return listed + (f' and {more} more' if more > 0 else '')


def float_dtype_or_raise(x: Any, name: str) -> np.dtype:
  """Returns the dtype of ``x`` if it is a float type, else raises ValueError."""
  dtype = np.dtype(getattr(x, 'dtype', np.asarray(x).dtype))
  if dtype.kind != 'f' and dtype.name != 'bfloat16':
    raise ValueError(f'{name} has dtype {dtype.name}: probabilities must be {_ACCEPTED_DTYPES}.')
  return dtype


def check_probabilities(p: Any, name: str, ndim: int = 3) -> None:
  """Raises ValueError unless ``p`` holds probability vectors along its last axis.

  Args:
    p: array (NumPy or JAX) of shape (M, N, C) for ``ndim=3`` (M points, N samples, C classes)
      or (N, C) for ``ndim=2``.
    name: how the caller's argument is called, used in the error message.
    ndim: the rank that is accepted.

  Raises:
    ValueError: wrong rank, non-float dtype, empty axes, NaN/inf values (a diverged run),
      negative entries, or rows whose sum is not 1 within ``ROW_SUM_TOLERANCE``.
  """
  shape = tuple(np.shape(p))
  if len(shape) != ndim:
    expected = '(M points, N samples, C classes)' if ndim == 3 else '(N samples, C classes)'
    raise ValueError(f'{name} has shape {shape}: expected rank {ndim}, {expected}.')
  if 0 in shape:
    raise ValueError(f'{name} has shape {shape}: every axis must be non-empty.')
  dtype = float_dtype_or_raise(p, name)
  tolerance = ROW_SUM_TOLERANCE.get(dtype.name, ROW_SUM_TOLERANCE['float32'])
  p_3d = p if ndim == 3 else p[None]
  num_points = p_3d.shape[0]
  point_floats = int(np.prod(p_3d.shape[1:]))
  step = max(1, _CHECK_SLICE_BYTES // (4 * point_floats))
  for start in range(0, num_points, step):
    chunk_BxNxC = np.asarray(p_3d[start:start + step], dtype=np.float32)
    flat_RxC = chunk_BxNxC.reshape(-1, shape[-1])
    # NaN propagates through both reductions, so two passes find every defect.
    sums_R = flat_RxC @ np.ones(shape[-1], np.float32)
    finite_B = np.isfinite(sums_R.reshape(chunk_BxNxC.shape[:2])).all(axis=1)
    where = '' if ndim == 2 else ' point'
    if not finite_B.all():
      bad = start + np.flatnonzero(~finite_B)
      raise ValueError(
          f'{name}{where} {_describe_indices(bad)} contains NaN or inf (a diverged run?): '
          'drop such points (members with status "diverged") before the analysis.')
    lowest = float(flat_RxC.min())
    if lowest < 0:
      row = int(np.argmin(flat_RxC.min(axis=1)))
      point, sample = divmod(row, chunk_BxNxC.shape[1])
      at = f'sample {sample}' if ndim == 2 else f'point {start + point}, sample {sample}'
      raise ValueError(f'{name} has a negative probability {lowest:.3g} at {at}: '
                       'probabilities must be >= 0 (pass softmax outputs, not logits).')
    deviation_R = np.abs(sums_R - 1.0)
    worst = int(np.argmax(deviation_R))
    if deviation_R[worst] > tolerance:
      point, sample = divmod(worst, chunk_BxNxC.shape[1])
      at = f'sample {sample}' if ndim == 2 else f'point {start + point}, sample {sample}'
      raise ValueError(
          f'{name} at {at} sums to {sums_R[worst]:.6g} over its last axis: each row must sum '
          f'to 1 within {tolerance:g} for {dtype.name} input (pass softmax outputs).')


def check_labels(labels: Any, num_samples: int, num_classes: int, name: str = 'labels') -> None:
  """Raises ValueError unless ``labels`` is (num_samples,) ints in [0, num_classes)."""
  labels = np.asarray(labels)
  if labels.shape != (num_samples,):
    raise ValueError(f'{name} has shape {labels.shape}: expected ({num_samples},), one label per '
                     'sample of the probabilities.')
  if labels.dtype.kind not in 'iu':
    raise ValueError(f'{name} has dtype {labels.dtype.name}: expected integer class indices.')
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise ValueError(f'{name} at samples {_describe_indices(bad)} are outside [0, {num_classes}) '
                     f'(first bad value {int(labels[bad[0]])}).')


def check_distance_matrix(d: Any, name: str = 'D', symmetric_tolerance: float = 1e-4) -> np.ndarray:
  """Returns ``d`` as a float64 NumPy array after checking it is a finite square matrix.

  Args:
    d: (m, m) matrix of pairwise (squared-like) distances.
    name: the caller's name for it, used in error messages.
    symmetric_tolerance: largest accepted |D - D^T|, relative to max |D|.

  Raises:
    ValueError: not 2-D square, fewer than 2 points, NaN/inf, or not symmetric.
  """
  d_MxM = np.asarray(d, dtype=np.float64)
  if d_MxM.ndim != 2 or d_MxM.shape[0] != d_MxM.shape[1]:
    raise ValueError(f'{name} has shape {d_MxM.shape}: expected a square (m, m) matrix.')
  if d_MxM.shape[0] < 2:
    raise ValueError(f'{name} has shape {d_MxM.shape}: at least 2 points are needed.')
  finite_M = np.isfinite(d_MxM).all(axis=1)
  if not finite_M.all():
    raise ValueError(f'{name} rows {_describe_indices(np.flatnonzero(~finite_M))} contain NaN or '
                     'inf: distances of diverged runs cannot be embedded; drop those points.')
  scale = max(float(np.abs(d_MxM).max()), np.finfo(np.float64).tiny)
  asymmetry = float(np.abs(d_MxM - d_MxM.T).max()) / scale
  if asymmetry > symmetric_tolerance:
    raise ValueError(f'{name} is not symmetric: max |D - D^T| / max |D| = {asymmetry:.3g} > '
                     f'{symmetric_tolerance:g}.')
  return d_MxM
