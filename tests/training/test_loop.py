"""Tests of ensembles.training.loop: one cohort's loop (its record, the timing of its writes,
states between recordings and resuming from them, a pretrained cohort resumed)."""

import signal
import time

import jax.numpy as jnp
import numpy as np
import pytest

import ensembles
from ensembles import store
from ensembles.training import devices
from ensembles.training import experiment
from ensembles.training import loop
from ensembles.training import periodic
from ensembles.training import program as program_lib
from ensembles.training import workdir as workdir_lib


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


class _FixedPacer(periodic.Pacer):
  """Calls of 7 steps, whatever their pace: they end mid-epoch (digits has 22 steps of 64)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.steps = 7

  def timed(self, steps, seconds):
    return self.steps


def test_states_between_distant_recordings_and_a_resume_from_one(small_config, tmp_path,
                                                                  monkeypatch):
  """Recordings 5 epochs apart (epochs 10, 15, 16): a state at each call's end when one is
  due, under its training step, mid-epoch too; a crash right after one resumes there,
  bit-identical."""
  config = small_config(epochs=16, seed=(0, 1))
  config.train.checkpoint_every_seconds = 0.0  # Every chance to save one is taken ...
  monkeypatch.setattr(periodic, 'Pacer', _FixedPacer)  # ... after every 7 steps.
  reference, resumed = str(tmp_path / 'reference'), str(tmp_path / 'resumed')
  ensembles.train_and_record(config, reference)
  spe = 1438 // 64  # digits' training examples per batch of 64

  class Crash(Exception):
    pass

  saved, write_state = [], store.CohortWriter.write_state

  def crash_past_epoch_12(writer, step, state):
    write_state(writer, step, state)
    saved.append(step)
    if step > 12 * spe:
      raise Crash

  with monkeypatch.context() as patch:
    patch.setattr(store.CohortWriter, 'write_state', crash_past_epoch_12)
    with pytest.raises(Crash):
      ensembles.train_and_record(config, resumed)
  # From the recording at epoch 10, a state after each call of 7 steps.
  assert saved[-7:] == [10 * spe + 7 * k for k in range(1, 8)], saved
  crash_after = saved[-1]
  assert crash_after % spe, 'the call ended at an epoch end: pick another call length'
  summary = ensembles.train_and_record(config, resumed)
  assert summary.cohorts[0].resumed_from_step == crash_after
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(resumed)
  np.testing.assert_array_equal(a.steps, b.steps)
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split), b.probs(split))
  for k, v in a.metrics.items():
    np.testing.assert_array_equal(v, b.metrics[k])


class _FakeClock:
  """Moves only when told to (here: by the training calls)."""

  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


class _CtrlCAt:
  """A stop asked by Ctrl-C once ``clock`` reads ``seconds``."""
  signum = signal.SIGINT

  def __init__(self, clock, seconds: float):
    self.clock, self.seconds = clock, seconds

  def asked(self) -> bool:
    return self.clock() >= self.seconds


def test_a_stop_is_answered_within_a_call_however_long_an_epoch_is(small_config, tmp_path,
                                                                    monkeypatch):
  """On a clock where each step takes 0.25 s, an epoch (44 steps of 32) takes 11 s: calls
  still last periodic.CHUNK_SECONDS, so a stop asked mid-epoch ends the call it arrives in,
  the state saved mid-epoch; the rerun from there is bit-identical to an uninterrupted run."""
  seconds_per_step, asked_at = 0.25, 25.0  # Step 100: between the recordings at 88 and 132.
  config = small_config(epochs=4, batch_size=(64, 32))  # Cohort 1: batch 32.
  reference, stopped = str(tmp_path / 'reference'), str(tmp_path / 'stopped')
  ensembles.train_and_record(config, reference)
  clock = _FakeClock()
  compile_cohort = experiment.Plan.compile_cohort

  def compile_slowly(plan, c, mesh, fresh=True):
    compiled, placed = compile_cohort(plan, c, mesh, fresh)

    def train(state, hp, dataset, num_steps):
      clock.now += num_steps * seconds_per_step
      return compiled.train(state, hp, dataset, num_steps)
    return compiled._replace(train=train), placed

  plan = experiment.plan(config)
  with monkeypatch.context() as patch:
    patch.setattr(experiment.Plan, 'compile_cohort', compile_slowly)
    workdir_lib.prepare(stopped, plan.manifest(), overwrite=False)
    with pytest.raises(loop.Stopped) as stop:
      loop.train_cohort(plan, 1, stopped, devices.member_mesh(), _CtrlCAt(clock, asked_at),
                        clock=clock)
  assert clock.now - asked_at <= periodic.CHUNK_SECONDS
  position = store.CohortWriter(store.cohort_dir(stopped, 1), 'float32', 1).latest_state_step()
  assert 88 < position < 132 and position % 44, position
  assert str(stop.value) == (f'stopped on Ctrl-C (SIGINT) at step {position} of 176 in cohort 1 '
                             f'({plan.cohorts[1].describe()}), its state saved: rerun the same '
                             'command to resume.')
  assert stop.value.signum == signal.SIGINT
  summary = ensembles.train_and_record(config, stopped)
  assert summary.cohorts[1].resumed_from_step == position
  a, b = ensembles.load_trajectories(reference), ensembles.load_trajectories(stopped)
  np.testing.assert_array_equal(a.steps, b.steps)
  for split in ('train', 'test'):
    np.testing.assert_array_equal(a.probs(split), b.probs(split))
  for k, v in a.metrics.items():
    np.testing.assert_array_equal(v, b.metrics[k])


def test_the_run_eta_is_the_cohorts_then_the_later_model_steps_at_the_runs_pace():
  # Earlier cohorts: 6,000 model-steps in 20 s; this one 4,000 in 20 s so far, 10 s left:
  # 10,000 in 40 s is 250 model-steps/s, so 5,000 later ones take 20 s more.
  pace = loop.RunPace(model_steps=6000, seconds=20.0)
  assert pace.eta(10.0, 4000, 20.0, 5000) == pytest.approx(30.0)
  assert loop.RunPace().eta(7.0, 100, 1.0, 0) == pytest.approx(7.0)


@pytest.mark.parametrize('seconds, text', [
    (0.4, '0 s'), (59.4, '59 s'), (59.6, '1 min 00 s'), (185, '3 min 05 s'),
    (3600, '1 h 00 min'), (7625, '2 h 07 min')])
def test_durations_read_as_people_read_them(seconds, text):
  assert loop.format_seconds(seconds) == text


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
