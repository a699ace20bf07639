"""Tests of ensembles.training.workdir: the lock, the manifest check, the resume check."""

import errno
import os

import numpy as np
import pytest

from ensembles import store
from ensembles.training import workdir as workdir_lib
from ensembles.training.sweep import ConfigError

MANIFEST = dict(members=[dict(seed=0)], epochs=[0.0, 1.0], probes=dict(train_labels=[1]),
                record=dict(dtype='float32'), cohorts=[])


def test_hold_locks_the_directory_and_refuses_a_second_holder(tmp_path, is_locked):
  path = str(tmp_path / 'run')
  with workdir_lib.hold(path):
    assert os.path.isdir(path) and os.listdir(path) == []  # No lock file is added.
    assert is_locked(path)
    with pytest.raises(ConfigError, match='in use by another training run'):
      with workdir_lib.hold(path):
        pass
  assert not is_locked(path)


def test_hold_without_working_locks_warns(tmp_path, monkeypatch):
  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, 'No locks available')

  monkeypatch.setattr(workdir_lib.fcntl, 'flock', no_locks)
  with pytest.warns(UserWarning, match='no working locks'):
    with workdir_lib.hold(str(tmp_path / 'run')):
      pass


def test_hold_an_unwritable_place_is_a_config_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(ConfigError, match='cannot be written'):
    with workdir_lib.hold(str(blocker / 'run')):
      pass


def test_prepare_writes_the_manifest_once_and_refuses_another_sweep(tmp_path):
  path = str(tmp_path)
  workdir_lib.prepare(path, MANIFEST, overwrite=False)
  assert store.read_manifest(path)['members'] == MANIFEST['members']
  workdir_lib.prepare(path, MANIFEST, overwrite=False)  # The same sweep: resumes.
  other = dict(MANIFEST, members=[dict(seed=1)])
  with pytest.raises(ConfigError, match='holds a different sweep'):
    workdir_lib.prepare(path, other, overwrite=False)
  (tmp_path / 'cohorts').mkdir()
  workdir_lib.prepare(path, other, overwrite=True)
  assert store.read_manifest(path)['members'] == [dict(seed=1)]
  assert os.listdir(path) == [store.SWEEP_FILE]  # Emptied first.


def test_prepare_refuses_a_non_empty_directory_without_a_manifest(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(ConfigError, match='holds no sweep.json'):
    workdir_lib.prepare(str(tmp_path), MANIFEST, overwrite=False)
  assert (tmp_path / 'notes.txt').read_text() == 'mine'  # Never lose a user's work.


def test_resume_index_is_the_first_recording_after_the_state():
  steps = np.array([0, 10, 20, 40])
  assert workdir_lib.resume_index(steps, 20, {0, 1, 2}, 'cohort 1', '/r') == 3
  assert workdir_lib.resume_index(steps, 25, {0, 1, 2}, 'cohort 1', '/r') == 3
  assert workdir_lib.resume_index(steps, 0, {0}, 'cohort 1', '/r') == 1


def test_resume_index_refuses_records_removed_behind_the_state():
  with pytest.raises(store.StoreError, match=r'cohort 2: recording steps \[1\] are missing from '
                                             r'/r.*--overwrite.*allow_partial'):
    workdir_lib.resume_index(np.array([0, 10, 20, 40]), 20, {0, 2}, 'cohort 2', '/r')
