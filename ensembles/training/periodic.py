"""The training loop's periodic work as small objects with an injectable clock, each testable
alone (in the manner of CommonLoopUtils' ``periodic_actions``).

* ``Every(seconds)``: due once ``seconds`` have passed since it last fired (progress lines,
  resumable states);
* ``StopOnSignal()``: a context in which SIGTERM asks the run to stop at its next safe point;
* ``Pacer(steps_per_epoch)``: how many whole epochs one training call between recordings
  spans, from the pace of the last interval.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]

# Shortest training call between two recordings epochs apart, in seconds (whole epochs; at
# least one): states and SIGTERM stops happen at call ends, and fast epochs are not worth a
# call and a host sync each.
MIN_CHUNK_SECONDS = 2.0


class Every:
  """Due once ``seconds`` have passed since it last fired (or was made).

  Example:
    >>> log = Every(10.0)
    >>> if log.due():
    ...   print('progress'); log.fire()
  """

  def __init__(self, seconds: float, clock: Clock = time.perf_counter):
    self.seconds = seconds
    self._clock = clock
    self._last = clock()

  def due(self, now: float | None = None) -> bool:
    return (self._clock() if now is None else now) - self._last >= self.seconds

  def fire(self, now: float | None = None) -> None:
    """Marks the action done at ``now`` (default: the clock's time)."""
    self._last = self._clock() if now is None else now


class StopOnSignal:
  """A context in which SIGTERM (a preemption notice, ``scancel``, a job's time limit) asks the
  run to stop at its next safe point instead of dying where it stands; a second SIGTERM kills
  at once. ``asked()`` says whether a stop was asked of this process (``multihost.agree`` makes
  it every process's decision). Handlers can only be set from the main thread: elsewhere the
  context changes nothing and ``asked()`` stays False.
  """

  def __init__(self, signum: int = signal.SIGTERM):
    self._signum = signum
    self._event = threading.Event()
    self._previous = None

  def asked(self) -> bool:
    return self._event.is_set()

  def _handle(self, signum, frame):
    if self._event.is_set():
      signal.signal(self._signum, signal.SIG_DFL)
      os.kill(os.getpid(), self._signum)
    self._event.set()

  def __enter__(self) -> StopOnSignal:
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(self._signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(self._signum, self._previous)
      self._previous = None


class Pacer:
  """Epochs per training call between recordings: 1 until an interval has been timed, then as
  many whole epochs as ``min_seconds`` take at the last interval's pace (each call and check
  costs a few milliseconds, which fast epochs would feel)."""

  def __init__(self, steps_per_epoch: int, min_seconds: float | None = None,
               clock: Clock = time.perf_counter):
    self.steps_per_epoch = steps_per_epoch
    self.min_seconds = MIN_CHUNK_SECONDS if min_seconds is None else min_seconds
    self.epochs = 1
    self._clock = clock
    self._started, self._steps = clock(), 0

  def start(self, steps: int) -> None:
    """An interval of ``steps`` training steps starts now."""
    self._started, self._steps = self._clock(), steps

  def finish(self, now: float | None = None) -> int:
    """The interval ended at ``now``: returns the epochs per call from here on."""
    if self._steps:
      now = self._clock() if now is None else now
      seconds_per_epoch = (now - self._started) / self._steps * self.steps_per_epoch
      self.epochs = max(1, int(self.min_seconds / max(seconds_per_epoch, 1e-9)))
    return self.epochs

  @property
  def chunk_steps(self) -> int:
    return self.epochs * self.steps_per_epoch


def chunk_ends(position: int, target: int, chunk: int) -> list[int]:
  """Where the training calls from step ``position`` to ``target`` end: at multiples of
  ``chunk`` (a whole number of epochs), and at ``target``.

  ``chunk_ends(5, 50, 22) == [22, 44, 50]``. Chunks never cross those boundaries, so a
  state can be saved, or a stop honoured, between recordings epochs apart; the step count of
  a call is traced, so no length compiles again.
  """
  ends = list(range((position // chunk + 1) * chunk, target, chunk))
  return ends + [target] if target > position else []
