"""One cohort's training loop: from where its store stands to its last recording.

Between two recordings the cohort trains in calls of about ``periodic.CHUNK_SECONDS``
(``periodic.Pacer``), which may end anywhere, mid-epoch included: the step count of a call is
traced, and a member's data order and augmentation depend only on the step, so where calls end
changes no result. After a call or a record it saves its state once
``checkpoint_every_seconds`` have passed (``periodic.Every``), when a stop was asked
(``periodic.StopOnSignal``; then raises ``Stopped``), and at the end; across processes these
decisions are agreed (``multihost.agree``). States are saved under their training step (read
back from the state itself on resume); a state implies the records up to its step are stored.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from ensembles import store
from ensembles.training import devices
from ensembles.training import multihost
from ensembles.training import periodic
from ensembles.training import recording
from ensembles.training import workdir as workdir_lib
from ensembles.training.program import CohortState, Evaluation

if TYPE_CHECKING:
  from ensembles.training.experiment import Plan


class Stopped(Exception):
  """Training stopped on a signal (SIGTERM, Ctrl-C) after saving its state: rerun the same
  command to resume. ``signum``: the signal (None where another process received it)."""

  def __init__(self, message: str, signum: int | None = None):
    super().__init__(message)
    self.signum = signum


@dataclasses.dataclass(frozen=True)
class CohortSummary:
  """One cohort's run: ``train_seconds`` is the wall time from the first step to the last
  write (evaluations and recording included, compilation not), and ``model_steps_per_second``
  counts the members' steps of this run over it."""
  index: int
  description: str
  members: int
  steps: int
  compile_seconds: float
  train_seconds: float
  model_steps_per_second: float
  train_accuracy: float
  test_accuracy: float
  diverged: int
  resumed_from_step: int | None = None
  done_earlier: bool = False  # Finished by an earlier run: nothing trained, no rates.


@dataclasses.dataclass
class RunPace:
  """The pace of a run over the cohorts it trained so far (model-steps, and seconds with
  compilation and recording), for the whole run's ETA."""
  model_steps: int = 0
  seconds: float = 0.0

  def eta(self, cohort_left: float, cohort_model_steps: int, cohort_seconds: float,
          later_model_steps: int) -> float:
    """Seconds left in the run: the current cohort's ETA (``cohort_left``, from its own rate),
    then the ``later_model_steps`` of the cohorts after it at the run's pace so far, this
    cohort's ``cohort_model_steps`` in ``cohort_seconds`` included."""
    seconds = self.seconds + cohort_seconds
    rate = (self.model_steps + cohort_model_steps) / max(seconds, 1e-9)
    return cohort_left + later_model_steps / max(rate, 1e-9)


def record_arrays(state: CohortState, evaluation: Evaluation) -> dict[str, jax.Array]:
  """The store's record (``store.RECORD_KEYS``) of ``state`` and its ``evaluation``.

  The step is copied: the next training call donates the state's buffers while the record is
  still being written.
  """
  return dict(step=jnp.copy(state.step), diverged_at=state.diverged_at,
              **{k: getattr(evaluation, k) for k in store.RECORD_KEYS if k not in
                 ('step', 'diverged_at')})


def train_cohort(plan: Plan, c: int, workdir: str, mesh: jax.sharding.Mesh,
                 stop: periodic.StopOnSignal, clock: periodic.Clock = time.perf_counter,
                 pace: RunPace | None = None) -> CohortSummary:
  """Trains cohort ``c`` of ``plan`` from where its store stands, recording at its steps.

  Args:
    stop: says whether a stop was asked (``asked()``) and by which signal (``signum``).
    clock: times the calls (``periodic.Pacer``), states and progress lines.
    pace: the run's pace over its earlier cohorts, for the whole run's ETA; this cohort's is
      added to it once it is done.

  Raises:
    Stopped: ``stop.asked()`` became true (on any process); the state was saved first.
    StoreError: records before the saved state are missing.
  """
  began = clock()
  cohort, program = plan.cohorts[c], plan.programs[c]
  where = plan.cohort_name(c)
  steps = recording.recording_steps(plan.epochs_grid, program.steps_per_epoch)
  total = int(steps[-1])
  directory = store.cohort_dir(workdir, cohort.index)
  writer = store.CohortWriter(directory, plan.record.dtype, cohort.size)
  latest, recorded = writer.latest_state_step(), writer.recorded()
  if recorded >= set(range(len(steps))):  # Finished earlier: nothing to compile.
    writer.close()
    final = store.read_record(directory, len(steps) - 1)
    multihost.say(f'{where}: done earlier')
    return _summary(c, plan, steps, final, compile_seconds=0.0, train_seconds=0.0,
                    done_steps=0, resumed_from_step=total, done_earlier=True)
  pace = RunPace() if pace is None else pace
  # Cohorts train in order, so the ones after this have not started.
  later = sum(plan.cohorts[k].size * plan.programs[k].total_steps
              for k in range(c + 1, len(plan.cohorts)))
  try:
    compiled, placed = plan.compile_cohort(c, mesh, fresh=latest is None)
    hp, dataset = placed.hp, placed.dataset
    if latest is None:
      state, position, first = compiled.init(hp), 0, 0
      if compiled.pretrain is not None:
        state = compiled.pretrain(state, hp, dataset)
    else:
      state = writer.restore_state(latest, compiled.abstract_state)
      position = int(state.step.addressable_data(0))  # Replicated: every process has it.
      first = workdir_lib.resume_index(steps, position, recorded, where,
                                       os.path.join(directory, 'records'))
      multihost.say(f'{where}: resuming at step {position}')
    resumed_from = None if latest is None else position
    started = clock()
    log = periodic.Every(plan.train.log_every_seconds, clock)
    checkpoint = periodic.Every(plan.train.checkpoint_every_seconds, clock)
    pacer = periodic.Pacer()
    done_steps = 0

    def safe_point(now: float, last: bool = False) -> None:
      """After a call or a record: a state when one is due, asked for (then ``Stopped``) or
      last; a progress line when one is due."""
      stop_now, save, pacer.steps = multihost.agree(stop.asked() and not last,
                                                    checkpoint.due(now), pacer.steps)
      if stop_now or save or last:
        writer.write_state(position, state)
        checkpoint.fire(now)
      if stop_now:
        raise Stopped(f'stopped on {periodic.signal_name(stop.signum)} at step {position} of '
                      f'{total} in {where}, its state saved: rerun the same command to resume.',
                      stop.signum)
      if log.due(now) or last:
        log.fire(now)
        line = f'{where}: {cohort.size} members x {position}/{total} steps'
        if done_steps:
          rate = cohort.size * done_steps / max(now - started, 1e-9)
          left = cohort.size * (total - position) / rate
          line += f', {rate:.0f} model-steps/s, ETA {format_seconds(left)}'
          if len(plan.cohorts) > 1:
            run_left = pace.eta(left, cohort.size * done_steps, now - began, later)
            line += f'; run ETA {format_seconds(run_left)}'
        multihost.say(line)

    for t in range(first, len(steps)):
      while position < steps[t]:  # Calls of about periodic.CHUNK_SECONDS, ending anywhere.
        end = min(position + pacer.steps, int(steps[t]))
        called = clock()
        state = compiled.train(state, hp, dataset, end - position)
        jax.block_until_ready(state.step)
        now = clock()
        pacer.timed(end - position, now - called)
        done_steps += end - position
        position = end
        if end < steps[t]:
          safe_point(now)
      evaluation = compiled.evaluate(state, placed.probes)
      if t not in recorded:  # Present after a crash between record and state writes.
        writer.write_record(t, record_arrays(state, evaluation))
      jax.block_until_ready(evaluation)  # (The record's write has already waited for it.)
      safe_point(clock(), last=t == len(steps) - 1)
  finally:
    writer.close()  # Waits for the last writes: they are part of the training time.
  now = clock()
  train_seconds = now - started
  pace.model_steps += cohort.size * done_steps
  pace.seconds += now - began
  final = dict(diverged_at=devices.to_host(state.diverged_at)[:cohort.size],
               **{k: devices.to_host(getattr(evaluation, k))[:cohort.size]
                  for k in ('train_accuracy', 'test_accuracy')})
  return _summary(c, plan, steps, final, compile_seconds=compiled.compile_seconds,
                  train_seconds=train_seconds, done_steps=done_steps,
                  resumed_from_step=resumed_from)


def format_seconds(seconds: float) -> str:
  """A duration as people read it: '42 s', '3 min 05 s', '2 h 07 min'."""
  seconds = round(seconds)
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


def _summary(c: int, plan: Plan, steps: np.ndarray, final: dict[str, np.ndarray],
             compile_seconds: float, train_seconds: float, done_steps: int,
             resumed_from_step: int | None, done_earlier: bool = False) -> CohortSummary:
  """A cohort's summary from its final record (diverged_at and accuracies per member)."""
  cohort = plan.cohorts[c]
  alive = final['diverged_at'] < 0
  mean = lambda k: float(np.nanmean(final[k])) if alive.any() else float('nan')  # noqa: E731
  return CohortSummary(
      index=cohort.index, description=cohort.describe(), members=cohort.size,
      steps=int(steps[-1]), compile_seconds=compile_seconds, train_seconds=train_seconds,
      model_steps_per_second=cohort.size * done_steps / max(train_seconds, 1e-9),
      train_accuracy=mean('train_accuracy'), test_accuracy=mean('test_accuracy'),
      diverged=int((~alive).sum()), resumed_from_step=resumed_from_step,
      done_earlier=done_earlier)
