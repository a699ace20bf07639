"""Tests of ensembles.analysis.mapping: landmark InPCA of every point of a sweep, streamed."""

import fcntl
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ensembles import store
from ensembles.analysis import distances, embedding, landmarks, mapping

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STORE_V1 = os.path.join(ROOT, 'tests', 'data', 'store_v1', 'store')


def _aligned(coords, reference):
  """coords with each axis' sign flipped to agree with reference (eigenvector signs are free)."""
  return coords * np.where(np.nansum(coords * reference, axis=0) < 0, -1.0, 1.0)


def _landmark_mds_float64(points_PxNxC, landmarks_L, k):
  """Landmark InPCA in float64 NumPy, from the definitions (de Silva and Tenenbaum 2004)."""
  sp = np.sqrt(points_PxNxC.astype(np.float64))
  sp /= np.sqrt((sp**2).sum(-1, keepdims=True))
  bc = np.einsum('pnc,lnc->pln', sp, sp[landmarks_L])
  d_PxL = -np.log(np.clip(bc, distances.BC_CLIP, 1.0)).mean(-1)
  d_LxL = d_PxL[landmarks_L]
  num = len(landmarks_L)
  center = np.eye(num) - 1.0 / num
  lam, u = np.linalg.eigh(-0.5 * center @ d_LxL @ center)
  order = np.argsort(-np.abs(lam))[:k]
  lam, u = lam[order], u[:, order]
  w_PxL = -0.5 * (d_PxL - d_PxL.mean(1, keepdims=True) - d_LxL.mean(0) + d_LxL.mean())
  return w_PxL @ u / (np.sign(lam) * np.sqrt(np.abs(lam))), lam


@pytest.mark.parametrize('full_up_to', [500, 10])  # the fit's full and top-k eigensolvers
def test_landmarks_agree_with_a_float64_landmark_mds(fake_store, monkeypatch, full_up_to):
  monkeypatch.setattr(landmarks, 'FIT_FULL_EIGH_MAX_POINTS', full_up_to)
  traj = fake_store(num_times=10)  # 8 members x 10 times
  emb = mapping.embed_trajectories(traj, k=3, landmarks=25)
  points = traj.probs().reshape(-1, *traj.probs().shape[2:])
  expected, lam = _landmark_mds_float64(points, emb.landmarks, 3)
  np.testing.assert_allclose(emb.eigenvalues, lam, rtol=1e-4)
  spread = expected.std(axis=0)
  np.testing.assert_array_less(np.abs(_aligned(emb.coords, expected) - expected).max(0),
                               1e-4 * spread)
  assert emb.coords.shape == (80, 3) and emb.placed.all() and len(emb.landmarks) == 25


def test_every_point_a_landmark_is_the_full_inpca(fake_store):
  traj = fake_store(num_times=6)
  points = traj.probs().reshape(-1, *traj.probs().shape[2:])
  full = embedding.inpca(np.asarray(distances.bhattacharyya(points)), k=4)
  emb = mapping.embed_trajectories(traj, k=4)  # 48 points: under the threshold, all landmarks
  assert len(emb.landmarks) == 48
  np.testing.assert_allclose(emb.eigenvalues, full.eigenvalues, rtol=1e-9)
  np.testing.assert_allclose(emb.explained_stress, full.explained_stress, rtol=1e-9)
  np.testing.assert_allclose(_aligned(emb.coords, full.coords), full.coords,
                             atol=1e-5 * full.coords.std())


def test_diverged_members_are_left_out_and_counted(fake_store):
  traj = fake_store(diverged=2)
  emb = mapping.embed_trajectories(traj, k=2, landmarks=30)
  grid = emb.placed.reshape(8, 8)
  assert not grid[2].any() and grid[[0, 1, 3, 4, 5, 6, 7]].all()
  assert np.isnan(emb.coords.reshape(8, 8, 2)[2]).all()
  assert emb.left_out == {mapping.DIVERGED: 8, mapping.NOT_RECORDED: 0}
  assert 'Left out 8 points: member diverged.' in emb.lines()


def _write_blocks_of(monkeypatch, points):
  monkeypatch.setattr(mapping, 'MAX_BLOCK_POINTS', points)


def test_the_map_is_written_as_parquet_with_every_point_and_its_columns(fake_store, tmp_path,
                                                                         monkeypatch):
  _write_blocks_of(monkeypatch, 16)
  traj = fake_store(diverged=5)
  emb = mapping.embed_trajectories(traj, k=3, landmarks=20, outdir=str(tmp_path))
  table = pd.read_parquet(tmp_path / 'points').sort_values('point')
  assert len(table) == 64 and len(os.listdir(tmp_path / 'points')) == 4
  np.testing.assert_array_equal(table[['x1', 'x2', 'x3']].to_numpy(), emb.coords)
  np.testing.assert_array_equal(table.member, np.repeat(np.arange(8), 8))
  np.testing.assert_array_equal(table.epoch, np.tile(traj.epochs, 8))
  assert set(table.left_out[table.member == 5]) == {mapping.DIVERGED}
  assert set(table.left_out[table.member != 5]) == {''}
  assert table.landmark.sum() == 20 and (table.status[table.member == 5] == 'diverged').all()
  assert table.hp_learning_rate.dtype == np.float64 and set(table.hp_arch) == {'mlp', 'cnn'}
  progress = table.progress[table.member == 0].to_numpy()
  assert np.all(np.diff(progress) > -1e-3) and progress[-1] > 0.5  # walks toward the truth


def test_a_killed_map_resumes_at_the_first_unwritten_block_with_the_same_coordinates(
    fake_store, tmp_path, monkeypatch):
  _write_blocks_of(monkeypatch, 16)
  traj = fake_store()
  whole = mapping.embed_trajectories(traj, k=3, landmarks=20, outdir=str(tmp_path / 'whole'))

  class Killed(Exception):
    pass

  def kill_after_two(done, todo):
    if done >= 32:
      raise Killed
  with pytest.raises(Killed):
    mapping.embed_trajectories(traj, k=3, landmarks=20, outdir=str(tmp_path / 'resumed'),
                               on_block=kill_after_two)
  assert len(os.listdir(tmp_path / 'resumed' / 'points')) == 2
  written = []
  resumed = mapping.embed_trajectories(traj, k=3, landmarks=20, outdir=str(tmp_path / 'resumed'),
                                       on_block=lambda done, todo: written.append(done))
  assert written == [0, 16, 32]  # only the two blocks left
  np.testing.assert_array_equal(resumed.coords, whole.coords)


def test_a_map_made_with_other_settings_is_refused_unless_overwritten(fake_store, tmp_path):
  traj = fake_store()
  mapping.embed_trajectories(traj, k=3, landmarks=20, outdir=str(tmp_path))
  with pytest.raises(ValueError, match=r'holds a map made with other settings \(landmarks; e.g. '
                                       r'landmarks: 20 there, 30 now'):
    mapping.embed_trajectories(traj, k=3, landmarks=30, outdir=str(tmp_path))
  emb = mapping.embed_trajectories(traj, k=3, landmarks=30, outdir=str(tmp_path), overwrite=True)
  assert len(emb.landmarks) == 30


def test_a_map_of_another_probe_set_or_store_state_is_refused(fake_store, tmp_path):
  traj = fake_store()
  mapping.embed_trajectories(traj, k=2, landmarks=20, outdir=str(tmp_path))
  other = fake_store(rng_seed=1)  # other probe labels
  with pytest.raises(ValueError, match=r'other settings \(probes; e.g. probes: '):
    mapping.embed_trajectories(other, k=2, landmarks=20, outdir=str(tmp_path))
  traj.status[4] = 'diverged'
  with pytest.raises(ValueError, match=r'other settings \(store_state; .* "store_state" changes '
                                       'as training records more'):
    mapping.embed_trajectories(traj, k=2, landmarks=20, outdir=str(tmp_path))


def test_a_second_analysis_into_one_directory_is_refused(fake_store, tmp_path):
  held = os.open(tmp_path, os.O_RDONLY)
  fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
  try:
    with pytest.raises(ValueError, match='is in use by another analysis'):
      mapping.embed_trajectories(fake_store(), k=2, landmarks=10, outdir=str(tmp_path))
  finally:
    os.close(held)
  assert not os.path.exists(tmp_path / 'points')


@pytest.mark.parametrize('kwargs, message', [
    (dict(landmarks=65), r'need 1 <= k <= landmarks <= 64'),
    (dict(k=5, landmarks=4), r'k=5 components on 4 landmarks'),
    (dict(k=0), r'need 1 <= k'),
])
def test_bad_landmark_counts_are_errors(fake_store, kwargs, message):
  with pytest.raises(ValueError, match=message):
    mapping.embed_trajectories(fake_store(), **kwargs)


def test_all_members_diverged_is_an_error(fake_store):
  traj = fake_store()
  traj.status = ['diverged'] * len(traj.status)
  with pytest.raises(ValueError, match='all 8 members diverged: nothing to map'):
    mapping.embed_trajectories(traj)


def test_a_store_still_being_written_maps_what_it_has(tmp_path):
  path = str(tmp_path / 'store')
  shutil.copytree(STORE_V1, path)
  shutil.rmtree(os.path.join(store.cohort_dir(path, 0), 'records', '2'))
  with pytest.warns(UserWarning, match='recording step 2 is missing'):
    traj = store.load_trajectories(path, allow_partial=True)
  emb = mapping.embed_trajectories(traj, k=2, outdir=str(tmp_path / 'map'))
  assert emb.left_out == {mapping.DIVERGED: 0, mapping.NOT_RECORDED: 2}
  np.testing.assert_array_equal(emb.placed, [True, True, False, True, True, False])
  full = store.load_trajectories(STORE_V1).probs()[:, :2].reshape(4, 20, 10)
  expected = embedding.inpca(np.asarray(distances.bhattacharyya(full)), k=2).coords
  np.testing.assert_allclose(_aligned(emb.coords[emb.placed], expected), expected, atol=1e-6)
  table = pd.read_parquet(tmp_path / 'map' / 'points')
  assert (table.left_out == mapping.NOT_RECORDED).sum() == 2
  assert table.step[table.time == 0].tolist() == traj.steps[:, 0].tolist()


@pytest.mark.slow  # ~40 s idle: two JAX processes start and compile.
def test_two_processes_map_a_store_as_one_does(fake_store, stored, tmp_path):
  workdir = stored(fake_store(), str(tmp_path / 'store'))
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  command = [sys.executable, '-m', 'ensembles.launch.analyze', f'--workdir={workdir}',
             '--landmarks=20', '--max_points=30', f'--coordinator_address=127.0.0.1:{port}',
             '--num_processes=2']
  workers = [subprocess.Popen([*command, f'--process_id={i}'], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outputs = [w.communicate(timeout=600) for w in workers]
  assert all(w.returncode == 0 for w in workers), outputs[0][1][-3000:] + outputs[1][1][-3000:]
  outputs = [out for out, _ in outputs]
  assert 'ES_1=' in outputs[0] and 'Map:' not in outputs[1]  # process 0 prints
  # Each process placed its share of the blocks (this store has 3 cohorts: 3 blocks).
  assert len(os.listdir(os.path.join(workdir, 'analysis', 'map', 'points'))) == 3
  single = mapping.embed_trajectories(store.load_trajectories(workdir), k=10, landmarks=20)
  mapped = pd.read_parquet(os.path.join(workdir, 'analysis', 'map', 'points')).sort_values(
      'point')
  coords = mapped[[f'x{a + 1}' for a in range(10)]].to_numpy()
  signs = np.where(np.sum(coords[:, :3] * single.coords[:, :3], axis=0) < 0, -1, 1)
  np.testing.assert_allclose(coords[:, :3] * signs, single.coords[:, :3],
                             atol=1e-5 * single.coords[:, 0].std())
