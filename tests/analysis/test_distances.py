"""Bhattacharyya distances against a float64 NumPy reference, closed forms and bad inputs.

Several devices need a fresh process (``XLA_FLAGS`` is read when JAX starts), so the
multi-device runs happen in subprocesses that save their matrices for this process to compare.
"""

import math
import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from ensembles import analysis
from ensembles.analysis import distances


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


def reference_paired(p, q):
  """Float64 d_B(p[i], q[i]) from the definition: renormalise each row in float64, then
  -mean_n log clip(sum_c sqrt(p q), 1e-6, 1), on float64 copies of the given inputs."""
  p = np.asarray(p, np.float64)
  q = np.asarray(q, np.float64)
  p = p / p.sum(-1, keepdims=True)
  q = q / q.sum(-1, keepdims=True)
  return -np.mean(np.log(np.clip(np.sqrt(p * q).sum(-1), 1e-6, 1.0)), axis=-1)


def nearby(shape, num_classes, scale, seed, dtype=np.float32):
  """Dirichlet p and q = p exp(scale * noise), renormalised in float32: d_B ~ scale**2 / 10."""
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.ones(num_classes), size=shape).astype(np.float32)
  q = p * np.exp(scale * rng.standard_normal(p.shape)).astype(np.float32)
  q /= q.sum(-1, keepdims=True)
  return p.astype(dtype), q.astype(dtype)


# Agreement asked of the paired distances with float64 of the same inputs, for d_B >= 1e-7.
# Measured: <= 1.8e-7 for every case below (float32 and float16 inputs).
_PAIRED_RTOL = 1e-6


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
@pytest.mark.parametrize('scale, smallest, largest', [
    (1e-3, 5e-8, 2e-7), (1e-2, 5e-6, 2e-5), (1e-1, 5e-4, 2e-3), (1.0, 4e-2, 1.5e-1),
    (5.0, 3e-1, 1.5)])
def test_paired_small_and_large_distances_match_float64(dtype, scale, smallest, largest):
  # The old float32 form, -log of sum sqrt(p) sqrt(q), was 1.4e-1 relative off at d_B ~ 1e-7.
  p, q = nearby((64, 1797), 10, scale, seed=20, dtype=dtype)
  expected = reference_paired(p, q)
  assert smallest < expected.min() and expected.max() < largest  # The decade meant.
  got = analysis.bhattacharyya_paired(p, q)
  assert got.dtype == np.float32 and got.shape == (64,)
  checked = expected >= 1e-7
  assert checked.mean() > 0.3
  np.testing.assert_allclose(got[checked], expected[checked], rtol=_PAIRED_RTOL, atol=0)


@pytest.mark.parametrize('alpha', [1.0, 0.05])
def test_paired_independent_predictions_match_float64(alpha):
  # Unrelated points: coefficients from ~1 down to the clip (alpha = 0.05: confident, often
  # disagreeing predictions), so both forms of -log BC_n and the clip are used.
  p, q = dirichlet((200, 300), 10, seed=21, alpha=alpha), dirichlet((200, 300), 10, seed=22,
                                                                      alpha=alpha)
  np.testing.assert_allclose(analysis.bhattacharyya_paired(p, q), reference_paired(p, q),
                             rtol=_PAIRED_RTOL, atol=0)


def test_paired_distance_of_equal_rows_is_zero_and_disjoint_rows_are_clipped():
  p = dirichlet((5, 40), 10, seed=23)
  np.testing.assert_array_equal(analysis.bhattacharyya_paired(p, p), 0.0)
  one_hot = np.eye(4, dtype=np.float32)[None]
  d = analysis.bhattacharyya_paired(one_hot, np.roll(one_hot, 1, axis=-1))
  assert d[0] == pytest.approx(-math.log(analysis.BC_CLIP), rel=1e-6)


def test_pairs_match_float64_and_compile_once_per_batch_size():
  p, q = nearby((12, 500), 10, 3e-3, seed=24)
  points = np.concatenate([p, q])  # p[i] and q[i] are close; p[i] and p[j] are not.
  rows = np.array([0, 1, 2, 11, 0, 5, 3, 3])
  cols = np.array([12, 13, 14, 23, 1, 9, 3, 20])
  expected = reference_paired(points[rows], points[cols])
  got = distances.bhattacharyya_pairs(points, rows, cols, max_pairs=20)
  assert got.dtype == np.float32 and got.shape == (8,)
  nonzero = rows != cols
  np.testing.assert_allclose(got[nonzero], expected[nonzero], rtol=_PAIRED_RTOL, atol=0)
  assert got[~nonzero] == 0.0
  before = dict(distances.TRACE_COUNTS)
  for count in (1, 5, 7):  # Fewer pairs than max_pairs: the same batch shape.
    distances.bhattacharyya_pairs(points, rows[:count], cols[:count], max_pairs=20)
  assert dict(distances.TRACE_COUNTS) == before
  assert len(distances.bhattacharyya_pairs(points, rows[:0], cols[:0])) == 0


def test_pairs_bad_indices_raise_value_error():
  p = dirichlet((3, 5), 4, seed=25)
  with pytest.raises(ValueError, match=r'pair 1 is \(0, 3\).*in \[0, 3\)'):
    distances.bhattacharyya_pairs(p, [1, 0], [2, 3])
  with pytest.raises(ValueError, match=r'expected two \(K,\) integer arrays'):
    distances.bhattacharyya_pairs(p, [0, 1], [1])
  with pytest.raises(ValueError, match=r'expected two \(K,\) integer arrays'):
    distances.bhattacharyya_pairs(p, [0.0], [1.0])


def test_same_shapes_do_not_retrace():
  p = dirichlet((10, 30), 4, seed=10)
  analysis.bhattacharyya(p).block_until_ready()
  analysis.bhattacharyya(p, p[:3]).block_until_ready()
  analysis.bhattacharyya_paired(p, p[::-1])
  before = dict(distances.TRACE_COUNTS)
  for seed in range(3):
    other = dirichlet((10, 30), 4, seed=11 + seed)
    analysis.bhattacharyya(other).block_until_ready()
    analysis.bhattacharyya(other, other[:3]).block_until_ready()
    analysis.bhattacharyya_paired(other, p)
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


# Several devices and processes.

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Points that no device count divides: symmetric (m, None) and rectangular (m, m') inputs.
_CASES = {'sym23': (23, None), 'sym6': (6, None), 'rect17x9': (17, 9), 'rect3x30': (3, 30)}
_SAMPLES, _CLASSES = 41, 7
# Tiles of 8 points and chunks of a few samples (as the small_tiles fixture), so these inputs
# have several tiles per device and several chunks.
_MAX_BLOCK = 8
_CHUNK_BYTES = 4 * 16 * 6 * 10

# One device against several: the tiles have another shape (the grid is refined for balance),
# and nothing else changes: chunks hold the same samples for any tiling, and each entry sums
# its per-sample logs in the same order. Only XLA's (B x C) @ (C x B') matmul may round a
# coefficient's C-term dot product differently in another tile shape (a few float32 ulps,
# ~1e-7 relative); the log turns that into ~1e-7 absolute per sample and the mean over samples
# does not grow it. Measured: <= 6e-8 for these inputs, 9e-8 at m = 2,000 on 4 devices.
_DEVICES_ATOL = 1e-6

_WORKER = r'''
import sys
import jax
import numpy as np
from ensembles.analysis import distances

inputs_path, out_path, max_block, chunk_bytes = sys.argv[1:5]
counts = {1}  # Devices of the reference run; several processes have no device in common.
if len(sys.argv) > 5:  # coordinator address, number of processes, process id
  jax.distributed.initialize(sys.argv[5], int(sys.argv[6]), int(sys.argv[7]))
  counts = set()
distances.MAX_BLOCK, distances.CHUNK_BYTES = int(max_block), int(chunk_bytes)
inputs = np.load(inputs_path)
out = {'num_devices': np.array(len(jax.devices()))}
for name in [k[:-2] for k in inputs.files if k.endswith('_p')]:
  q = inputs[name + '_q'] if name + '_q' in inputs.files else None
  for count in sorted(counts | {len(jax.devices())}):
    d = distances.bhattacharyya(inputs[name + '_p'], q, devices=jax.devices()[:count])
    assert d.is_fully_replicated, d.sharding
    out[f'{name}_{count}'] = np.asarray(d)
np.savez(out_path, **out)
'''


def _inputs(tmp_path):
  arrays, expected = {}, {}
  for seed, (name, (m, m_cols)) in enumerate(_CASES.items()):
    p = dirichlet((m, _SAMPLES), _CLASSES, seed=seed)
    arrays[name + '_p'] = p
    q = p if m_cols is None else dirichlet((m_cols, _SAMPLES), _CLASSES, seed=seed + 100)
    if m_cols is not None:
      arrays[name + '_q'] = q
    expected[name] = reference_bhattacharyya(p, q)
  path = tmp_path / 'inputs.npz'
  np.savez(path, **arrays)
  return str(path), expected


def _worker(tmp_path, inputs, out, device_count, distributed=()):
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={device_count}')
  command = [sys.executable, '-c', _WORKER, inputs, str(tmp_path / out), str(_MAX_BLOCK),
             str(_CHUNK_BYTES), *distributed]
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _results(process, path):
  _, err = process.communicate(timeout=300)
  assert process.returncode == 0, err[-3000:]
  return np.load(path)


def test_four_devices_give_the_matrix_of_one(tmp_path):
  inputs, expected = _inputs(tmp_path)
  got = _results(_worker(tmp_path, inputs, 'four.npz', 4), tmp_path / 'four.npz')
  assert int(got['num_devices']) == 4
  for name, (m, m_cols) in _CASES.items():
    one, four = got[f'{name}_1'], got[f'{name}_4']
    assert four.dtype == np.float32 and four.shape == (m, m_cols or m)
    np.testing.assert_allclose(four, one, rtol=0, atol=_DEVICES_ATOL, err_msg=name)
    np.testing.assert_allclose(four, expected[name], atol=1e-5, rtol=1e-5, err_msg=name)
    if m_cols is None:
      np.testing.assert_array_equal(four, four.T)
      assert np.abs(np.diag(four)).max() <= 1e-6


@pytest.mark.slow
def test_two_processes_each_get_the_whole_matrix(tmp_path):
  inputs, expected = _inputs(tmp_path)
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    address = f'127.0.0.1:{s.getsockname()[1]}'
  workers = [_worker(tmp_path, inputs, f'process{i}.npz', 2, (address, '2', str(i)))
             for i in range(2)]
  got = [_results(w, tmp_path / f'process{i}.npz') for i, w in enumerate(workers)]
  one = _results(_worker(tmp_path, inputs, 'one.npz', 1), tmp_path / 'one.npz')
  assert int(got[0]['num_devices']) == 4  # 2 processes x 2 devices.
  for name in _CASES:
    # Both processes hold the same gathered matrix, the one a single device computes.
    np.testing.assert_array_equal(got[0][f'{name}_4'], got[1][f'{name}_4'])
    np.testing.assert_allclose(got[0][f'{name}_4'], one[f'{name}_1'], rtol=0,
                               atol=_DEVICES_ATOL, err_msg=name)
    np.testing.assert_allclose(got[0][f'{name}_4'], expected[name], atol=1e-5, rtol=1e-5,
                               err_msg=name)


@pytest.mark.parametrize('m, m_cols, symmetric', [
    (2000, 2000, True), (23, 23, True), (300, 300, True), (4000, 4000, True),
    (17, 9, False), (2, 2000, False), (1000, 3000, False), (3000, 700, False)])
@pytest.mark.parametrize('num_devices', [1, 2, 3, 4, 8])
def test_tile_plan_covers_each_block_once_and_balances(m, m_cols, symmetric, num_devices):
  plan = distances.plan_tiles(m, m_cols, symmetric, num_devices)
  rows, cols = plan.grid
  block_rows, block_cols = plan.blocks
  # The grid covers the output, with no block entirely padding.
  assert (rows - 1) * block_rows < m <= rows * block_rows
  assert (cols - 1) * block_cols < m_cols <= cols * block_cols
  # Each block is read from a slot that computed it (or its mirror, below the diagonal).
  slot_tiles_Sx2 = plan.slot_tiles().reshape(-1, 2)
  slot_RxC = plan.slot_grid()
  for i in range(rows):
    for j in range(cols):
      expected = (min(i, j), max(i, j)) if symmetric else (i, j)
      assert tuple(slot_tiles_Sx2[slot_RxC[i, j]]) == expected, (i, j)
  used = np.unique(slot_RxC)
  assert len(used) == (rows * (rows + 1) // 2 if symmetric else rows * cols)
  per_device = np.bincount(used // plan.tiles_per_device, minlength=num_devices)
  assert per_device.max() - per_device.min() <= 1, per_device
  assert per_device.max() == plan.tiles_per_device
  if num_devices == 1:  # One device: the fewest tiles of side <= MAX_BLOCK, as before.
    assert (rows, cols) == (-(-m // distances.MAX_BLOCK), -(-m_cols // distances.MAX_BLOCK))
  elif max(m, m_cols) >= 2000:  # Enough points for small enough tiles: balanced.
    assert plan.balance >= distances.MIN_BALANCE


def test_no_devices_raise_value_error():
  with pytest.raises(ValueError, match=r'devices=\[\]'):
    distances.bhattacharyya(dirichlet((3, 5), 4, seed=0), devices=[])


def test_distances_to_fixed_points_are_the_gram_and_compile_once(d_b_numpy):
  rng = np.random.default_rng(7)
  q = rng.dirichlet(np.ones(5), (9, 30)).astype(np.float32)
  p = rng.dirichlet(np.ones(5), (11, 30)).astype(np.float32)
  to_q = distances.DistancesTo(q, block=8)
  first = np.asarray(to_q(p[:8]))
  np.testing.assert_array_equal(first, np.asarray(distances.bhattacharyya(p[:8], q)))
  np.testing.assert_allclose(first[2, 3], d_b_numpy(p[2], q[3]), rtol=1e-5)
  before = dict(distances.TRACE_COUNTS)
  last = np.asarray(to_q(p[8:]))  # a smaller, last block: padded, nothing new compiled
  assert dict(distances.TRACE_COUNTS) == before and last.shape == (3, 9)
  np.testing.assert_allclose(last, np.asarray(distances.bhattacharyya(p[8:], q)), atol=1e-7)
  with pytest.raises(ValueError, match=r'p has shape \(9, 30, 5\): expected at most 8 points'):
    to_q(p[:9])
  with pytest.raises(ValueError, match=r'expected at most 8 points on \(N, C\) = \(30, 5\)'):
    to_q(p[:2, :20])
