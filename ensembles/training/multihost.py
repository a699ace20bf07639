"""Process roles and cross-process agreement under ``jax.distributed`` (no-ops on one process).

Every process runs the same program; process 0 speaks and writes the files that only one
process may write. Decisions that each process would otherwise take from its own clock or its
own signals (stop, save a state, how long a training call spans) are agreed, so that every
process makes the same train calls and reaches the same Orbax barriers.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def is_leader() -> bool:
  """Whether this process speaks for all and writes the files only one process writes."""
  return jax.process_index() == 0


def say(message: str) -> None:
  """Progress goes to stdout (also in notebooks), apart from library logs; process 0 only."""
  if is_leader():
    print(message, flush=True)


def sync(name: str) -> None:
  """A barrier across processes (nothing on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'ensembles:{name}')


def leader_failed(failed: bool) -> bool:
  """Process 0's ``failed``, on every process (a check only process 0 can make)."""
  if jax.process_count() == 1:
    return failed
  return bool(multihost_utils.broadcast_one_to_all(np.int32(failed)))


def agree(stop: bool, due: bool, steps: int) -> tuple[bool, bool, int]:
  """(stop, state due, steps per call) decided alike on every process: a stop if any process
  was asked, process 0's clock for the rest. Every process's train calls, state saves (Orbax
  barriers) and stops must match, and each process measures its own time."""
  if jax.process_count() == 1:
    return stop, due, steps
  views = np.asarray(multihost_utils.process_allgather(np.array([stop, due, steps], np.int64)))
  return bool(views[:, 0].max()), bool(views[0, 1]), int(views[0, 2])
