"""Tests of ensembles.store.reader and format: opening stores, old and damaged ones included."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ensembles import store

HERE = os.path.dirname(os.path.abspath(__file__))
# A store written by the version before the package split (commit a25b74d): 2 digits mlps of
# width 8, 1 epoch at batch 256, 3 recordings, probes of 20 train / 10 test examples, its state
# directory removed to keep it small. expected.npz holds what that version's
# load_trajectories returned for it (probs, steps, train accuracy, labels).
STORE_V1 = os.path.join(os.path.dirname(HERE), 'data', 'store_v1')


@pytest.fixture
def store_v1(tmp_path):
  path = str(tmp_path / 'store')
  shutil.copytree(os.path.join(STORE_V1, 'store'), path)
  return path


def test_a_store_written_by_the_previous_version_loads_the_same(store_v1):
  expected = np.load(os.path.join(STORE_V1, 'expected.npz'))
  traj = store.load_trajectories(store_v1)
  assert traj.probs('train').shape == (2, 3, 20, 10)
  np.testing.assert_array_equal(traj.probs('train'), expected['train_probs'])
  np.testing.assert_array_equal(traj.probs('test'), expected['test_probs'])
  np.testing.assert_array_equal(traj.steps, expected['steps'])
  np.testing.assert_array_equal(traj.metrics['train_accuracy'], expected['train_accuracy'])
  np.testing.assert_array_equal(traj.labels('train'), expected['labels'])
  assert traj.status == [store.STATUS_OK] * 2 and traj.num_classes == 10
  np.testing.assert_allclose(traj.probs('train').sum(-1), 1.0, atol=1e-5)


def test_a_store_opens_where_the_trainer_cannot_be_imported(store_v1):
  # tensorflow_datasets, flax and optax made unimportable: reading needs none of them.
  code = ('import sys\n'
          "for m in ('tensorflow_datasets', 'flax', 'optax'): sys.modules[m] = None\n"
          'from ensembles import store\n'
          f'print(store.load_trajectories({store_v1!r}).probs().shape)\n')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split()[-4:] == ['(2,', '3,', '20,', '10)']


def test_not_a_store_and_another_version_are_store_errors(store_v1, tmp_path):
  with pytest.raises(store.StoreError, match='is not a trajectories store'):
    store.load_trajectories(str(tmp_path / 'nothing'))
  path = os.path.join(store_v1, store.SWEEP_FILE)
  with open(path) as f:
    manifest = json.load(f)
  manifest['format_version'] = 99
  with open(path, 'w') as f:
    json.dump(manifest, f)
  with pytest.raises(store.StoreError, match='format version 99'):
    store.load_trajectories(store_v1)
  with open(path, 'w') as f:
    f.write('{"members": [')
  with pytest.raises(store.StoreError, match='cannot be read as JSON'):
    store.read_manifest(store_v1)


def test_a_missing_record_names_itself_and_allow_partial_skips_it(store_v1):
  shutil.rmtree(os.path.join(store.cohort_dir(store_v1, 0), 'records', '1'))
  with pytest.raises(store.StoreError, match=r'recording step 1 is missing.*allow_partial=True'):
    store.load_trajectories(store_v1)
  with pytest.warns(UserWarning, match='skipped'):
    traj = store.load_trajectories(store_v1, allow_partial=True)
  assert traj.missing == [(0, 1)]
  assert np.isnan(traj.probs()[:, 1]).all() and np.isfinite(traj.probs()[:, [0, 2]]).all()
  assert (traj.steps[:, 1] == -1).all()


def test_unknown_split_is_an_error(store_v1):
  with pytest.raises(ValueError, match="split 'val'"):
    store.load_trajectories(store_v1).probs('val')


def test_manifest_is_written_atomically_with_the_format_version(tmp_path):
  store.write_manifest(str(tmp_path), dict(members=[]))
  assert os.listdir(tmp_path) == [store.SWEEP_FILE]  # No temporary file left behind.
  assert store.read_manifest(str(tmp_path)) == dict(members=[],
                                                    format_version=store.FORMAT_VERSION)


def test_a_store_opens_with_its_metadata_and_reads_points_on_demand(store_v1):
  traj = store.load_trajectories(store_v1)
  assert traj._probs == {}  # Opening read no probabilities.  # pylint: disable=protected-access
  expected = np.load(os.path.join(STORE_V1, 'expected.npz'))['train_probs']
  members, times = np.array([1, 0, 1, 0]), np.array([2, 2, 0, 1])
  np.testing.assert_array_equal(traj.read_points('train', members, times),
                                expected[members, times])
  with pytest.raises(ValueError, match=r'inside \(2, 3\)'):
    traj.read_points('train', [2], [0])


def test_the_block_plan_covers_every_point_once_in_even_blocks():
  cohorts = {0: np.arange(5), 3: np.arange(5, 7)}
  plan = store.block_plan(cohorts, num_times=7, max_points=6)
  points = [(e, t) for spec in plan for e in spec.members for t in spec.times]
  assert sorted(points) == [(e, t) for e in range(7) for t in range(7)]
  assert all(len(s.members) * len(s.times) <= 6 for s in plan)
  assert all(set(s.members) <= set(cohorts[s.cohort]) for s in plan)
  # Cohort 3 (2 members): times in groups of 3, 2, 2 rather than 3, 3, 1.
  assert [len(s.times) for s in plan if s.cohort == 3] == [3, 2, 2]
  with pytest.raises(ValueError, match='max_points=0'):
    store.block_plan(cohorts, 7, 0)


def test_a_block_of_a_partial_store_holds_its_recorded_points(store_v1):
  shutil.rmtree(os.path.join(store.cohort_dir(store_v1, 0), 'records', '1'))
  with pytest.warns(UserWarning, match='recording step 1 is missing'):
    traj = store.load_trajectories(store_v1, allow_partial=True)
  np.testing.assert_array_equal(traj.recorded, [[True, False, True]] * 2)
  (spec,) = traj.block_plan(100)
  block = traj.read_block('test', spec)
  np.testing.assert_array_equal(block.members, [0, 0, 1, 1])
  np.testing.assert_array_equal(block.times, [0, 2, 0, 2])
  np.testing.assert_array_equal(block.probs, traj.probs('test')[[0, 0, 1, 1], [0, 2, 0, 2]])
  with pytest.raises(ValueError, match=r'point \(member 0, time 1\) is not recorded'):
    traj.read_points('train', [0], [1])
