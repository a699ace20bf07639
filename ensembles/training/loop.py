"""One cohort's training loop: from where its store stands to its last recording.

Between two recordings the cohort trains in calls of whole epochs (``periodic.Pacer``,
``periodic.chunk_ends``); after a call or a record it saves its state once
``checkpoint_every_seconds`` have passed (``periodic.Every``), when a stop was asked
(``periodic.StopOnSignal``; then raises ``Stopped``), and at the end; across processes these
decisions are agreed (``multihost.agree``). States are saved under their training step (read
back from the state itself on resume); a state implies the records up to its step are stored.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
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
  """Training stopped on SIGTERM after saving its state: rerun the same command to resume."""


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


def record_arrays(state: CohortState, evaluation: Evaluation) -> dict[str, jax.Array]:
  """The store's record (``store.RECORD_KEYS``) of ``state`` and its ``evaluation``.

  The step is copied: the next training call donates the state's buffers while the record is
  still being written.
  """
  return dict(step=jnp.copy(state.step), diverged_at=state.diverged_at,
              **{k: getattr(evaluation, k) for k in store.RECORD_KEYS if k not in
                 ('step', 'diverged_at')})


def train_cohort(plan: Plan, c: int, workdir: str, mesh: jax.sharding.Mesh,
                 stop_asked: Callable[[], bool],
                 clock: periodic.Clock = time.perf_counter) -> CohortSummary:
  """Trains cohort ``c`` of ``plan`` from where its store stands, recording at its steps.

  Raises:
    Stopped: ``stop_asked()`` became true (on any process); the state was saved first.
    StoreError: records before the saved state are missing.
  """
  cohort, program = plan.cohorts[c], plan.programs[c]
  where = f'cohort {c + 1}/{len(plan.cohorts)} {cohort.describe()}'
  steps = recording.recording_steps(plan.epochs_grid, program.steps_per_epoch)
  directory = store.cohort_dir(workdir, cohort.index)
  writer = store.CohortWriter(directory, plan.record.dtype, cohort.size)
  latest, recorded = writer.latest_state_step(), writer.recorded()
  if recorded >= set(range(len(steps))):  # Finished earlier: nothing to compile.
    writer.close()
    final = store.read_record(directory, len(steps) - 1)
    multihost.say(f'{where}: finished earlier')
    return _summary(c, plan, steps, final, compile_seconds=0.0, train_seconds=0.0,
                    done_steps=0, resumed_from_step=int(steps[-1]))
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
      first = workdir_lib.resume_index(steps, position, recorded,
                                       f'cohort {c} ({cohort.describe()})',
                                       os.path.join(directory, 'records'))
      multihost.say(f'{where}: resuming at step {position}')
    resumed_from = None if latest is None else position
    started = clock()
    log = periodic.Every(plan.train.log_every_seconds, clock)
    checkpoint = periodic.Every(plan.train.checkpoint_every_seconds, clock)
    pacer = periodic.Pacer(program.steps_per_epoch, clock=clock)
    done_steps = 0

    def save_state(now: float | None = None) -> None:
      writer.write_state(position, state)
      checkpoint.fire(now)

    for t in range(first, len(steps)):
      pacer.start(int(steps[t]) - position)
      for end in periodic.chunk_ends(position, int(steps[t]), pacer.chunk_steps):
        state = compiled.train(state, hp, dataset, end - position)
        done_steps += end - position
        position = end
        if end < steps[t]:  # A call ended between recordings: a state if one is due.
          jax.block_until_ready(state.step)
          stop, save, _ = multihost.agree(stop_asked(), checkpoint.due(), pacer.epochs)
          if stop or save:
            save_state()
          if stop:
            raise Stopped(_stopped(plan, c, position))
      evaluation = compiled.evaluate(state, placed.probes)
      if t not in recorded:  # Present after a crash between record and state writes.
        writer.write_record(t, record_arrays(state, evaluation))
      jax.block_until_ready(evaluation)  # (The record's write has already waited for it.)
      now = clock()
      last = t == len(steps) - 1
      stop, save, pacer.epochs = multihost.agree(stop_asked() and not last,
                                                 checkpoint.due(now), pacer.finish(now))
      if stop or save or last:
        save_state(now)
      if stop:
        raise Stopped(_stopped(plan, c, position))
      if log.due(now) or last:
        log.fire(now)
        rate = cohort.size * done_steps / max(now - started, 1e-9)
        remaining = cohort.size * (steps[-1] - steps[t]) / max(rate, 1e-9)
        multihost.say(f'{where}: {cohort.size} members x {steps[t]}/{steps[-1]} steps, '
                      f'{rate:.0f} model-steps/s, ETA {remaining:.0f} s')
  finally:
    writer.close()  # Waits for the last writes: they are part of the training time.
  train_seconds = clock() - started
  final = dict(diverged_at=devices.to_host(state.diverged_at)[:cohort.size],
               **{k: devices.to_host(getattr(evaluation, k))[:cohort.size]
                  for k in ('train_accuracy', 'test_accuracy')})
  return _summary(c, plan, steps, final, compile_seconds=compiled.compile_seconds,
                  train_seconds=train_seconds, done_steps=done_steps,
                  resumed_from_step=resumed_from)


def _stopped(plan: Plan, c: int, position: int) -> str:
  return (f'stopped on SIGTERM at step {position} of cohort {c + 1}/{len(plan.cohorts)} '
          f'({plan.cohorts[c].describe()}), its state saved: rerun the same command to resume.')


def _summary(c: int, plan: Plan, steps: np.ndarray, final: dict[str, np.ndarray],
             compile_seconds: float, train_seconds: float, done_steps: int,
             resumed_from_step: int | None) -> CohortSummary:
  """A cohort's summary from its final record (diverged_at and accuracies per member)."""
  cohort = plan.cohorts[c]
  alive = final['diverged_at'] < 0
  mean = lambda k: float(np.nanmean(final[k])) if alive.any() else float('nan')  # noqa: E731
  return CohortSummary(
      index=c, description=cohort.describe(), members=cohort.size, steps=int(steps[-1]),
      compile_seconds=compile_seconds, train_seconds=train_seconds,
      model_steps_per_second=cohort.size * done_steps / max(train_seconds, 1e-9),
      train_accuracy=mean('train_accuracy'), test_accuracy=mean('test_accuracy'),
      diverged=int((~alive).sum()), resumed_from_step=resumed_from_step)
