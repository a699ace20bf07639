"""Several stores read as one, for mapping them jointly: ``load_trajectories([a, b])``.

Points of different stores can share one map only if they are predictions on the same samples
with the same classes: the probe labels of every shared split must agree, and so must the
probes' dataset indices and input digests wherever both stores know them. The stores' members
follow one another (each member's hparams gain a ``store`` key), and their recording grids
merge into one: the union of their times, in one unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ensembles.store.format import STORE_KEY, StoreError
from ensembles.store.reader import Trajectories


def _first_probe_difference(a: Trajectories, b: Trajectories, split: str) -> str | None:
  """The first difference between two stores' probes on ``split`` (None: the same samples)."""
  for what, x, y in (('labels', a.labels(split), b.labels(split)),
                     ('dataset indices', a.probe_indices(split), b.probe_indices(split))):
    if x is None or y is None:
      continue
    if len(x) != len(y):
      return f'{split!r} probes: {len(x)} vs {len(y)} samples'
    differ = np.flatnonzero(np.asarray(x) != np.asarray(y))
    if len(differ):
      i = int(differ[0])
      return f'{split!r} probe {i}: {what} {x[i]} vs {y[i]}'
  x, y = (t.probe_inputs_sha256.get(split) for t in (a, b))
  if x is not None and y is not None and x != y:
    return f'{split!r} probes: input digests {x[:12]}... vs {y[:12]}...'
  return None


class JointTrajectories(Trajectories):
  """Stores mapped as one; see ``Trajectories`` for the attributes.

  Args:
    parts: the opened stores.
    names: one name per store (its ``store`` hparam).

  Raises:
    StoreError: stores that cannot share a map (classes, time unit or probes differ; the
      message names the first difference).
  """

  def __init__(self, parts: Sequence[Trajectories], names: Sequence[str]):
    if len(parts) != len(names) or len(set(names)) != len(names):
      raise ValueError(f'one distinct name per store: {list(names)} for {len(parts)} stores.')
    first, first_name = parts[0], names[0]
    splits = [s for s in first.splits if all(s in p.splits for p in parts)]
    if not splits:
      raise StoreError(f'stores {list(names)} share no probe split '
                       f'({[p.splits for p in parts]}): nothing to map jointly.')
    for part, name in zip(parts[1:], names[1:]):
      pair = f'stores {first_name!r} and {name!r}'
      if part.num_classes != first.num_classes:
        raise StoreError(f'{pair} cannot be mapped jointly: {first.num_classes} vs '
                         f'{part.num_classes} classes.')
      if part.time_unit != first.time_unit:
        raise StoreError(f'{pair} cannot be mapped jointly: times in {first.time_unit}s vs '
                         f'{part.time_unit}s (write epochs for every checkpoint).')
      for split in splits:
        difference = _first_probe_difference(first, part, split)
        if difference:
          raise StoreError(f'{pair} cannot be mapped jointly: their probes are not the same '
                           f'samples ({difference}).')
    self._parts = list(parts)
    self.workdir = first.workdir
    self.splits = tuple(splits)
    self.num_classes = first.num_classes
    self.time_unit = first.time_unit
    self.members = [dict(hp, **{STORE_KEY: name}) for part, name in zip(parts, names)
                    for hp in part.members]
    self.epochs = np.unique(np.concatenate([p.epochs for p in parts]))
    self._labels = {s: first.labels(s) for s in splits}
    self._indices = {s: next((p.probe_indices(s) for p in parts
                              if p.probe_indices(s) is not None), None) for s in splits}
    self.probe_inputs_sha256 = {s: next((p.probe_inputs_sha256[s] for p in parts
                                         if p.probe_inputs_sha256.get(s)), None)
                                for s in splits}
    # Each part's members and times in the joint grid.
    self._offsets = np.cumsum([0] + [len(p.members) for p in parts])
    self._times = [np.searchsorted(self.epochs, p.epochs) for p in parts]
    shape = (len(self.members), len(self.epochs))
    self.steps = np.full(shape, -1, np.int64)
    self.recorded = np.zeros(shape, bool)
    self.metrics = {k: np.full(shape, np.nan, np.float32) for k in
                    sorted({k for p in parts for k in p.metrics})}
    self._cohorts = {}
    for p, part in enumerate(parts):
      rows = slice(self._offsets[p], self._offsets[p + 1])
      self.steps[rows, self._times[p]] = part.steps
      self.recorded[rows, self._times[p]] = part.recorded
      for k, values in part.metrics.items():
        self.metrics[k][rows, self._times[p]] = values
      for members in part._cohorts.values():  # pylint: disable=protected-access
        self._cohorts[len(self._cohorts)] = members + self._offsets[p]
    self.diverged_at = np.concatenate([p.diverged_at for p in parts])
    self.status = [s for p in parts for s in p.status]
    self.missing = [m for p in parts for m in p.missing]
    self._probs = {}

  def _read_into(self, out, split, members_P, times_P) -> None:
    part_P = np.searchsorted(self._offsets, members_P, side='right') - 1
    for p in np.unique(part_P).tolist():
      here = np.flatnonzero(part_P == p)
      local_times_P = np.searchsorted(self._times[p], times_P[here])
      out[here] = self._parts[p].read_points(split, members_P[here] - self._offsets[p],
                                             local_times_P)
