"""The training loop's periodic work as small objects with an injectable clock, each testable
alone (in the manner of CommonLoopUtils' ``periodic_actions``).

* ``Every(seconds)``: due once ``seconds`` have passed since it last fired (progress lines,
  resumable states);
* ``StopOnSignal()``: a context in which SIGTERM or SIGINT (Ctrl-C) asks the run to stop at its
  next safe point, and a second one stops it at once;
* ``Pacer()``: how many steps one training call spans, from the pace of the last call, so that
  calls last about ``CHUNK_SECONDS`` however long an epoch is.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

Clock = Callable[[], float]

# Seconds a training call lasts, at the last call's pace: a stop or a due state waits for the
# current call to end (the main thread is inside it), and each call costs a dispatch and a host
# sync, which calls much shorter than this would feel. Stop latency and throughput against it:
# benchmarks/README.md ("Training calls and stop latency").
CHUNK_SECONDS = 2.0
# A call spans at most this many times the steps of the last timed call: the first calls (one
# step, then more) are timed with their warm-up, so the length grows to CHUNK_SECONDS over a few
# calls rather than on one guess.
CHUNK_GROWTH = 8

# How the messages name the stop signals.
_SIGNAL_NAMES = {signal.SIGINT: 'Ctrl-C (SIGINT)', signal.SIGTERM: 'SIGTERM'}


def signal_name(signum: int | None) -> str:
  """'Ctrl-C (SIGINT)', 'SIGTERM', ... ; None (a signal to another process): 'a stop signal'."""
  if signum is None:
    return 'a stop signal to another process'
  return _SIGNAL_NAMES.get(signum) or signal.Signals(signum).name


def exit_status(signum: int | None) -> int:
  """The exit status of a process stopped by ``signum``: 128 + its number, the shell's status of
  a process the signal killed (130 for Ctrl-C, 143 for SIGTERM; SIGTERM's where another process
  got the signal), so that schedulers count the job as terminated (and requeue it where asked
  to) and a shell loop stops on a Ctrl-C."""
  return 128 + int(signal.SIGTERM if signum is None else signum)


def _print(message: str) -> None:
  print(message, flush=True)


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
  """A context in which SIGTERM (a preemption notice, ``scancel``, a job's time limit) or SIGINT
  (Ctrl-C) asks the run to stop at its next safe point instead of dying where it stands.

  ``asked()`` says whether a stop was asked of this process (``multihost.agree`` makes it every
  process's decision), ``signum`` which signal asked first. Python runs signal handlers only
  between bytecodes, so a thread watches for the signals (``signal.set_wakeup_fd``) and answers
  at once while the main thread is inside a long compiled call: the first signal is
  acknowledged with a line (``say``); a second one stops the run at once, losing the steps
  trained since the last saved state (the store stays consistent: a rerun resumes from that
  state). With ``exit_at_once`` (a process that is only this run: the commands) the watching
  thread ends the process there, exit status ``exit_status(signum)``, even mid-computation;
  without it (a notebook, whose kernel should survive) the signal goes to its previous handler
  as soon as the main thread runs Python again (at the end of the current call: a
  ``KeyboardInterrupt`` for a Ctrl-C). Handlers can only be set from the main thread: elsewhere
  the context changes nothing and ``asked()`` stays False.
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT), *,
               exit_at_once: bool = False, say: Callable[[str], None] = _print):
    self._signals = tuple(signals)
    self._exit_at_once = exit_at_once
    self._say = say
    self._event = threading.Event()
    self._lock = threading.Lock()
    self._handled = 0  # Signals whose Python handler ran (main thread).
    self.signum: int | None = None  # The first stop signal.
    self._previous: dict[int, object] = {}
    self._previous_fd = -1
    self._sockets: tuple[socket.socket, socket.socket] | None = None
    self._watcher: threading.Thread | None = None

  def asked(self) -> bool:
    return self._event.is_set()

  def _ask(self, signum: int) -> None:
    with self._lock:
      if self.signum is None:
        self.signum = signum
      self._event.set()

  def _handle(self, signum, frame):  # The main thread, between two bytecodes.
    self._ask(signum)
    self._handled += 1
    if self._handled > 1 and not self._exit_at_once:
      self._restore()
      signal.raise_signal(signum)  # Its previous handler runs when this one returns.

  def _watch(self, reader: socket.socket) -> None:
    """Reads the signal numbers the C-level handler writes, however busy the main thread."""
    seen = 0
    while data := reader.recv(64):  # b'' once the context closed the other end.
      for signum in data:
        if signum not in self._signals:
          continue
        seen += 1
        self._ask(signum)
        name = signal_name(signum)
        if seen == 1:
          self._say(f'{name}: stopping at the next safe point, within seconds, once the state '
                    'is saved (a second signal stops at once, losing the steps trained since '
                    'the last saved state).')
        elif self._exit_at_once:
          self._say(f'stopped at once on a second {name}: rerun the same command to resume '
                    'from the last saved state.')
          sys.stderr.flush()
          os._exit(exit_status(signum))  # pylint: disable=protected-access

  def __enter__(self) -> StopOnSignal:
    if threading.current_thread() is not threading.main_thread():
      return self
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # The C handler must never block on it.
    self._sockets = reader, writer
    self._watcher = threading.Thread(target=self._watch, args=(reader,), daemon=True,
                                     name='StopOnSignal')
    self._watcher.start()
    self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    self._previous = {s: signal.signal(s, self._handle) for s in self._signals}
    return self

  def _restore(self) -> None:
    """The handlers (and wakeup file) from before the context; idempotent."""
    for signum, previous in self._previous.items():
      signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    self._previous = {}
    if self._sockets is not None:
      signal.set_wakeup_fd(self._previous_fd)

  def __exit__(self, *exc) -> None:
    if self._sockets is None:
      return
    self._restore()
    reader, writer = self._sockets
    self._sockets = None
    writer.close()  # Ends the watcher's read.
    self._watcher.join()
    reader.close()


class Pacer:
  """Steps per training call: as many as ``seconds`` take at the pace of the last timed call, so
  that a stop or a due state waits about that long at most, however long an epoch is, while
  each call's dispatch and host sync stay a small share of it.

  One step until a call has been timed; then at most ``growth`` times the steps of the last
  timed call. A call shorter than the current length (cut at a recording) that took under half
  of ``seconds`` is not timed: its fixed costs would make the pace look slower than it is.

  Example:
    >>> pacer = Pacer(seconds=2.0)
    >>> pacer.steps
    1
    >>> pacer.timed(steps=1, seconds=0.01)  # 200 would take 2 s; 8 at most after one.
    8
  """

  def __init__(self, seconds: float | None = None, growth: int = CHUNK_GROWTH):
    self.seconds = CHUNK_SECONDS if seconds is None else seconds
    self.growth = growth
    self.steps = 1

  def timed(self, steps: int, seconds: float) -> int:
    """A call of ``steps`` steps took ``seconds``: returns the steps per call from here on."""
    if steps <= 0 or (steps < self.steps and seconds < self.seconds / 2):
      return self.steps
    fit = int(self.seconds * steps / max(seconds, 1e-9))
    self.steps = max(1, min(fit, self.growth * steps))
    return self.steps
