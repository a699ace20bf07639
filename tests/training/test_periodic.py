"""Tests of ensembles.training.periodic: the loop's periodic actions, without training."""

import os
import signal

import pytest

from ensembles.training import periodic


class FakeClock:
  """A clock that moves only when told to."""

  def __init__(self, now: float = 100.0):
    self.now = now

  def __call__(self) -> float:
    return self.now


def test_every_is_due_once_its_period_has_passed_since_it_fired():
  clock = FakeClock()
  every = periodic.Every(10.0, clock)
  assert not every.due()
  clock.now += 9.999
  assert not every.due()
  clock.now += 0.001
  assert every.due()
  every.fire()
  assert not every.due()
  assert every.due(now=clock.now + 10.0)  # An explicit time wins over the clock.
  every.fire(now=clock.now + 10.0)
  clock.now += 15.0
  assert not every.due()


def test_every_zero_seconds_is_always_due():
  every = periodic.Every(0.0, FakeClock())
  assert every.due()
  every.fire()
  assert every.due()


def test_pacer_spans_whole_epochs_that_take_at_least_min_seconds():
  clock = FakeClock()
  pacer = periodic.Pacer(steps_per_epoch=50, min_seconds=2.0, clock=clock)
  assert pacer.epochs == 1 and pacer.chunk_steps == 50  # Untimed: one epoch per call.
  pacer.start(200)
  clock.now += 1.0  # 200 steps in 1 s: an epoch takes 0.25 s, 8 of them take 2 s.
  assert pacer.finish() == 8 and pacer.chunk_steps == 400
  pacer.start(100)
  clock.now += 10.0  # An epoch takes 5 s now: one per call.
  assert pacer.finish() == 1


def test_pacer_keeps_its_pace_over_an_interval_without_steps():
  clock = FakeClock()
  pacer = periodic.Pacer(steps_per_epoch=10, min_seconds=2.0, clock=clock)
  pacer.start(100)
  clock.now += 0.5
  assert pacer.finish() == 40
  pacer.start(0)  # Step 0's recording: nothing trained, nothing timed.
  clock.now += 30.0
  assert pacer.finish() == 40


def test_pacer_reads_min_chunk_seconds_when_made(monkeypatch):
  monkeypatch.setattr(periodic, 'MIN_CHUNK_SECONDS', 0.0)
  clock = FakeClock()
  pacer = periodic.Pacer(steps_per_epoch=10, clock=clock)
  pacer.start(10)
  clock.now += 1e-6
  assert pacer.finish() == 1


@pytest.mark.parametrize('position, target, chunk, ends', [
    (5, 50, 22, [22, 44, 50]),
    (0, 44, 22, [22, 44]),
    (22, 23, 22, [23]),
    (7, 7, 22, []),
    (0, 10, 100, [10]),
])
def test_chunk_ends_stop_at_chunk_multiples_and_the_target(position, target, chunk, ends):
  assert periodic.chunk_ends(position, target, chunk) == ends


def test_stop_on_signal_asks_once_and_restores_the_handler():
  previous = signal.getsignal(signal.SIGTERM)
  with periodic.StopOnSignal() as stop:
    assert not stop.asked()
    os.kill(os.getpid(), signal.SIGTERM)  # Handled in this (the main) thread: no death.
    assert stop.asked()
  assert signal.getsignal(signal.SIGTERM) == previous


def test_stop_on_signal_off_the_main_thread_changes_nothing():
  import threading

  seen = []

  def run():
    with periodic.StopOnSignal() as stop:
      seen.append((stop.asked(), signal.getsignal(signal.SIGTERM)))

  previous = signal.getsignal(signal.SIGTERM)
  thread = threading.Thread(target=run)
  thread.start()
  thread.join()
  assert seen == [(False, previous)]
