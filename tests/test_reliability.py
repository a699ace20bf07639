"""Reliability: diverging members, damaged stores, and kill-anywhere resume (real processes)."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

import ensembles
from ensembles import store
from ensembles.training import loop
from ensembles.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_diverged_member_is_frozen_flagged_and_leaves_its_cohort_untouched(small_config, tmp_path):
  sane, wild = str(tmp_path / 'sane'), str(tmp_path / 'wild')
  ensembles.train_and_record(small_config(learning_rate=(0.05, 0.1), seed=(0, 1)), sane)
  ensembles.train_and_record(small_config(learning_rate=(0.05, 1e4), seed=(0, 1)), wild)
  a, b = ensembles.load_trajectories(sane), ensembles.load_trajectories(wild)
  assert a.status == ['ok'] * 4
  assert b.status == ['ok', 'ok', 'diverged', 'diverged']
  for e in (2, 3):
    step = b.diverged_at[e]
    assert step >= 0
    recorded_after = b.steps[e] > step
    # Predictions after divergence are marked invalid, not copied; before, they are real.
    assert np.isnan(b.probs()[e, recorded_after]).all()
    assert np.isfinite(b.probs()[e, ~recorded_after]).all()
  # The sane members are bit-identical to a cohort (same size) without the wild learning rate.
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split)[:2], b.probs(split)[:2])
  for k, v in a.metrics.items():
    np.testing.assert_array_equal(v[:2], b.metrics[k][:2])


def test_missing_or_torn_recording_step_is_a_clear_error(small_config, tmp_path):
  workdir = str(tmp_path)
  ensembles.train_and_record(small_config(), workdir)
  records = os.path.join(store.cohort_dir(workdir, 0), 'records')
  shutil.rmtree(os.path.join(records, '2'))
  # Training again cannot record it from the final state: an error saying so, store untouched.
  with pytest.raises(ensembles.StoreError,
                     match=r'recording steps \[2\] are missing .* at training step 22, past'):
    ensembles.train_and_record(small_config(), workdir)
  with pytest.raises(ensembles.StoreError, match=r'recording step 2 is missing: .*records/2/'):
    ensembles.load_trajectories(workdir)
  with pytest.warns(UserWarning, match='recording step 2 is missing'):
    traj = ensembles.load_trajectories(workdir, allow_partial=True)
  assert traj.missing == [(0, 2)]
  assert np.isnan(traj.probs()[:, 2]).all() and np.isfinite(traj.probs()[:, 3]).all()
  assert (traj.steps[:, 2] == -1).all()
  # Truncate every data file of step 3 by hand: an error naming step 3, never garbage.
  step3 = os.path.join(records, '3')
  for folder, _, files in os.walk(step3):
    for name in files:
      if name not in ('_CHECKPOINT_METADATA',):
        with open(os.path.join(folder, name), 'r+b') as f:
          f.truncate(max(os.path.getsize(f.name) // 3, 1))
  with pytest.warns(UserWarning) as caught:
    traj = ensembles.load_trajectories(workdir, allow_partial=True)
  assert [str(w.message).split(':')[1].strip() for w in caught] == [
      'recording step 2 is missing', 'recording step 3 cannot be read from ' + records + '/3/record']
  assert traj.missing == [(0, 2), (0, 3)]
  assert np.isnan(traj.probs()[:, 3]).all() and np.isfinite(traj.probs()[:, 4]).all()


def test_unwritable_workdir_fails_before_training(small_config, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  # A workdir below a regular file cannot be created, whoever runs the test (root included).
  with pytest.raises(ensembles.ConfigError, match='cannot be written'):
    ensembles.train_and_record(small_config(), str(blocker / 'run'))


# Another process holding a directory's lock the way a training run does, until killed.
_LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print('held', flush=True)
time.sleep(600)
"""


def test_a_workdir_in_use_is_refused_and_left_alone(small_config, tmp_path):
  workdir = str(tmp_path / 'run')
  ensembles.train_and_record(small_config(), workdir)
  finished = ensembles.load_trajectories(workdir).probs()
  holder = subprocess.Popen([sys.executable, '-c', _LOCK_HOLDER, workdir],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    for overwrite in (False, True):  # Not even --overwrite deletes a store in use.
      with pytest.raises(ensembles.ConfigError, match='in use by another training run'):
        ensembles.train_and_record(small_config(seed=(0, 1)), workdir, overwrite=overwrite)
    np.testing.assert_array_equal(ensembles.load_trajectories(workdir).probs(), finished)
  finally:
    holder.kill()
    holder.wait()
  # A killed holder's lock is gone with it: the same call now goes through.
  ensembles.train_and_record(small_config(seed=(0, 1)), workdir, overwrite=True)
  assert len(ensembles.load_trajectories(workdir).members) == 2


def test_training_holds_its_workdir_until_it_returns(small_config, tmp_path, monkeypatch,
                                                     is_locked):
  workdir = str(tmp_path / 'run')
  seen = []
  train_cohort = loop.train_cohort

  def checking(*args, **kwargs):
    seen.append(is_locked(workdir))
    return train_cohort(*args, **kwargs)

  monkeypatch.setattr(loop, 'train_cohort', checking)
  ensembles.train_and_record(small_config(arch=('mlp', 'cnn')), workdir)
  assert seen == [True, True]
  assert not is_locked(workdir)


def test_a_filesystem_without_locks_warns_and_trains(small_config, tmp_path, monkeypatch):
  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, 'No locks available')  # NFS without a lock daemon.

  monkeypatch.setattr(workdir_lib.fcntl, 'flock', no_locks)
  with pytest.warns(UserWarning, match='no working locks'):
    ensembles.train_and_record(small_config(), str(tmp_path / 'run'))
  assert ensembles.load_trajectories(str(tmp_path / 'run')).status == ['ok']


_RESUME_CONFIG = '''
from ensembles.configs import common as config_common

def get_config(arg=None):
  config = config_common.default_config()
  config.hparams.update(dict(width=32, depth=2, epochs=6, batch_size=32))
  config.sweep.seed = (0, 1, 2)
  config.variants = (dict(optimizer='sgd', learning_rate=0.05),
                     dict(optimizer='adam', learning_rate=0.003))
  config.record.dense_per_epoch = 8
  config.train.checkpoint_every_seconds = 0.0  # State at every recording time.
  return config
'''


def _command(config_path, workdir):
  return [sys.executable, '-m', 'ensembles.launch.train', f'--config={config_path}', f'--workdir={workdir}']


def _env(data_dir):
  return dict(os.environ, ENSEMBLES_DATA_DIR=data_dir, PYTHONPATH=ROOT)


def _state_arrays(workdir, cohort):
  directory = os.path.join(store.cohort_dir(workdir, cohort), 'state')
  last = max(int(d) for d in os.listdir(directory) if d.isdigit())
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(os.path.join(directory, str(last), 'state'))
  return [np.asarray(x) for x in __import__('jax').tree.leaves(restored)]


@pytest.mark.slow
def test_sigkill_anywhere_then_rerun_is_bit_identical(data_dir, tmp_path):
  config_path = tmp_path / 'resume_config.py'
  config_path.write_text(_RESUME_CONFIG)
  reference, killed = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  started = time.perf_counter()
  done = subprocess.run(_command(config_path, reference), cwd=ROOT, env=_env(data_dir),
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  duration = time.perf_counter() - started
  # Kill moments spread over a run: during start-up and compilation, mid-training, late
  # (recording writes happen throughout). Each kill is followed by the same command.
  kills = 0
  for fraction in (0.15, 0.45, 0.6, 0.8):
    process = subprocess.Popen(_command(config_path, killed), cwd=ROOT, env=_env(data_dir),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(fraction * duration)
    if process.poll() is None:
      process.send_signal(signal.SIGKILL)
      kills += 1
    process.wait()
  assert kills >= 2, 'the run finished before it could be killed: make it longer'
  done = subprocess.run(_command(config_path, killed), cwd=ROOT, env=_env(data_dir),
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(killed)
  np.testing.assert_array_equal(a.steps, b.steps)
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split), b.probs(split))
  for k in a.metrics:
    np.testing.assert_array_equal(a.metrics[k], b.metrics[k])
  for cohort in (0, 1):
    for x, y in zip(_state_arrays(reference, cohort), _state_arrays(killed, cohort)):
      np.testing.assert_array_equal(x, y)


_SIGTERM_CONFIG = '''
from ensembles.configs import common as config_common

def get_config(arg=None):
  config = config_common.default_config()
  config.data.data_dir = {data_dir!r}
  config.hparams.update(dict(arch='cnn', width=8, depth=1, epochs=60, batch_size=64))
  config.sweep.seed = (0, 1)
  config.record.train_probe_size = 200
  config.record.test_probe_size = 100
  config.train.checkpoint_every_seconds = 1e9  # No state but the one a SIGTERM asks for.
  return config
'''


def test_sigterm_saves_the_state_stops_and_the_rerun_resumes_bit_identically(data_dir,
                                                                            tmp_path):
  config_path = tmp_path / 'sigterm_config.py'
  config_path.write_text(_SIGTERM_CONFIG.format(data_dir=data_dir))
  stopped = str(tmp_path / 'stopped')
  process = subprocess.Popen(_command(config_path, stopped), cwd=ROOT, env=_env(data_dir),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  first_record = os.path.join(store.cohort_dir(stopped, 0), 'records', '0')
  deadline = time.monotonic() + 300
  while not os.path.isdir(first_record) and process.poll() is None:
    assert time.monotonic() < deadline, 'no record after 300 s'
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)  # Training, a few seconds before its end.
  out, err = process.communicate(timeout=300)
  assert process.returncode != 0, 'the run ended before the signal: make it longer'
  assert process.returncode == 143, err[-3000:]
  assert 'stopped on SIGTERM at step' in out and 'rerun the same command to resume' in out
  states = os.listdir(os.path.join(store.cohort_dir(stopped, 0), 'state'))
  (saved,) = [int(d) for d in states if d.isdigit()]
  assert 0 < saved < 60 * (1438 // 64), saved  # Mid-run, at an epoch's end or a recording.
  done = subprocess.run(_command(config_path, stopped), cwd=ROOT, env=_env(data_dir),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'resuming at step {saved}' in done.stdout
  reference = str(tmp_path / 'reference')
  config = __import__('runpy').run_path(str(config_path))['get_config']()
  ensembles.train_and_record(config, reference)
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(stopped)
  np.testing.assert_array_equal(a.steps, b.steps)
  np.testing.assert_array_equal(a.probs(), b.probs())


_CTRL_C_CONFIG = '''
from ensembles.configs import common as config_common

def get_config(arg=None):
  config = config_common.default_config()
  config.data.data_dir = {data_dir!r}
  # Wide layers: a state of ~35 MB, whose save lasts long enough to be interrupted.
  config.hparams.update(dict(width=1024, depth=3, epochs=8, batch_size=64))
  config.sweep.seed = (0, 1)
  config.record.train_probe_size = 200
  config.record.test_probe_size = 100
  config.train.checkpoint_every_seconds = 1e9  # No state but those a stop asks for.
  return config
'''


def _states(workdir):
  """(committed state steps, unfinished state directories) of cohort 0."""
  entries = os.listdir(os.path.join(store.cohort_dir(workdir, 0), 'state'))
  return sorted(int(d) for d in entries if d.isdigit()), [d for d in entries if 'tmp' in d]


def _start_and_wait_for_record(command, env, workdir, index):
  process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  record = os.path.join(store.cohort_dir(workdir, 0), 'records', str(index))
  deadline = time.monotonic() + 300
  while not os.path.isdir(record) and process.poll() is None:
    assert time.monotonic() < deadline, f'no record {index} after 300 s'
    time.sleep(0.02)
  assert process.poll() is None, process.communicate()
  return process


@pytest.mark.slow
def test_ctrl_c_stops_in_one_line_a_second_one_at_once_and_no_state_is_ever_lost(data_dir,
                                                                                  tmp_path):
  """A Ctrl-C saves the state, says where it stopped in one line and exits 130; a second Ctrl-C
  during the next stop's save ends the process at once, leaving that save unfinished and the
  state before it in place; the rerun resumes from it, bit-identical to an uninterrupted run."""
  config_path = tmp_path / 'ctrl_c_config.py'
  config_path.write_text(_CTRL_C_CONFIG.format(data_dir=data_dir))
  workdir, env = str(tmp_path / 'stopped'), _env(data_dir)
  command = _command(config_path, workdir)
  # One Ctrl-C while training, after the recording at epoch 3.
  process = _start_and_wait_for_record(command, env, workdir, 9)
  sent = time.monotonic()
  process.send_signal(signal.SIGINT)
  out, err = process.communicate(timeout=300)
  latency = time.monotonic() - sent
  assert process.returncode == 130, err[-3000:]
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-3000:]
  (saved,), unfinished = _states(workdir)
  assert not unfinished
  lines = out.splitlines()
  assert lines[-2].startswith('Ctrl-C (SIGINT): stopping at the next safe point'), out
  assert lines[-1] == (f'stopped on Ctrl-C (SIGINT) at step {saved} of {8 * 22} in cohort 0 '
                       '(digits/mlp(w=1024,d=3)/sgd/bs=64/8ep), its state saved: rerun the '
                       'same command to resume.'), out
  assert latency < 60, f'the stop took {latency:.0f} s'
  # The rerun resumes; a Ctrl-C, and another while the state it asked for is being saved.
  process = _start_and_wait_for_record(command, env, workdir, 11)
  process.send_signal(signal.SIGINT)
  deadline = time.monotonic() + 120
  while not _states(workdir)[1]:
    assert process.poll() is None and time.monotonic() < deadline, process.communicate()
    time.sleep(0.002)
  process.send_signal(signal.SIGINT)
  out, err = process.communicate(timeout=60)
  assert process.returncode == 130, err[-3000:]
  assert f'resuming at step {saved}' in out
  assert out.splitlines()[-1] == ('stopped at once on a second Ctrl-C (SIGINT): rerun the same '
                                  'command to resume from the last saved state.'), out
  committed, unfinished = _states(workdir)
  assert committed == [saved] and unfinished, (committed, unfinished)  # Stopped mid-save.
  # The rerun clears the unfinished save and resumes from the state before it.
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'resuming at step {saved}' in done.stdout
  assert _states(workdir) == ([8 * 22], [])
  reference = str(tmp_path / 'reference')
  config = __import__('runpy').run_path(str(config_path))['get_config']()
  ensembles.train_and_record(config, reference)
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(workdir)
  np.testing.assert_array_equal(a.steps, b.steps)
  np.testing.assert_array_equal(a.probs(), b.probs())
  for x, y in zip(_state_arrays(reference, 0), _state_arrays(workdir, 0)):
    np.testing.assert_array_equal(x, y)
