"""Reading a store written member by member (format 2, ``TrajectoryWriter``).

Opening reads the manifest and every member's index (one small JSON-lines file each): never a
probability. The recording grid is the union of the members' checkpoint times, so members that
recorded at different steps share one grid, each recorded at its own times; a checkpoint counts
as recorded once every split has it. Probabilities are read by points, one Zarr chunk each,
all of a block's chunks at once (TensorStore reads them concurrently).
"""

from __future__ import annotations

import collections
import os
from typing import Any

import numpy as np
import tensorstore as ts

from ensembles.store import members as layout
from ensembles.store.format import STATUS_OK, StoreError
from ensembles.store.reader import Trajectories


class MemberTrajectories(Trajectories):
  """A store written by ``TrajectoryWriter``; see ``Trajectories`` for the attributes."""

  def __init__(self, workdir: str, manifest: dict[str, Any]):
    self.workdir = workdir
    self.members = manifest['members']
    self.num_classes = manifest['num_classes']
    self.splits = tuple(manifest['splits'])
    self._labels = {s: np.asarray(v['labels'], np.int64) for s, v in manifest['splits'].items()}
    self._indices = {s: None if v.get('indices') is None else np.asarray(v['indices'], np.int64)
                     for s, v in manifest['splits'].items()}
    self.probe_inputs_sha256 = {s: v.get('inputs_sha256')
                                for s, v in manifest['splits'].items()}
    num = len(self.members)
    index_E = [layout.read_index(layout.index_path(workdir, m))[0] for m in range(num)]
    # A checkpoint is a (member, step); it is complete once every split has it.
    complete_E = []
    for entries in index_E:
      splits_of = collections.Counter(e.step for e in entries)
      complete_E.append({e.step: e for e in entries if splits_of[e.step] == len(self.splits)})
    self.missing = sorted({(m, e.step) for m, entries in enumerate(index_E) for e in entries
                           if e.step not in complete_E[m]})
    with_epochs = [e.epoch is not None for done in complete_E for e in done.values()]
    self.time_unit = 'epoch' if with_epochs and all(with_epochs) else 'step'
    time = (lambda e: e.epoch) if self.time_unit == 'epoch' else (lambda e: float(e.step))
    self.epochs = np.asarray(sorted({time(e) for done in complete_E for e in done.values()}),
                             np.float64)
    shape = (num, len(self.epochs))
    self.steps = np.full(shape, -1, np.int64)
    self.recorded = np.zeros(shape, bool)
    self.metrics = {f'{s}_{k}': np.full(shape, np.nan, np.float32)
                    for s in self.splits for k in ('loss', 'accuracy')}
    self._slots = {s: np.full(shape, -1, np.int64) for s in self.splits}
    for m, entries in enumerate(index_E):
      for e in entries:
        if e.step not in complete_E[m]:
          continue
        t = int(np.searchsorted(self.epochs, time(e)))
        self.recorded[m, t] = True
        self.steps[m, t] = e.step
        self._slots[e.split][m, t] = e.slot
        self.metrics[f'{e.split}_loss'][m, t] = e.loss
        self.metrics[f'{e.split}_accuracy'][m, t] = e.accuracy
    self.diverged_at = np.full((num,), -1, np.int64)
    self.status = [STATUS_OK] * num
    self._cohorts = {0: np.arange(num)}
    self._arrays: dict[tuple[int, str], ts.TensorStore] = {}
    self._probs: dict[str, np.ndarray] = {}

  def _read_into(self, out, split, members_P, times_P) -> None:
    slots_P = self._slots[split][members_P, times_P]
    members = np.unique(members_P).tolist()
    opening = {m: ts.open(layout.array_spec(self.workdir, m, split), read=True)
               for m in members if (m, split) not in self._arrays}
    for m, future in opening.items():
      try:
        self._arrays[m, split] = future.result()
      except Exception as e:  # TensorStore raises ValueError and others on a missing array.
        raise StoreError(f'member {m}: {os.path.join(layout.member_dir(self.workdir, m), split)}'
                         f'.zarr cannot be opened: {e}') from e
    reads = {}
    for m in members:
      here = np.flatnonzero(members_P == m)
      reads[m] = here, self._arrays[m, split][slots_P[here]].read()
    for m, (here, future) in reads.items():
      out[here] = future.result()
