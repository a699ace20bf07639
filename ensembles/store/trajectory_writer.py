"""``TrajectoryWriter``: record prediction trajectories from any training loop (NumPy in).

    members = [dict(lr=0.1, seed=s) for s in range(4)]
    with TrajectoryWriter(workdir, members, labels={'train': y_train, 'test': y_test},
                          num_classes=10) as writer:
      ...  # in the training loop, at each checkpoint of member m:
      writer.write(m, step, 'train', probs_NxC, epoch=epoch)

The store it writes (format 2, ``ensembles.store.members``) opens with ``load_trajectories``
like a trainer-written one. Needs NumPy and TensorStore only: no JAX, Flax or TFDS, so a
PyTorch script can call it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorstore as ts

from ensembles.store import members as layout
from ensembles.store.format import (MEMBERS_FORMAT_VERSION, SWEEP_FILE, STORAGE_DTYPES,
                                    StoreError, has_manifest, read_manifest, write_manifest)

# What ``write`` is given: probabilities, their natural logs, or unnormalised scores.
KINDS = ('probs', 'log_probs', 'logits')
# Largest |sum - 1| of a row of probabilities (or of exp(log-probabilities)) accepted: float16
# rounding of 10-100 classes stays well inside, a forgotten softmax or a wrong axis does not.
SUM_TOLERANCE = 1e-3
# Rows an array first gets room for (it doubles when full); unwritten rows cost nothing.
MIN_ROWS = 16


class RejectedValues(StoreError):
  """Values of one member that ``write`` refuses (``member``: its index); nothing of that call
  was written."""

  def __init__(self, message: str, member: int):
    super().__init__(message)
    self.member = member


class MemberLocked(StoreError):
  """A member that another process is writing."""


def _digest_probes(inputs: Any) -> str:
  """sha256 of an array's dtype, shape and bytes (C order)."""
  array = np.ascontiguousarray(inputs)
  digest = hashlib.sha256(f'{array.dtype.str}{array.shape}'.encode())
  digest.update(array.tobytes())
  return digest.hexdigest()


def _first_difference(a: Any, b: Any, path: str = '') -> str | None:
  """Where two JSON values first differ (``members[3]['lr']``), None when equal."""
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b), key=str):
      if key not in a or key not in b:
        return f'{path}[{key!r}] (present in one only)'
      found = _first_difference(a[key], b[key], f'{path}[{key!r}]')
      if found:
        return found
    return None
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return f'{path} (length {len(a)} vs {len(b)})'
    for i, (x, y) in enumerate(zip(a, b)):
      found = _first_difference(x, y, f'{path}[{i}]')
      if found:
        return found
    return None
  return None if a == b else f'{path} ({a!r} vs {b!r})'


def _manifest(members: Any, labels: Any, num_classes: Any, probe_indices: Any,
              probe_inputs: Any, dtype: str) -> dict[str, Any]:
  """The manifest of a new store, every argument checked."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 2:
    raise StoreError(f'num_classes={num_classes!r}: an integer >= 2.')
  num_classes = int(num_classes)
  if dtype not in STORAGE_DTYPES:
    raise StoreError(f'dtype={dtype!r}: accepted {STORAGE_DTYPES}.')
  if not isinstance(members, Sequence) or isinstance(members, (str, bytes)) or not members:
    raise StoreError('members: a non-empty list with one dict of hyperparameters per member.')
  for m, hparams in enumerate(members):
    if not isinstance(hparams, Mapping) or not all(isinstance(k, str) for k in hparams):
      raise StoreError(f'members[{m}] is {hparams!r}: a dict with string keys.')
    try:
      json.dumps(dict(hparams), allow_nan=False)
    except (TypeError, ValueError) as e:
      raise StoreError(f'members[{m}] is not JSON (numbers, strings, bools, None, lists): '
                       f'{e}.') from None
  if not isinstance(labels, Mapping) or not labels:
    raise StoreError("labels: a dict of split name -> (N,) integer probe labels, e.g. "
                     "{'train': y_train, 'test': y_test}.")
  splits = {}
  for split, y in labels.items():
    if not isinstance(split, str) or not layout.SPLIT_NAME.fullmatch(split):
      raise StoreError(f'split name {split!r}: letters, digits and _, starting with a letter.')
    y = np.asarray(y)
    if y.ndim != 1 or not len(y) or not np.issubdtype(y.dtype, np.integer):
      raise StoreError(f"labels[{split!r}]: shape {y.shape}, dtype {y.dtype}; a non-empty "
                       '(N,) integer array.')
    if y.min() < 0 or y.max() >= num_classes:
      raise StoreError(f'labels[{split!r}] holds {int(y.min())}..{int(y.max())}; classes '
                       f'are 0..{num_classes - 1} (num_classes={num_classes}).')
    splits[split] = dict(labels=y.tolist(), indices=None, inputs_sha256=None)
  for name, given, convert in (('probe_indices', probe_indices, lambda x: np.asarray(x).tolist()),
                               ('probe_inputs', probe_inputs, _digest_probes)):
    for split, value in (given or {}).items():
      if split not in splits:
        raise StoreError(f'{name}[{split!r}]: not a split of labels ({sorted(splits)}).')
      if name == 'probe_indices' and np.shape(value) != (len(splits[split]['labels']),):
        raise StoreError(f'{name}[{split!r}]: shape {np.shape(value)}; one index per probe, '
                         f'({len(splits[split]["labels"])},).')
      if name == 'probe_inputs' and np.shape(value)[:1] != (len(splits[split]['labels']),):
        raise StoreError(f'{name}[{split!r}]: shape {np.shape(value)}; the probes themselves, '
                         f'first axis N = {len(splits[split]["labels"])}.')
      splits[split]['indices' if name == 'probe_indices' else 'inputs_sha256'] = convert(value)
  return dict(members=[dict(hp) for hp in members], num_classes=num_classes, dtype=dtype,
              splits=splits, writer='ensembles.store.TrajectoryWriter')


def _to_probs(values_MxNxC: np.ndarray, kind: str, members: Sequence[int], where: str
              ) -> np.ndarray:
  """(M, N, C) float64 probabilities from ``kind`` values of ``members``; else a
  ``RejectedValues`` naming the member, ``where`` (split, step), the probe and the class."""
  def fail(row: int, probe: int, what: str) -> None:
    raise RejectedValues(f'member {members[row]}, {where}, probe {probe}: {what}', members[row])

  def first(bad: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(bad)[0])

  x = values_MxNxC
  finite = 'finite or -inf' if kind == 'log_probs' else 'finite'
  bad = np.isnan(x) | (x == np.inf) if kind == 'log_probs' else ~np.isfinite(x)
  if bad.any():
    m, n, c = first(bad)
    fail(m, n, f'class {c} is {x[m, n, c]} ({kind} must be {finite}).')
  if kind == 'logits':
    probs = np.exp(x - x.max(axis=-1, keepdims=True))
    return probs / probs.sum(axis=-1, keepdims=True)
  if kind == 'probs':
    if (x < 0).any():
      m, n, c = first(x < 0)
      looks_like_logs = (x <= 0).all() and np.allclose(np.exp(x).sum(-1), 1, atol=SUM_TOLERANCE)
      hint = ("these look like log-probabilities: pass kind='log_probs'" if looks_like_logs
              else "unnormalised scores? pass kind='logits'")
      fail(m, n, f'class {c} is {x[m, n, c]:.6g}; probabilities are in [0, 1] ({hint}).')
    probs = x
  else:
    if (x > SUM_TOLERANCE).any():
      m, n, c = first(x > SUM_TOLERANCE)
      fail(m, n, f'class {c} is {x[m, n, c]:.6g}; log-probabilities are <= 0 (pass '
           "kind='probs' for probabilities, kind='logits' for unnormalised scores).")
    probs = np.exp(x)
  off_MxN = np.abs(probs.sum(axis=-1) - 1)
  if (off_MxN > SUM_TOLERANCE).any():
    m, n = first(off_MxN > SUM_TOLERANCE)
    summed = 'exp of the log-probabilities' if kind == 'log_probs' else 'probabilities'
    fail(m, n, f'the {summed} sum to {probs[m, n].sum():.6g}; |sum - 1| must be <= '
         f"{SUM_TOLERANCE} (unnormalised scores? pass kind='logits').")
  return probs


class _Member:
  """The writer's view of one member: its lock, its committed entries, its open arrays."""

  def __init__(self, workdir: str, member: int):
    directory = layout.member_dir(workdir, member)
    os.makedirs(directory, exist_ok=True)
    self.lock = open(os.path.join(directory, layout.LOCK_FILE), 'a+')
    try:
      fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self.lock.close()
      raise MemberLocked(f'member {member} of {workdir} is being written by another process: '
                       'processes writing one store must write disjoint members.') from None
    path = layout.index_path(workdir, member)
    entries, committed = layout.read_index(path)
    self.index = open(path, 'ab')
    self.index.truncate(committed)  # A line torn by a killed writer is not committed: cut it.
    self.entries = {(e.split, e.step): e for e in entries}
    self.arrays: dict[str, ts.TensorStore] = {}

  def slots(self, split: str) -> int:
    return sum(split == s for s, _ in self.entries)

  def close(self) -> None:
    self.index.close()
    self.lock.close()  # Releases the flock.


class TrajectoryWriter:
  """Writes prediction trajectories, one checkpoint of one member at a time, into a store.

  A store is made of members (one dict of hyperparameters each), probe splits (each a fixed
  set of N labelled samples) and, per member and split, the (N, C) predicted probabilities at
  each checkpoint the training loop reports, under its step (and epoch, when given).

  Writing is crash-safe: each checkpoint is committed on its own, so a killed writer loses at
  most the checkpoint in flight, and a writer made again on the same workdir with the same
  arguments continues (writing a committed checkpoint again with the same values is a no-op).
  Several processes can write one store at once, each its own members: every process makes the
  writer with the same arguments; a member is locked by the process writing it.

  Args:
    workdir: the store's directory (made if absent).
    members: one dict of hyperparameters per member (string keys, JSON values); a member is
      its index in this list.
    labels: split name -> (N,) integer labels of that split's probes, e.g.
      ``{'train': y_train_probes, 'test': y_test_probes}``.
    num_classes: C.
    probe_indices: optional split -> (N,) indices of the probes in their dataset.
    probe_inputs: optional split -> the probe inputs themselves (any array, first axis N);
      only their sha256 is kept, so that stores of one probe set can be mapped jointly.
    dtype: storage dtype of probabilities, 'float32' or 'float16'.

  Raises:
    StoreError: a bad argument, or a workdir holding another store.
  """

  def __init__(self, workdir: str, members: Sequence[Mapping[str, Any]],
               labels: Mapping[str, Any], num_classes: int, *,
               probe_indices: Mapping[str, Any] | None = None,
               probe_inputs: Mapping[str, Any] | None = None, dtype: str = 'float32'):
    self.workdir = os.path.abspath(workdir)
    manifest = _manifest(members, labels, num_classes, probe_indices, probe_inputs, dtype)
    if not has_manifest(self.workdir):
      if os.path.isdir(self.workdir) and set(os.listdir(self.workdir)) - {layout.MEMBERS_DIR}:
        raise StoreError(f'{self.workdir} is not empty and holds no {SWEEP_FILE}: write a new '
                         'store into an empty or new directory.')
      write_manifest(self.workdir, manifest, version=MEMBERS_FORMAT_VERSION)
    stored = read_manifest(self.workdir)
    if stored.pop('format_version') != MEMBERS_FORMAT_VERSION:
      raise StoreError(f'{self.workdir} holds a store written by the trainer (format 1); '
                       'TrajectoryWriter writes into a new directory or a format 2 store.')
    stored['writer'] = manifest['writer']  # Any program may write format 2.
    difference = _first_difference(stored, manifest)
    if difference:
      raise StoreError(f'{self.workdir} holds another store: its {SWEEP_FILE} differs at '
                       f'{difference} (stored vs given). Use a new workdir, or the same '
                       'arguments to continue writing this store.')
    self._members_hp = manifest['members']
    self._labels = {s: np.asarray(v['labels'], np.int64) for s, v in manifest['splits'].items()}
    self._num_classes = manifest['num_classes']
    self._dtype = np.dtype(dtype).newbyteorder('<')
    self._open: dict[int, _Member] = {}
    self._closed = False

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self._labels)

  def _member_indices(self, member: Any) -> list[int]:
    num = len(self._members_hp)
    if member is None:
      return list(range(num))
    scalar = np.ndim(member) == 0
    indices = [member] if scalar else list(np.asarray(member).reshape(-1))
    for m in indices:
      if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) or \
          not 0 <= m < num:
        raise StoreError(f'member {m!r}: accepted an index 0..{num - 1} of the store\'s '
                         'members, a list of them, or None for all.')
    if len(set(indices)) != len(indices):
      raise StoreError(f'member {list(map(int, indices))} names a member twice.')
    return [int(m) for m in indices]

  def _member(self, m: int) -> _Member:
    if m not in self._open:
      self._open[m] = _Member(self.workdir, m)
    return self._open[m]

  def write(self, member: int | Sequence[int] | None, step: int, split: str, values: Any, *,
            epoch: float | None = None, kind: str = 'probs') -> None:
    """Records one checkpoint of one member (or of several) on one probe split.

    Args:
      member: a member's index, with ``values`` (N, C); or a list of indices, or None for all
        members, with ``values`` (members, N, C).
      step: the training step of the checkpoint (an integer >= 0): the checkpoint's identity.
      split: one of the store's splits (the keys of ``labels``).
      values: NumPy (or array-like) predictions on the split's N probes, in the order of its
        labels.
      epoch: the checkpoint's epoch (may be fractional), when known; a member gives it at
        every checkpoint or at none. The analysis puts checkpoints on an epoch axis when every
        member gives epochs, on a step axis otherwise.
      kind: what ``values`` are: 'probs' (rows sum to 1 within SUM_TOLERANCE), 'log_probs'
        (natural logs of those) or 'logits' (softmax is applied here). Never guessed.

    Raises:
      StoreError: a bad argument or value (which member, split, step, probe and class), or a
        checkpoint already written with other values; nothing is written then.
    """
    if self._closed:
      raise StoreError(f'the writer of {self.workdir} is closed.')
    if kind not in KINDS:
      raise StoreError(f'kind={kind!r}: accepted {KINDS} (said, never guessed).')
    if split not in self._labels:
      raise StoreError(f'split {split!r} is not one of the store\'s splits {self.splits} '
                       '(the keys of labels).')
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step < 0:
      raise StoreError(f'step={step!r}: an integer >= 0.')
    step = int(step)
    if epoch is not None:
      if isinstance(epoch, bool) or not isinstance(epoch, (int, float, np.number)) or \
          not math.isfinite(epoch) or epoch < 0:
        raise StoreError(f'epoch={epoch!r}: a finite number >= 0, or None.')
      epoch = float(epoch)
    indices = self._member_indices(member)
    block = member is None or np.ndim(member) > 0
    values = np.asarray(values)
    expected = ((len(indices),) if block else ()) + (len(self._labels[split]), self._num_classes)
    if values.shape != expected or not np.issubdtype(values.dtype, np.number):
      raise StoreError(
          f'values of split {split!r}, step {step}: shape {values.shape}, dtype {values.dtype};'
          f' expected numbers of shape {expected} ('
          f'{"members, " if block else ""}N = {len(self._labels[split])} probes, '
          f'C = {self._num_classes} classes).')
    stored_MxNxC = _to_probs(values.astype(np.float64).reshape((len(indices),) + expected[-2:]),
                             kind, indices, f'split {split!r}, step {step}').astype(self._dtype)
    todo = []
    for m, row_NxC in zip(indices, stored_MxNxC):
      entry = self._entry(m, split, step, epoch, row_NxC)
      if entry is not None:
        todo.append((m, entry, row_NxC))
    # Every chunk first (concurrently), then the index lines that commit them.
    writes = [self._array(m, split, e.slot + 1)[e.slot].write(row) for m, e, row in todo]
    for future in writes:
      future.result()
    for m, entry, _ in todo:
      state = self._member(m)
      state.index.write(layout.entry_line(entry).encode())
      state.index.flush()
      state.entries[(split, step)] = entry

  def _entry(self, m: int, split: str, step: int, epoch: float | None,
             row_NxC: np.ndarray) -> layout.Entry | None:
    """The index entry of a new checkpoint; None if it is already committed, same values."""
    state = self._member(m)
    digest = hashlib.sha256(row_NxC.tobytes()).hexdigest()
    where = f'member {m}, split {split!r}, step {step}'
    old = state.entries.get((split, step))
    if old is not None:
      if old.sha256 != digest or old.epoch != epoch:
        what = 'values' if old.sha256 != digest else f'epoch ({old.epoch} then {epoch})'
        raise RejectedValues(f'{where} was written before with other {what}: a checkpoint is '
                             'written once (the same values again are a no-op).', m)
      return None
    for other in state.entries.values():
      if (other.epoch is None) != (epoch is None):
        raise RejectedValues(f'{where}: epoch={epoch!r}, but step {other.step} of this member '
                             f'had epoch={other.epoch!r}: give epochs at every checkpoint of a '
                             'member or at none.', m)
      if other.split == split and epoch is not None and other.epoch == epoch:
        raise RejectedValues(f'{where}: epoch {epoch} is already step {other.step} of this '
                             'member on this split: two checkpoints cannot share an epoch.', m)
      if other.step == step and other.epoch != epoch:
        raise RejectedValues(f'{where}: epoch={epoch!r}, but split {other.split!r} has this '
                             f'step at epoch {other.epoch!r}.', m)
    labels_N = self._labels[split]
    p_label_N = row_NxC[np.arange(len(labels_N)), labels_N].astype(np.float64)
    return layout.Entry(
        split=split, slot=state.slots(split), step=step, epoch=epoch,
        loss=float(-np.log(np.maximum(p_label_N, np.finfo(np.float64).tiny)).mean()),
        accuracy=float((row_NxC.argmax(axis=-1) == labels_N).mean()), sha256=digest)

  def _array(self, m: int, split: str, rows: int) -> ts.TensorStore:
    """Member ``m``'s array of ``split``, made if absent, with at least ``rows`` rows."""
    state = self._member(m)
    if split not in state.arrays:  # The member is locked: nobody makes it meanwhile.
      create = None if layout.array_exists(self.workdir, m, split) else (
          len(self._labels[split]), self._num_classes, self._dtype.name)
      state.arrays[split] = ts.open(layout.array_spec(self.workdir, m, split, create)).result()
    capacity = state.arrays[split].shape[0]
    if capacity < rows:  # Doubled: rewriting the array's metadata at every checkpoint is slow.
      state.arrays[split] = state.arrays[split].resize(
          exclusive_max=[max(rows, 2 * capacity, MIN_ROWS), None, None],
          expand_only=True).result()
    return state.arrays[split]

  def close(self) -> None:
    """Closes the members' index files and releases their locks (every write is committed
    when ``write`` returns)."""
    for state in self._open.values():
      state.close()
    self._open.clear()
    self._closed = True

  def __enter__(self) -> TrajectoryWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __repr__(self) -> str:
    return (f'TrajectoryWriter({self.workdir!r}: {len(self._members_hp)} members, splits '
            f'{self.splits}, {self._num_classes} classes)')
