"""Importing prediction trajectories saved as arrays (NumPy, HDF5, Zarr) into a store.

    import_arrays('/tmp/imported',
                  probs={'train': 'run.h5:/probs/train', 'test': 'run.h5:/probs/test'},
                  labels={'train': 'labels.npz:train', 'test': 'labels.npz:test'},
                  members='hparams.csv', epochs=[0, 1, 2, 5, 10], kind='log_probs')

An array is named by a path, and inside an .npz, HDF5 file or Zarr group by a key after a colon
(``PATH[:KEY]``). Each split's predictions are one (members, T, N, C) array, or one (T, N, C)
array per member: a path holding ``{m}`` (``runs/{m}/train.npy``, ``{m:03d}`` too) or a list of
paths. They are read a block of members at a time (.npy memory-mapped, .npz streamed, HDF5 and
Zarr by slices), a block being at most ``block_bytes`` (at least one member), so an import's
memory does not grow with the sweep. A checkpoint whose predictions are all NaN (one the member
did not record) is skipped and counted.

Everything is checked before a byte is written: the files, keys, shapes, the hyperparameter
table, the grid of steps or epochs. The store is written into ``<workdir>.importing`` and renamed
to ``workdir`` at the end, so a bad value met on the way (a negative probability in member 900)
leaves nothing behind, and an interrupted import continues when run again. No pickle is ever
loaded (docs/IMPORT.md shows how to turn pickles into arrays). Needs NumPy and TensorStore, and
h5py for HDF5 (``pip install 'ensembles[hdf5]'``): no JAX.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorstore as ts

from ensembles.store import members as layout
from ensembles.store.format import StoreError
from ensembles.store.trajectory_writer import (KINDS, MemberLocked, RejectedValues,
                                               TrajectoryWriter)

DOCS = 'docs/IMPORT.md'
# Suffixes of pickles (torch.save, joblib too): refused, never opened.
PICKLE_SUFFIXES = ('.pkl', '.pickle', '.pt', '.pth', '.ckpt', '.joblib')
HDF5_SUFFIXES = ('.h5', '.hdf5', '.hdf', '.he5')
# Text arrays, for labels, steps and epochs only (one value per line, or comma-separated).
TEXT_SUFFIXES = ('.txt', '.csv', '.tsv')
# Bytes of predictions read at once: a block of members, whose chunks the writer writes
# concurrently (several times faster than one member at a time), small for a laptop.
BLOCK_BYTES = 128 * 2**20
# Where an import is written before it is renamed to the workdir.
STAGING_SUFFIX = '.importing'
ACCEPTED = ('.npy, .npz, HDF5 (.h5, .hdf5; needs h5py) or Zarr v2/v3 (a directory), '
            'named PATH or PATH:KEY')


class ImportSummary(NamedTuple):
  """What ``import_arrays`` wrote.

  Attributes:
    workdir: the new store.
    members: how many members.
    splits: the probe splits.
    checkpoints: (member, checkpoint) pairs written, each on every split.
    unrecorded: checkpoints skipped because they are NaN on every split.
    partial: checkpoints skipped because they are NaN on some splits only.
    resumed: whether an interrupted import of the same arrays was continued.
  """
  workdir: str
  members: int
  splits: tuple[str, ...]
  checkpoints: int
  unrecorded: int
  partial: int
  resumed: bool

  def lines(self) -> list[str]:
    out = [f'Imported {self.checkpoints} checkpoints of {self.members} members (splits: '
           f'{", ".join(self.splits)}) into {self.workdir}.']
    if self.resumed:
      out.insert(0, f'Continued the interrupted import in {self.workdir}{STAGING_SUFFIX}.')
    if self.unrecorded or self.partial:
      out.append(f'Skipped {self.unrecorded + self.partial} checkpoints: {self.unrecorded} NaN '
                 f'on every split (not recorded), {self.partial} NaN on some splits only.')
    return out


class _Array(NamedTuple):
  """An opened array: its shape and dtype, ``read(i)`` its i-th row (``read(None)``: all)."""
  where: str
  shape: tuple[int, ...]
  dtype: np.dtype
  read: Callable[[int | None], np.ndarray]
  close: Callable[[], None]


def _pickle_error(where: str, detail: str) -> StoreError:
  return StoreError(f'{where}: {detail}; pickles are never loaded here (loading one can run '
                    f'code). Save the arrays with np.save on your side: {DOCS}, "From pickles".')


def _parse_spec(spec: str) -> tuple[str, str | None] | None:
  """(path, key) of ``PATH[:KEY]``: the longest prefix before a colon that exists is the path;
  None when none exists."""
  if os.path.exists(spec):
    return spec, None
  for i in reversed([i for i, c in enumerate(spec) if c == ':']):
    if os.path.exists(spec[:i]):
      return spec[:i], spec[i + 1:] or None
  return None


def _split_spec(spec: str, what: str) -> tuple[str, str | None]:
  """``_parse_spec``, or an error naming the missing file."""
  found = _parse_spec(spec)
  if found is not None:
    return found
  path = spec.rsplit(':', 1)[0] if ':' in spec else spec
  if path.lower().endswith(PICKLE_SUFFIXES):
    raise _pickle_error(f'{what}: {path}', 'a pickle')
  raise StoreError(f'{what}: no such file or directory: {path}' +
                   (f' (from {spec!r}, read as PATH:KEY)' if ':' in spec else '') + '.')


def _format_of(path: str, what: str) -> str:
  """'npy', 'npz', 'hdf5', 'zarr' or 'text', by suffix, else by the file's first bytes."""
  suffix = os.path.splitext(path.rstrip('/'))[1].lower()
  if suffix in PICKLE_SUFFIXES:
    raise _pickle_error(f'{what}: {path}', f'a pickle ({suffix})')
  if os.path.isdir(path):
    return 'zarr'
  by_suffix = {'.npy': 'npy', '.npz': 'npz', **dict.fromkeys(HDF5_SUFFIXES, 'hdf5'),
               **dict.fromkeys(TEXT_SUFFIXES, 'text')}
  if suffix in by_suffix:
    return by_suffix[suffix]
  with open(path, 'rb') as f:
    magic = f.read(8)
  for prefix, fmt in ((b'\x93NUMPY', 'npy'), (b'PK', 'npz'), (b'\x89HDF', 'hdf5')):
    if magic.startswith(prefix):
      return fmt
  if magic[:1] == b'\x80':  # A pickle's PROTO opcode.
    raise _pickle_error(f'{what}: {path}', 'a pickle')
  raise StoreError(f'{what}: {path}: not an array file this reads; accepted {ACCEPTED}.')


def _one_of(names: list[str], key: str | None, where: str, what: str, kind: str) -> str:
  """``key``, checked against the ``names`` a file holds; the only one when ``key`` is None."""
  if key is None and len(names) == 1:
    return names[0]
  if key is None or key not in names:
    given = 'no key given' if key is None else f'no {kind} {key!r}'
    raise StoreError(f'{what}: {where}: {given}; it holds {sorted(names) or "none"} '
                     f'(name one as PATH:KEY).')
  return key


def _open_npz(path: str, key: str | None, what: str) -> _Array:
  """An array of an .npz, streamed: rows in order, each read once (a zip entry is a stream)."""
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise StoreError(f'{what}: {path}: not an .npz (a zip of .npy files): {e}.') from None
  try:
    return _npz_array(archive, path, key, what)
  except StoreError:
    archive.close()
    raise


def _npz_array(archive: zipfile.ZipFile, path: str, key: str | None, what: str) -> _Array:
  names = [n[:-len('.npy')] for n in archive.namelist() if n.endswith('.npy')]
  key = _one_of(names, None if key is None else key.removesuffix('.npy'), path, what, 'array')
  stream = archive.open(f'{key}.npy')
  version = np.lib.format.read_magic(stream)
  read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                 (2, 0): np.lib.format.read_array_header_2_0}.get(version)
  if read_header is None:
    raise StoreError(f'{what}: {path}:{key}: .npy format version {version}; accepted 1.0, 2.0.')
  shape, fortran_order, dtype = read_header(stream)
  where = f'{path}:{key}'
  if dtype.hasobject:
    raise _pickle_error(f'{what}: {where}', f'dtype {dtype} holds Python objects')
  if fortran_order:  # Rows are not contiguous: read it whole (rare: np.save writes C order).
    whole = np.load(path, allow_pickle=False)[key]
    return _Array(where, whole.shape, whole.dtype,
                  lambda i: whole if i is None else whole[i], archive.close)
  next_row = [0]

  def read(i: int | None) -> np.ndarray:
    rows = shape[0] if i is None else 1
    if i is not None and i != next_row[0]:
      raise StoreError(f'{where}: row {i} asked after row {next_row[0] - 1}: an .npz array is '
                       'read front to back.')
    count = rows * math.prod(shape[1:])
    data = stream.read(count * dtype.itemsize)
    next_row[0] += rows
    out = np.frombuffer(data, dtype, count)
    return out.reshape(shape if i is None else shape[1:])

  return _Array(where, tuple(shape), dtype, read, archive.close)


def _open_hdf5(path: str, key: str | None, what: str) -> _Array:
  try:
    import h5py  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise StoreError(f"{what}: {path} is HDF5, which needs h5py: pip install "
                     "'ensembles[hdf5]'.") from None
  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise StoreError(f'{what}: {path}: not an HDF5 file h5py opens ({e}).') from None
  names = []
  f.visititems(lambda name, node: names.append('/' + name)
               if isinstance(node, h5py.Dataset) else None)
  if key is not None and not key.startswith('/'):
    key = '/' + key
  try:
    dataset = f[_one_of(names, key, path, what, 'dataset')]
  except StoreError:
    f.close()
    raise
  return _Array(f'{path}:{dataset.name}', dataset.shape, dataset.dtype,
                lambda i: dataset[()] if i is None else dataset[i], f.close)


def _zarr_node(directory: str) -> str | None:
  """'zarr' (v2) or 'zarr3': the TensorStore driver of the Zarr array in ``directory``."""
  if os.path.exists(os.path.join(directory, '.zarray')):
    return 'zarr'
  try:
    with open(os.path.join(directory, 'zarr.json')) as f:
      return 'zarr3' if json.load(f).get('node_type') == 'array' else None
  except (OSError, ValueError):
    return None


def _open_zarr(path: str, key: str | None, what: str) -> _Array:
  root = os.path.join(path, key.strip('/')) if key else path
  if _zarr_node(root) is None:
    names = []
    for directory, subdirectories, _ in os.walk(path):
      if _zarr_node(directory):
        names.append(os.path.relpath(directory, path))
        subdirectories.clear()  # Chunks, not arrays.
    if not names:
      raise StoreError(f'{what}: {path} is a directory holding no Zarr array (.zarray or '
                       f'zarr.json); accepted {ACCEPTED}.')
    root = os.path.join(path, _one_of(names, key, path, what, 'Zarr array'))
  where = f'{path}:{os.path.relpath(root, path)}' if root != path else path
  try:
    array = ts.open({'driver': _zarr_node(root), 'kvstore': {'driver': 'file', 'path': root}},
                    read=True, open=True).result()
  except ValueError as e:
    raise StoreError(f'{what}: {where}: not a Zarr array TensorStore reads: {e}') from None
  read = lambda i: array.read().result() if i is None else array[i].read().result()  # noqa
  return _Array(where, tuple(array.shape), array.dtype.numpy_dtype, read, lambda: None)


def _open(spec: Any, what: str, text: bool = False) -> _Array:
  """Opens ``spec`` (``PATH[:KEY]``, or an array in memory) for reading by rows."""
  if not isinstance(spec, (str, os.PathLike)):
    array = np.asarray(spec)
    opened = _Array('array', array.shape, array.dtype,
                    lambda i: array if i is None else array[i], lambda: None)
  else:
    path, key = _split_spec(os.fspath(spec), what)
    fmt = _format_of(path, what)
    if fmt in ('npy', 'text') and key is not None:
      raise StoreError(f'{what}: {path} holds one array: no key ({key!r}) is accepted.')
    if fmt == 'npy':
      try:
        array = np.load(path, mmap_mode='r', allow_pickle=False)
      except ValueError as e:
        if 'pickle' in str(e) or 'object' in str(e).lower():
          raise _pickle_error(f'{what}: {path}', str(e).rstrip('.')) from None
        raise StoreError(f'{what}: {path}: not a readable .npy file ({e}).') from None
      opened = _Array(path, array.shape, array.dtype,
                      lambda i: array if i is None else array[i], lambda: None)
    elif fmt == 'text':
      if not text:
        raise StoreError(f'{what}: {path}: a text file; predictions are accepted as {ACCEPTED}.')
      try:
        array = np.loadtxt(path, delimiter=',' if path.endswith('.csv') else None, ndmin=1)
      except ValueError as e:
        raise StoreError(f'{what}: {path}: not a table of numbers ({e}).') from None
      opened = _Array(path, array.shape, array.dtype,
                      lambda i: array if i is None else array[i], lambda: None)
    else:
      opened = {'npz': _open_npz, 'hdf5': _open_hdf5, 'zarr': _open_zarr}[fmt](path, key, what)
  if not (np.issubdtype(opened.dtype, np.number) or opened.dtype == bool):
    opened.close()
    raise StoreError(f'{what}: {opened.where}: dtype {opened.dtype}; accepted numbers.')
  return opened


def _load(spec: Any, what: str) -> tuple[np.ndarray, str]:
  """A small array (labels, a grid) whole, and where it came from."""
  opened = _open(spec, what, text=True)
  try:
    return np.array(opened.read(None)), opened.where
  finally:
    opened.close()


class _Predictions:
  """One split's predictions: one (members, T, N, C) array, or one (T, N, C) array per member."""

  def __init__(self, given: Any, split: str, num_members: int, members_where: str):
    self.split = split
    self.what = what = f'predictions of split {split!r}'
    per_member = isinstance(given, (list, tuple)) or (
        isinstance(given, (str, os.PathLike)) and '{m' in os.fspath(given))
    if not per_member:
      self._array = _open(given, what)
      self.where = self._array.where
      if len(self._array.shape) != 4 or self._array.shape[0] != num_members:
        self._array.close()
        if len(self._array.shape) != 4:
          raise StoreError(f'{what}: {self.where} has shape {self._array.shape}; accepted '
                           '(members, T, N, C), or one (T, N, C) file per member (a path '
                           'with {m}).')
        raise StoreError(f'{members_where} has {num_members} members (one per row), but '
                         f'{self.where} has shape {self._array.shape} ({self._array.shape[0]} '
                         f'members; {what}): one row of hyperparameters per member, in the '
                         "arrays' member order.")
      self.shape, self.dtype = self._array.shape, self._array.dtype
      return
    self._array = None
    if isinstance(given, (list, tuple)):
      if len(given) != num_members:
        raise StoreError(f'{what}: {len(given)} files, one per member, but {members_where} '
                         f'has {num_members} members.')
      self._specs = list(given)
    else:
      template = os.fspath(given)
      try:
        self._specs = [template.format(m=m) for m in range(num_members + 1)]
      except (KeyError, IndexError, ValueError) as e:
        raise StoreError(f'{what}: {template!r}: a path with {{m}} (or {{m:03d}}) for the '
                         f'member, and no other braces ({e!r}).') from None
      extra = self._specs.pop()
      try:  # Member ``num_members`` must not exist: the table would be short of a row.
        _open(extra, what).close()
      except StoreError:
        pass
      else:
        raise StoreError(f'{what}: {extra} exists, but {members_where} has {num_members} '
                         f'members (0..{num_members - 1}): one row per member file.')
    shapes = []
    for m, spec in enumerate(self._specs):
      opened = _open(spec, f'{what}, member {m}')
      opened.close()
      shapes.append((opened.where, opened.shape))
      if len(opened.shape) != 3:
        raise StoreError(f'{what}: member {m} ({opened.where}) has shape {opened.shape}; '
                         'accepted (T, N, C) in a file per member.')
      if opened.shape != shapes[0][1]:
        raise StoreError(f'{what}: member {m} ({opened.where}) has shape {opened.shape}, '
                         f'member 0 ({shapes[0][0]}) {shapes[0][1]}; every member has the '
                         'same (T, N, C).')
    self.where = f'{shapes[0][0]}, ...'
    self.shape, self.dtype = (num_members,) + shapes[0][1], opened.dtype

  def read(self, m: int) -> np.ndarray:
    """Member ``m``'s (T, N, C) predictions."""
    if self._array is not None:
      return np.asarray(self._array.read(m))
    opened = _open(self._specs[m], f'{self.what}, member {m}')
    try:
      return np.array(opened.read(None))
    finally:
      opened.close()

  def where_of(self, m: int, t: int) -> str:
    """Where member ``m``'s checkpoint ``t`` is: ``train.npy[3, 7]``, ``runs/3.npy[7]``."""
    if self._array is not None:
      return f'{self.where}[{m}, {t}]'
    return f'{_split_spec(os.fspath(self._specs[m]), self.what)[0]}[{t}]' \
        if isinstance(self._specs[m], (str, os.PathLike)) else f'member {m} array[{t}]'

  def close(self) -> None:
    if self._array is not None:
      self._array.close()


def _csv_value(text: str) -> Any:
  """A CSV cell as JSON: '' -> None, true/false -> bool, integers, finite floats, else text."""
  if text == '':
    return None
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  for kind in (int, float):
    try:
      value = kind(text)
    except ValueError:
      continue
    return value if math.isfinite(value) else text
  return text


def _read_members(given: Any) -> tuple[list[dict[str, Any]], str]:
  """The members' hyperparameters (one dict each) from a CSV, JSON or JSON-lines file."""
  if not isinstance(given, (str, os.PathLike)):
    return list(given), 'members'
  path = os.fspath(given)
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in ('.csv', '.json', '.jsonl'):
    raise StoreError(f'hyperparameters: {path}: accepted a .csv (a header, then one row per '
                     'member), a .json (a list of one object per member) or a .jsonl.')
  if not os.path.exists(path):
    raise StoreError(f'hyperparameters: no such file: {path}.')
  with open(path, newline='') as f:
    if suffix == '.csv':
      reader = csv.reader(f)
      header = next(reader, None)
      if not header:
        raise StoreError(f'hyperparameters: {path} is empty; a header, then one row per member.')
      rows = []
      for row in reader:
        if len(row) != len(header):
          raise StoreError(f'hyperparameters: {path}, line {reader.line_num} (member '
                           f'{len(rows)}): {len(row)} fields, the header has {len(header)}.')
        rows.append({k: _csv_value(v) for k, v in zip(header, row)})
    else:
      try:
        rows = ([json.loads(line) for line in f if line.strip()] if suffix == '.jsonl'
                else json.load(f))
      except ValueError as e:
        raise StoreError(f'hyperparameters: {path}: not JSON ({e}).') from None
  if not isinstance(rows, list) or not rows:
    raise StoreError(f'hyperparameters: {path}: accepted a non-empty list, one object per member.')
  for m, row in enumerate(rows):
    try:
      if not isinstance(row, dict):
        raise ValueError(f'{row!r} is not an object')
      json.dumps(row, allow_nan=False)
    except ValueError as e:
      raise StoreError(f'hyperparameters: {path}, member {m}: {e}; accepted an object of '
                       'numbers, strings, booleans, null.') from None
  return rows, path


# Numbers separated by commas: a grid given on the command line, not a file.
_NUMBER = r'[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?'
_NUMBER_LIST = re.compile(rf'\s*{_NUMBER}(\s*,\s*{_NUMBER})*\s*',
                          re.IGNORECASE)


def _grid(given: Any, what: str, num_members: int, num_times: int,
          probs_where: str) -> np.ndarray | None:
  """(members, T) float64 steps or epochs, NaN where not given, from a list, array or file."""
  if given is None:
    return None
  if isinstance(given, str) and _NUMBER_LIST.fullmatch(given) and not os.path.exists(given):
    grid, where = np.asarray([float(x) for x in given.split(',')]), what
  else:
    grid, where = _load(given, what)
    where = what if where == 'array' else f'{what} ({where})'
  grid = np.asarray(grid, np.float64)
  if grid.shape not in ((num_times,), (num_members, num_times)):
    length = f'{grid.shape[0]} values' if grid.ndim == 1 else f'shape {grid.shape}'
    raise StoreError(
        f'{where}: {length}; accepted ({num_times},), one per checkpoint shared by every member,'
        f' or ({num_members}, {num_times}), one row per member (the predictions hold '
        f'T = {num_times} checkpoints of {num_members} members: {probs_where}).')
  grid = np.broadcast_to(grid, (num_members, num_times))
  finite = np.isfinite(grid)
  bad = finite & ((grid < 0) | ((grid != np.round(grid)) if what == 'steps' else False))
  if bad.any():
    m, t = np.argwhere(bad)[0]
    accepted = 'integers >= 0' if what == 'steps' else 'numbers >= 0'
    raise StoreError(f'{where}: {grid[m, t]:g} (member {m}, checkpoint {t}); {what} are '
                     f'{accepted} (NaN where a member did not record).')
  for m in range(num_members):
    values, counts = np.unique(grid[m][finite[m]], return_counts=True)
    if (counts > 1).any():
      twice = values[counts > 1][0]
      raise StoreError(f'{where}: member {m} has {what[:-1]} {twice:g} at checkpoints '
                       f'{np.flatnonzero(grid[m] == twice).tolist()}; a member\'s checkpoints '
                       f'have distinct {what}.')
  return grid


def _labels(given: Any, what: str) -> tuple[np.ndarray, str]:
  labels, where = _load(given, what)
  if labels.ndim != 1 or (not np.issubdtype(labels.dtype, np.integer) and
                          not np.array_equal(labels, np.round(labels))):
    raise StoreError(f'{what}: {where}: shape {labels.shape}, dtype {labels.dtype}; accepted '
                     '(N,) integer class labels.')
  return labels.astype(np.int64), where


def _check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise StoreError(f'{workdir} exists and is not empty: an import makes a whole store, in a '
                     'new (or empty) directory.')


def import_arrays(workdir: str, probs: Mapping[str, Any], labels: Mapping[str, Any],
                  members: Any, *, kind: str, steps: Any = None, epochs: Any = None,
                  probe_indices: Mapping[str, Any] | None = None, dtype: str = 'float32',
                  block_bytes: int = BLOCK_BYTES,
                  progress: Callable[[int, int], None] | None = None) -> ImportSummary:
  """Builds a store (format 2) from prediction arrays saved by any pipeline.

  Args:
    workdir: the new store (absent or empty).
    probs: split -> that split's predictions on its N probes at T checkpoints: ``PATH[:KEY]``
      of a (members, T, N, C) array (.npy, .npz, HDF5, Zarr; KEY names the array inside an
      .npz, HDF5 file or Zarr group), a path with ``{m}`` or a list of paths (one (T, N, C)
      array per member), or an array. Every split has the same T and C.
    labels: split -> (N,) integer labels of its probes: ``PATH[:KEY]`` (also .txt or .csv) or
      an array.
    members: one dict of hyperparameters per member: a .csv (a header, a row per member), .json
      (a list of objects), .jsonl, or a list of dicts; member m is row m of every array.
    kind: what the arrays hold: 'probs', 'log_probs' (natural logs) or 'logits'. Never guessed.
    steps: the training step of each checkpoint: (T,) shared or (members, T) per member, as an
      array, ``PATH[:KEY]`` or text '0,100,200'; NaN where a member did not record. Without
      it, checkpoint t's step is t (then ``epochs`` are the analysis' time axis).
    epochs: the epoch of each checkpoint, as ``steps``. At least one of the two is given.
    probe_indices: optional split -> (N,) indices of the probes in their dataset.
    dtype: storage dtype, 'float32' or 'float16'.
    block_bytes: most bytes of predictions held at once: members are read and written in
      blocks of this size (at least one member), the chunks of a block written concurrently.
    progress: called with (members done, members) after each block of members.

  Returns:
    An ImportSummary; the counts of what was written and skipped.

  Raises:
    StoreError: a bad input (which file, key, member, checkpoint, and what is accepted);
      nothing is left in ``workdir`` then.
  """
  if kind not in KINDS:
    raise StoreError(f'kind={kind!r}: accepted {", ".join(KINDS)} (said, never guessed).')
  if steps is None and epochs is None:
    raise StoreError('give the checkpoints\' steps or epochs (or both): one per checkpoint, '
                     '(T,) or (members, T).')
  if not probs or set(probs) != set(labels):
    raise StoreError(f'splits: predictions for {sorted(probs)}, labels for {sorted(labels)}; '
                     'every split needs both.')
  for split in probs:
    if not isinstance(split, str) or not layout.SPLIT_NAME.fullmatch(split):
      raise StoreError(f'split name {split!r}: letters, digits and _, starting with a letter.')
  workdir = os.path.abspath(workdir)
  _check_workdir(workdir)
  hparams, members_where = _read_members(members)
  label_of = {split: _labels(labels[split], f'labels of split {split!r}') for split in probs}
  sources: dict[str, _Predictions] = {}
  try:
    for split in probs:
      sources[split] = _Predictions(probs[split], split, len(hparams), members_where)
    first = next(iter(sources.values()))
    _, num_times, _, num_classes = first.shape
    if not num_times or not first.shape[2]:
      raise StoreError(f'{first.what}: {first.where} has shape {first.shape}: no checkpoints or '
                       'no probes; accepted (members, T, N, C) with T, N >= 1.')
    for split, source in sources.items():
      (y, y_where), (_, t, n, c) = label_of[split], source.shape
      if (t, c) != (num_times, num_classes):
        raise StoreError(f'{source.what}: {source.where} holds T = {t} checkpoints of C = {c} '
                         f'classes, but {first.what} ({first.where}) T = {num_times}, C = '
                         f'{num_classes}; every split has the same checkpoints and classes.')
      if n != len(y):
        raise StoreError(f'{source.what}: {source.where} has N = {n} probes, but its labels '
                         f'({y_where}) are {len(y)}; one label per probe.')
      if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise StoreError(f'labels of split {split!r} ({y_where}) hold {y.min()}..{y.max()}, but '
                         f'the predictions have C = {num_classes} classes ({source.where}).')
    grid = {name: _grid(given, name, len(hparams), num_times, first.where)
            for name, given in (('steps', steps), ('epochs', epochs))}
    indices = {s: _load(v, f'probe indices of split {s!r}')[0]
               for s, v in (probe_indices or {}).items()}
    return _write(workdir, sources, {s: y for s, (y, _) in label_of.items()}, hparams,
                  grid, indices, num_classes, kind, dtype, block_bytes, progress)
  finally:
    for source in sources.values():
      source.close()


def _write(workdir: str, sources: Mapping[str, _Predictions], labels: Mapping[str, np.ndarray],
           hparams: Sequence[Mapping[str, Any]], grid: Mapping[str, np.ndarray | None],
           probe_indices: Mapping[str, np.ndarray], num_classes: int, kind: str, dtype: str,
           block_bytes: int, progress: Callable[[int, int], None] | None) -> ImportSummary:
  """Writes the checked arrays, a block of members at a time, into the staging directory, then
  renames it to ``workdir``."""
  staging = workdir + STAGING_SUFFIX
  resumed = os.path.exists(staging)
  try:
    writer = TrajectoryWriter(staging, hparams, labels, num_classes, dtype=dtype,
                              probe_indices=probe_indices or None)
  except StoreError as e:
    if resumed:
      raise StoreError(f'{staging} holds an unfinished import of other arrays ({e}); delete it '
                       'to start over.') from None
    raise
  num_members = len(hparams)
  member_bytes = sum(math.prod(s.shape[1:]) * s.dtype.itemsize for s in sources.values())
  block = max(1, block_bytes // member_bytes)
  written = unrecorded = partial = 0
  try:
    with writer:
      for first in range(0, num_members, block):
        members_B = np.arange(first, min(first + block, num_members))
        values = {split: np.stack([source.read(m) for m in members_B])
                  for split, source in sources.items()}  # (B, T, N, C) each
        recorded_SxBxT = np.stack([~np.isnan(v).all(axis=(2, 3)) for v in values.values()])
        everywhere_BxT = recorded_SxBxT.all(axis=0)
        unrecorded += int((~recorded_SxBxT.any(axis=0)).sum())
        partial += int((recorded_SxBxT.any(axis=0) & ~everywhere_BxT).sum())
        times = _times_of(grid, members_B, everywhere_BxT)
        for t in range(everywhere_BxT.shape[1]):
          by_time: dict[tuple[int, float | None], list[int]] = {}
          for b in np.flatnonzero(everywhere_BxT[:, t]):
            by_time.setdefault(times[b][t], []).append(int(b))
          for (step, epoch), rows in by_time.items():
            for split, values_BxTxNxC in values.items():
              _write_rows(writer, sources[split], members_B[rows], t, step, epoch,
                          values_BxTxNxC[rows, t], kind)
        written += int(everywhere_BxT.sum())
        if progress:
          progress(int(members_B[-1]) + 1, num_members)
  except ValueError as e:  # A bad value: the input must change, so the partial store is no use.
    if not isinstance(e, MemberLocked):  # Another import of it is running: leave it alone.
      shutil.rmtree(staging)
    raise
  os.rename(staging, workdir)
  return ImportSummary(workdir, num_members, tuple(sources), written, unrecorded, partial,
                       resumed)


def _times_of(grid: Mapping[str, np.ndarray | None], members_B: np.ndarray,
              recorded_BxT: np.ndarray) -> list[list[tuple[int, float | None]]]:
  """(step, epoch) of each checkpoint of a block of members; an error where one is recorded
  but its step or epoch is NaN. Without steps, checkpoint t's step is t."""
  steps, epochs = grid['steps'], grid['epochs']
  for name, given in (('steps', steps), ('epochs', epochs)):
    if given is not None:
      missing = recorded_BxT & ~np.isfinite(given[members_B])
      if missing.any():
        b, t = np.argwhere(missing)[0]
        raise StoreError(f'{name}: {given[members_B[b], t]} for member {members_B[b]}, '
                         f'checkpoint {t}, which the member recorded (its predictions are not '
                         'NaN): give its value.')
  num_times = recorded_BxT.shape[1]
  return [[(t if steps is None else int(steps[m, t]) if recorded_BxT[b, t] else -1,
            None if epochs is None else float(epochs[m, t])) for t in range(num_times)]
          for b, m in enumerate(members_B)]


def _write_rows(writer: TrajectoryWriter, source: _Predictions, members: np.ndarray, t: int,
                step: int, epoch: float | None, values_BxNxC: np.ndarray, kind: str) -> None:
  """One checkpoint of several members on one split; a refused value is reported at its place
  in the source (``train.npy[3, 7]``)."""
  try:
    writer.write(members.tolist(), step, source.split, values_BxNxC, epoch=epoch, kind=kind)
  except RejectedValues as e:  # Nothing of the block was written.
    raise RejectedValues(f'{source.where_of(e.member, t)}: {e}', e.member) from None
