"""Writing a trajectories store through Orbax: one cohort's records and resumable state.

Each cohort writes under ``cohort_dir(workdir, index)``:

* ``records/<t>/`` — one Orbax checkpoint per recording time index ``t``: the members'
  eval-mode probabilities on both probe sets and their metrics (``RECORD_KEYS``);
* ``state/<step>/`` — the latest resumable state (any pytree), under its training step,
  committed only after every record before it. An older state is deleted only once a newer
  one is committed: a run killed while saving (a second Ctrl-C, SIGKILL) leaves the last
  committed state, never none.

Orbax commits each step directory atomically (written under a temporary name, then renamed),
so a reader never sees a half-written step. The writer knows nothing of the trainer: it takes
arrays and pytrees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from ensembles.store.format import (RECORD_ITEM, RECORD_KEYS, SPLITS, STATE_ITEM, STORAGE_DTYPES,
                                    StoreError)


class CohortWriter:
  """Writes one cohort's records and resumable state through Orbax."""

  def __init__(self, directory: str, dtype: str, num_members: int):
    if dtype not in STORAGE_DTYPES:
      raise StoreError(f'{directory}: storage dtype {dtype!r}; accepted {STORAGE_DTYPES}.')
    self._directory = directory
    self._dtype = np.dtype(dtype)
    self._rows = slice(0, num_members)  # Padding members beyond are not recorded.
    # A killed run leaves unfinished step directories under temporary names: never read,
    # removed here before writing again.
    # Across hosts, each manager needs barriers of its own (they are keyed by step).
    barriers = lambda name: ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=f'{os.path.basename(directory)}-{name}')
    self._records = ocp.CheckpointManager(
        os.path.join(directory, 'records'), item_names=(RECORD_ITEM,),
        options=ocp.CheckpointManagerOptions(
            cleanup_tmp_directories=True, multiprocessing_options=barriers('records')))
    # Not Orbax's max_to_keep, which deletes older states from its own thread on rules of its
    # own: this writer deletes them itself, once a newer one is committed on disk.
    self._state = ocp.CheckpointManager(
        os.path.join(directory, 'state'), item_names=(STATE_ITEM,),
        options=ocp.CheckpointManagerOptions(
            cleanup_tmp_directories=True, multiprocessing_options=barriers('state')))

  def recorded(self) -> set[int]:
    return set(self._records.all_steps())

  def latest_state_step(self) -> int | None:
    """The key of the latest state: its training step (stores written before states were
    keyed by step: its recording index; resuming reads the step from the state itself)."""
    return self._state.latest_step()

  def write_record(self, index: int, record: Mapping[str, Any]) -> None:
    """Saves the record of recording time ``index`` (asynchronously).

    Args:
      index: the recording time's index in the sweep's grid.
      record: every array of ``RECORD_KEYS`` (NumPy or global JAX arrays, possibly spread
        over hosts), member axis first (``step``: a scalar); rows past the cohort's members
        (padding) are dropped and probabilities are stored in the store's dtype. The arrays
        must stay valid until the write ends (copy buffers that will be donated).
    """
    keys = set(record)
    if keys != set(RECORD_KEYS):
      raise StoreError(f'record {index} of {self._directory}: arrays {sorted(keys)}; '
                       f'a record holds exactly {sorted(RECORD_KEYS)}.')
    rows = self._rows
    arrays = {k: v if k == 'step' else v[rows] for k, v in record.items()}
    for split in SPLITS:
      arrays[f'{split}_probs'] = arrays[f'{split}_probs'].astype(self._dtype)
    self._records.save(index, args=ocp.args.Composite(
        **{RECORD_ITEM: ocp.args.StandardSave(arrays)}))

  def write_state(self, step: int, state: Any) -> None:
    """Saves the resumable ``state`` (a pytree) under its training ``step`` (asynchronously).

    Waits for the records' pending writes first: resuming starts after the latest state, so
    a state on disk must imply every record up to its time is (a kill between the two
    commits would otherwise lose that record for good).
    """
    self._records.wait_until_finished()
    self._keep_latest_state()
    self._state.save(step, args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardSave(state)}))

  def _keep_latest_state(self) -> None:
    """Waits for the pending state write, then deletes every state but the latest committed
    one (read from disk: a write that failed left none)."""
    self._state.wait_until_finished()
    self._state.reload()
    for step in sorted(self._state.all_steps())[:-1]:
      self._state.delete(step)

  def restore_state(self, key: int, target: Any) -> Any:
    """Restores the state saved under ``key`` onto ``target`` (a pytree of arrays or
    ``jax.ShapeDtypeStruct``s: their shapes, dtypes and shardings)."""
    restored = self._state.restore(key, args=ocp.args.Composite(
        **{STATE_ITEM: ocp.args.StandardRestore(target)}))
    return restored[STATE_ITEM]

  def close(self) -> None:
    """Waits for pending writes, keeps the latest state alone, and closes the managers."""
    self._records.wait_until_finished()
    self._keep_latest_state()
    for manager in (self._records, self._state):
      manager.close()
