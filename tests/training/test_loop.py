"""Tests of ensembles.training.loop: one cohort's loop (its record, the timing of its writes,
states between recordings and resuming from them, a pretrained cohort resumed)."""

import time

import jax.numpy as jnp
import numpy as np
import pytest

import ensembles
from ensembles import store
from ensembles.training import loop
from ensembles.training import periodic
from ensembles.training import program as program_lib


def _state_and_evaluation(members: int = 3, n_train: int = 5, n_test: int = 4, classes: int = 3):
  rng = np.random.default_rng(0)

  def probs(n):
    return jnp.asarray(rng.dirichlet(np.ones(classes), (members, n)), jnp.float32)

  state = program_lib.CohortState(
      step=jnp.asarray(7, jnp.int32),
      members=program_lib.MemberState(params={}, model_state={}, opt_state=()),
      alive=jnp.asarray([True, False, True]), diverged_at=jnp.asarray([-1, 4, -1], jnp.int32))
  evaluation = program_lib.Evaluation(
      train_probs=probs(n_train), test_probs=probs(n_test),
      **{k: jnp.asarray(rng.random(members), jnp.float32) for k in store.METRICS})
  return state, evaluation


def test_record_arrays_are_the_store_record_with_the_step_copied(tmp_path):
  state, evaluation = _state_and_evaluation()
  record = loop.record_arrays(state, evaluation)
  assert sorted(record) == sorted(store.RECORD_KEYS) and len(record) == len(store.RECORD_KEYS)
  assert record['diverged_at'] is state.diverged_at
  for k in store.RECORD_KEYS[2:]:  # The probabilities and metrics, as evaluated.
    assert record[k] is getattr(evaluation, k), k
  # The step is its own buffer: the next training call donates (deletes) the state's.
  assert record['step'] is not state.step
  assert record['step'].unsafe_buffer_pointer() != state.step.unsafe_buffer_pointer()
  state.step.delete()
  assert int(record['step']) == 7
  # The writer takes it as it is.
  writer = store.CohortWriter(str(tmp_path), 'float32', num_members=3)
  writer.write_record(0, record)
  writer.close()
  read = store.read_record(str(tmp_path), 0)
  assert int(read['step']) == 7
  np.testing.assert_array_equal(read['diverged_at'], [-1, 4, -1])
  np.testing.assert_array_equal(read['test_probs'], np.asarray(evaluation.test_probs))


def test_training_time_includes_waiting_for_the_last_writes(small_config, tmp_path,
                                                             monkeypatch):
  """The summary's wall time (and model-steps/s) counts the writes still pending at the end."""
  wait_s = 1.0
  close = store.CohortWriter.close

  def slow_close(writer):
    time.sleep(wait_s)  # Stands in for Orbax finishing the last asynchronous writes.
    close(writer)

  monkeypatch.setattr(store.CohortWriter, 'close', slow_close)
  summary = ensembles.train_and_record(small_config(), str(tmp_path))
  (cohort,) = summary.cohorts
  assert cohort.train_seconds >= wait_s
  assert cohort.model_steps_per_second <= cohort.members * cohort.steps / wait_s


def test_states_between_distant_recordings_and_a_resume_from_one(small_config, tmp_path,
                                                                  monkeypatch):
  """Recordings 5 epochs apart (epochs 10, 15, 16): a state at each epoch's end when one is
  due, under its training step; a crash right after one resumes there, bit-identical."""
  config = small_config(epochs=16, seed=(0, 1))
  config.train.checkpoint_every_seconds = 0.0  # Every chance to save one is taken ...
  monkeypatch.setattr(periodic, 'MIN_CHUNK_SECONDS', 0.0)  # ... at every epoch's end.
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  ensembles.train_and_record(config, reference)
  spe = 1438 // 64  # digits' training examples per batch of 64
  crash_after = 12 * spe  # An epoch's end between the recordings at 10 and 15 epochs.

  class Crash(Exception):
    pass

  saved, write_state = [], store.CohortWriter.write_state

  def crash_after_epoch_12(writer, step, state):
    write_state(writer, step, state)
    saved.append(step)
    if step == crash_after:
      raise Crash

  with monkeypatch.context() as patch:
    patch.setattr(store.CohortWriter, 'write_state', crash_after_epoch_12)
    with pytest.raises(Crash):
      ensembles.train_and_record(config, resumed)
  assert saved[-3:] == [10 * spe, 11 * spe, 12 * spe]
  summary = ensembles.train_and_record(config, resumed)
  assert summary.cohorts[0].resumed_from_step == crash_after
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(resumed)
  np.testing.assert_array_equal(a.steps, b.steps)
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split), b.probs(split))
  for k, v in a.metrics.items():
    np.testing.assert_array_equal(v, b.metrics[k])


def test_pretrained_cohort_resumes_without_pretraining_again(small_config, tmp_path,
                                                           monkeypatch):
  config = small_config(epochs=1, seed=(0, 1))
  config.hparams.update(dict(init='subset', init_subset=0.2, init_epochs=1))
  config.train.checkpoint_every_seconds = 0.0  # A resumable state at every recording.
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  ensembles.train_and_record(config, reference)

  class Crash(Exception):
    pass

  write_record = store.CohortWriter.write_record

  def crash_at_third(writer, t, *args):
    if t == 3:
      raise Crash
    return write_record(writer, t, *args)

  with monkeypatch.context() as patch:
    patch.setattr(store.CohortWriter, 'write_record', crash_at_third)
    with pytest.raises(Crash):
      ensembles.train_and_record(config, resumed)
  summary = ensembles.train_and_record(config, resumed)
  assert summary.cohorts[0].resumed_from_step is not None
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(resumed)
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split), b.probs(split))
