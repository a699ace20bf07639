"""Tests of ensembles.training.experiment: ``train_and_record`` end to end (the store round
trip, float16 storage and a rerun, another sweep in the workdir, a learning rate of zero, store
errors)."""

import json
import os
import re
import shutil

import numpy as np
import pytest

import ensembles
from ensembles import store
from ensembles.training import data as data_lib
from ensembles.training import sweep as sweep_lib


def test_store_round_trip(small_config, data_dir, tmp_path, make_members):
  config = small_config(epochs=2, arch=('mlp', 'cnn'), seed=(0, 1))
  summary = ensembles.train_and_record(config, str(tmp_path))
  assert summary.num_members == 4 and len(summary.cohorts) == 2
  traj = ensembles.load_trajectories(str(tmp_path))
  members = sweep_lib.expand_members(config)
  assert traj.members == [m.to_dict() for m in members]
  np.testing.assert_allclose(traj.epochs, [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2])
  dataset = data_lib.load_dataset('digits', data_dir=data_dir)
  spe = dataset.info.num_train // 64
  np.testing.assert_array_equal(traj.steps[0], np.round(traj.epochs * spe))
  assert traj.status == ['ok'] * 4
  for split, size in (('train', 200), ('test', 100)):
    probs = traj.probs(split)
    assert probs.shape == (4, 9, size, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    labels = traj.labels(split)
    y = dataset.y_train if split == 'train' else dataset.y_test
    np.testing.assert_array_equal(labels, np.asarray(y)[traj.probe_indices(split)])
    # Stored accuracy agrees with the stored probabilities (computed independently here).
    accuracy = (probs.argmax(-1) == labels).mean(-1)
    np.testing.assert_allclose(traj.metrics[f'{split}_accuracy'], accuracy, atol=1e-6)
    loss = -np.log(np.take_along_axis(probs, labels[None, None, :, None], -1)[..., 0]).mean(-1)
    np.testing.assert_allclose(traj.metrics[f'{split}_loss'], loss, rtol=1e-4)
  # Training helped: final train accuracy well above chance (0.1).
  assert traj.metrics['train_accuracy'][:, -1].min() > 0.5


def test_float16_storage_and_rerun_resumes_without_training(small_config, tmp_path):
  config = small_config(epochs=1)
  config.record.dtype = 'float16'
  ensembles.train_and_record(config, str(tmp_path))
  again = ensembles.train_and_record(config, str(tmp_path))
  assert again.cohorts[0].resumed_from_step == again.cohorts[0].steps
  probs = ensembles.load_trajectories(str(tmp_path)).probs('train')
  assert probs.dtype == np.float32
  # float16 keeps ~3 decimal digits: rows sum to 1 within a few 1e-3.
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=5e-3)


def test_workdir_with_another_sweep_is_refused(small_config, tmp_path):
  ensembles.train_and_record(small_config(seed=(0,)), str(tmp_path))
  with pytest.raises(ensembles.ConfigError, match='holds a different sweep'):
    ensembles.train_and_record(small_config(seed=(0, 1)), str(tmp_path))
  summary = ensembles.train_and_record(small_config(seed=(0, 1)), str(tmp_path),
                                       overwrite=True)
  assert summary.num_members == 2


def test_learning_rate_zero_member_keeps_its_initial_predictions(small_config, tmp_path):
  # No BatchNorm: its running statistics move even at learning rate 0.
  config = small_config(epochs=2, learning_rate=(0.0, 0.1), seed=(0, 1))
  config.hparams.norm = False
  ensembles.train_and_record(config, str(tmp_path))
  traj = ensembles.load_trajectories(str(tmp_path))
  probs = traj.probs('train')
  lrs = [m['learning_rate'] for m in traj.members]
  for e, lr in enumerate(lrs):
    change = np.abs(probs[e, -1] - probs[e, 0]).max()
    if lr == 0:
      assert change == 0.0, f'member {e} with learning rate 0 moved by {change}'
    else:
      assert change > 0.05, f'member {e} with learning rate {lr} barely moved ({change})'


def test_non_store_and_other_format_version_give_clear_errors(small_config, tmp_path):
  with pytest.raises(ensembles.StoreError, match='is not a trajectories store'):
    ensembles.load_trajectories(str(tmp_path))
  ensembles.train_and_record(small_config(), str(tmp_path))
  path = os.path.join(tmp_path, 'sweep.json')
  manifest = json.load(open(path))
  manifest['format_version'] = 99
  json.dump(manifest, open(path, 'w'))
  with pytest.raises(ensembles.StoreError, match='format version 99'):
    ensembles.load_trajectories(str(tmp_path))


def _seconds(text: str) -> int:
  """'42 s', '3 min 05 s', '2 h 07 min' (``loop.format_seconds``) in seconds."""
  units = dict(h=3600, min=60, s=1)
  words = text.split()
  return sum(int(n) * units[u] for n, u in zip(words[::2], words[1::2]))


def test_a_cohort_has_one_number_everywhere_and_a_rerun_says_done_earlier(small_config,
                                                                           tmp_path, capsys):
  """Cohort 1 is 'cohort 1' in the progress lines, the table, the store (cohorts/001) and a
  store error; progress gives the whole run's ETA; a rerun's finished cohorts say 'done
  earlier', not zero rates."""
  config = small_config(epochs=1, batch_size=(64, 32))  # Two cohorts, batch 32 the second.
  config.train.log_every_seconds = 0.0
  workdir = str(tmp_path)
  summary = ensembles.train_and_record(config, workdir)
  name = summary.cohorts[1].description
  assert 'bs=32' in name and summary.cohorts[1].index == 1
  manifest = json.load(open(os.path.join(workdir, 'sweep.json')))
  assert manifest['cohorts'][1]['description'] == name
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith('2 members in 2 cohorts (0 to 1), 5 recording times')
  progress = [line for line in lines[1:] if line.startswith('cohort ')]
  assert {line.split(':')[0] for line in progress} == {
      f'cohort 0 ({summary.cohorts[0].description})', f'cohort 1 ({name})'}
  etas = [line.rsplit(', ETA ', 1)[1].split('; run ETA ') for line in progress if 'ETA' in line]
  assert len(etas) > 2 and all(_seconds(run) >= _seconds(cohort) for cohort, run in etas), etas
  (row,) = [row for row in summary.table().splitlines() if name in row]
  assert row.startswith(f'  1 {name}')
  again = ensembles.train_and_record(config, workdir)
  out = capsys.readouterr().out
  assert f'cohort 1 ({name}): done earlier' in out
  assert all(c.done_earlier for c in again.cohorts)
  (row,) = [row for row in again.table().splitlines() if name in row]
  assert row.split()[2:5] == ['1', 'done', 'earlier'], row  # members, then no wall time or rate
  records = os.path.join(store.cohort_dir(workdir, 1), 'records')
  for t in (0, 4):  # Its first record and its last: unfinished, and a record lost for good.
    shutil.rmtree(os.path.join(records, str(t)))
  with pytest.raises(ensembles.StoreError, match=re.escape(f'cohort 1 ({name}): recording')):
    ensembles.train_and_record(config, workdir)
