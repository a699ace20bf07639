"""The workdir of a training run: held by one run at a time, holding one sweep, resumable.

* ``hold(workdir)``: an exclusive lock on the directory while a run trains into it;
* ``prepare(workdir, manifest, overwrite)``: refuses a workdir that holds another sweep (or
  files that are not a store), empties it for ``overwrite``, writes ``sweep.json``;
* ``resume_index(...)``: where a cohort continues from its saved state, refusing a store whose
  records before that state were removed since.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ensembles import store
from ensembles.training import multihost
from ensembles.training.sweep import ConfigError

# flock errors of a filesystem without (working) locks, e.g. NFS without a lock daemon.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
# Manifest fields that identify a sweep: a workdir whose sweep.json differs in one is another
# sweep.
_IDENTITY = ('members', 'epochs', 'probes', 'record')


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds ``workdir`` while training: another run into it gets a ``ConfigError``.

  Process 0 takes an exclusive ``flock`` on the directory itself (creating it if needed; no
  file is added), without waiting: two runs into one store would write the same records and
  states, and an ``overwrite`` would delete a running one's trajectories. The kernel releases
  the lock when the process ends, however it ends, so a killed run can be resumed at once.
  Locks are per machine (and per shared filesystem whose locks work). Every process raises
  the same error.
  """
  held, problem = None, ''
  if multihost.is_leader():
    try:
      os.makedirs(workdir, exist_ok=True)
      held = os.open(workdir, os.O_RDONLY)
      fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      problem = (f'workdir {workdir!r} is in use by another training run (it holds the '
                 "directory's lock). Wait for that run to end or stop it, then rerun to "
                 'resume; or use another workdir.')
    except OSError as e:
      if held is not None and e.errno in _NO_LOCKS:
        warnings.warn(f'workdir {workdir!r}: its filesystem has no working locks ({e}); '
                      'training goes on, but nothing stops a second run into it.', stacklevel=3)
      else:
        problem = (f'workdir {workdir!r} cannot be written ({e}); give a writable directory '
                   'with free space.')
  if multihost.leader_failed(bool(problem)) and not problem:
    problem = f'workdir {workdir!r} cannot be held by process 0 (its error says why).'
  try:
    if problem:
      raise ConfigError(problem)
    yield
  finally:
    if held is not None:
      os.close(held)  # Releases the lock.


def empty_directory(directory: str) -> None:
  """Deletes what ``directory`` holds, keeping the (locked) directory itself."""
  for entry in os.scandir(directory):
    if entry.is_dir(follow_symlinks=False):
      shutil.rmtree(entry.path)
    else:
      os.unlink(entry.path)


def prepare(workdir: str, manifest: dict[str, Any], overwrite: bool) -> None:
  """Refuses a workdir that holds another sweep, unless ``overwrite``; writes sweep.json.

  Every process checks (and raises the same error); only process 0 writes.
  """
  leader = multihost.is_leader()
  if overwrite and os.path.isdir(workdir) and leader:
    empty_directory(workdir)
  multihost.sync('overwrite')
  fresh = True
  if store.has_manifest(workdir):
    stored = store.read_manifest(workdir)
    if any(stored.get(k) != manifest[k] for k in _IDENTITY):
      raise ConfigError(
          f'workdir {workdir!r} holds a different sweep (its sweep.json lists other members, '
          'recording grid or probes). Use a new workdir, or pass overwrite=True '
          '(--overwrite) to delete the stored trajectories.')
    fresh = False
  elif os.path.isdir(workdir) and os.listdir(workdir):
    raise ConfigError(
        f'workdir {workdir!r} is not empty and holds no sweep.json: refusing to write into it. '
        'Use a new or empty workdir, or pass overwrite=True (--overwrite).')
  multihost.sync('checked')  # Every process has looked before process 0 writes.
  if fresh and leader:
    try:
      store.write_manifest(workdir, manifest)
    except OSError as e:
      raise ConfigError(f'workdir {workdir!r} cannot be written ({e}); give a writable '
                        'directory with free space.') from e
  multihost.sync('manifest')


def resume_index(steps: np.ndarray, position: int, recorded: set[int], where: str,
                 records_dir: str) -> int:
  """The first recording index to train towards from a state saved at step ``position``.

  A state implies every record before its step (the writer commits those first); if some were
  removed since, resuming cannot record them again.

  Raises:
    StoreError: records before the state are missing (naming them, the path and the remedies).
  """
  first = int(np.searchsorted(steps, position, side='right'))
  lost = sorted(set(range(first)) - recorded)
  if lost:
    raise store.StoreError(
        f'{where}: recording steps {lost} are missing from {records_dir}, and its saved state '
        f'is at training step {position}, past them, so resuming cannot record them again. '
        'Rerun with --overwrite (train_and_record(..., overwrite=True)) to train the sweep '
        'again, or read the rest with load_trajectories(workdir, allow_partial=True).')
  return first
