"""Tests of ensembles.training.periodic: the loop's periodic actions, without training."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ensembles.training import periodic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def test_pacer_starts_at_one_step_and_grows_at_most_eightfold_to_its_seconds():
  pacer = periodic.Pacer(seconds=2.0)
  assert pacer.steps == 1
  # Each step takes 1 ms: 2,000 steps take 2 s, reached through 8, 64 and 512 steps.
  lengths = []
  for _ in range(5):
    lengths.append(pacer.timed(pacer.steps, pacer.steps * 1e-3))
  assert lengths == [8, 64, 512, 2000, 2000]


def test_pacer_shrinks_at_once_when_the_pace_slows():
  pacer = periodic.Pacer(seconds=2.0)
  pacer.steps = 2000
  assert pacer.timed(2000, 20.0) == 200  # Ten times slower: a tenth of the steps.
  assert pacer.timed(200, 400.0) == 1  # Slower than a step per 2 s: one step, never zero.


def test_pacer_ignores_a_short_call_cut_at_a_recording_but_not_a_slow_one():
  pacer = periodic.Pacer(seconds=2.0)
  pacer.steps = 2000
  assert pacer.timed(3, 0.05) == 2000  # Fixed costs dominate 3 steps: not timed.
  assert pacer.timed(0, 0.0) == 2000
  assert pacer.timed(100, 4.0) == 50  # Cut short, yet slow: timed.


def test_pacer_reads_chunk_seconds_when_made(monkeypatch):
  monkeypatch.setattr(periodic, 'CHUNK_SECONDS', 0.5)
  pacer = periodic.Pacer()
  pacer.steps = 100
  assert pacer.timed(100, 1.0) == 50


@pytest.mark.parametrize('signum, name, status', [
    (signal.SIGINT, 'Ctrl-C (SIGINT)', 130),
    (signal.SIGTERM, 'SIGTERM', 143),
    (None, 'a stop signal to another process', 143),
])
def test_signal_names_and_exit_status_are_the_shells(signum, name, status):
  assert periodic.signal_name(signum) == name
  assert periodic.exit_status(signum) == status


def _wakeup_fd() -> int:
  fd = signal.set_wakeup_fd(-1)
  signal.set_wakeup_fd(fd)
  return fd


def _wait_for(condition, seconds: float = 10.0) -> bool:
  deadline = time.monotonic() + seconds
  while not condition() and time.monotonic() < deadline:
    time.sleep(0.01)
  return condition()


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_stop_on_signal_asks_once_says_so_and_restores_the_handlers(signum):
  previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  previous_fd = _wakeup_fd()
  said = []
  with periodic.StopOnSignal(say=said.append) as stop:
    assert not stop.asked() and stop.signum is None
    os.kill(os.getpid(), signum)  # Handled in this (the main) thread: no death.
    assert stop.asked() and stop.signum == signum
    assert _wait_for(lambda: said), 'the watching thread said nothing'
  assert len(said) == 1 and said[0].startswith(f'{periodic.signal_name(signum)}: stopping at '
                                               'the next safe point'), said
  assert {s: signal.getsignal(s) for s in previous} == previous
  assert _wakeup_fd() == previous_fd


def test_a_second_ctrl_c_goes_to_its_usual_handler_without_exit_at_once():
  """In a notebook the kernel survives: the second Ctrl-C is a KeyboardInterrupt."""
  said = []
  with pytest.raises(KeyboardInterrupt):
    with periodic.StopOnSignal(say=said.append) as stop:
      os.kill(os.getpid(), signal.SIGTERM)
      assert stop.asked()
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1.0)  # The KeyboardInterrupt comes before this ends.
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_BLOCKED_CHILD = """
import os, sys
from ensembles.training import periodic
reader, _ = os.pipe()
with periodic.StopOnSignal(exit_at_once=True):
  print('ready', flush=True)
  os.read(reader, 1)  # The main thread waits inside a call that never returns.
print('the main thread went on', flush=True)
"""


def test_a_second_signal_with_exit_at_once_ends_the_process_whatever_the_main_thread_does():
  child = subprocess.Popen([sys.executable, '-c', _BLOCKED_CHILD], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=ROOT))
  try:
    assert child.stdout.readline() == 'ready\n', child.stderr.read()
    child.send_signal(signal.SIGTERM)
    assert child.stdout.readline().startswith('SIGTERM: stopping at the next safe point')
    assert child.poll() is None  # The first signal asks; it does not end the process.
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
  finally:
    child.kill()
  assert child.returncode == 130, err
  assert out == ('stopped at once on a second Ctrl-C (SIGINT): rerun the same command to '
                 'resume from the last saved state.\n'), out
  assert 'Traceback' not in err, err


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
