"""Format 2, a store written member by member: its paths, its Zarr arrays and its index files.

Layout under a workdir (docs/STORE_FORMAT.md is the specification)::

    sweep.json                      format_version 2, members, splits, num_classes, dtype
    members/<m:05d>/<split>.zarr/   Zarr v2 array (K, N, C), chunks (1, N, C): slot k = the
                                    member's k-th checkpoint written on that split
    members/<m:05d>/index.jsonl     one JSON line per committed checkpoint (``Entry``)
    members/<m:05d>/.lock           held (flock) by the one process writing the member

A checkpoint is committed when its index line is complete: the chunk is written first, the
line after, so a killed writer leaves at most an unindexed chunk (overwritten on reopening) or
a torn last line (ignored by readers, cut by the next writer). Needs NumPy and TensorStore only.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple

MEMBERS_DIR = 'members'
INDEX_FILE = 'index.jsonl'
LOCK_FILE = '.lock'
# Split names become file names.
SPLIT_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')
# Zarr v2 dtype strings of the storage dtypes.
ZARR_DTYPES = {'float32': '<f4', 'float16': '<f2'}
# Cheap, fast, lossless: probabilities near one-hot compress well.
ZARR_COMPRESSOR = {'id': 'zstd', 'level': 1}


class Entry(NamedTuple):
  """One committed checkpoint of one member on one split: a line of ``index.jsonl``.

  Attributes:
    split: the probe split.
    slot: its row in ``<split>.zarr``.
    step: the training step (the checkpoint's identity within the member).
    epoch: the epoch, or None when the writer was not told.
    loss: mean cross-entropy on the split's probes (natural log).
    accuracy: fraction of probes whose most probable class is the label.
    sha256: digest of the stored row's bytes (little-endian, storage dtype).
  """
  split: str
  slot: int
  step: int
  epoch: float | None
  loss: float
  accuracy: float
  sha256: str


def member_dir(workdir: str, member: int) -> str:
  return os.path.join(workdir, MEMBERS_DIR, f'{member:05d}')


def index_path(workdir: str, member: int) -> str:
  return os.path.join(member_dir(workdir, member), INDEX_FILE)


def array_spec(workdir: str, member: int, split: str,
               create: tuple[int, int, str] | None = None) -> dict[str, Any]:
  """TensorStore spec opening a member's split array; ``create=(N, C, dtype)`` makes it."""
  spec: dict[str, Any] = {
      'driver': 'zarr',
      'kvstore': {'driver': 'file', 'path': os.path.join(member_dir(workdir, member),
                                                         f'{split}.zarr')},
  }
  if create is not None:
    num_probes, num_classes, dtype = create
    spec.update(create=True, metadata={
        'shape': [0, num_probes, num_classes], 'chunks': [1, num_probes, num_classes],
        'dtype': ZARR_DTYPES[dtype], 'fill_value': 'NaN', 'compressor': ZARR_COMPRESSOR})
  return spec


def array_exists(workdir: str, member: int, split: str) -> bool:
  return os.path.exists(os.path.join(member_dir(workdir, member), f'{split}.zarr', '.zarray'))


def entry_line(entry: Entry) -> str:
  return json.dumps(entry._asdict()) + '\n'


def read_index(path: str) -> tuple[list[Entry], int]:
  """The committed entries of an index file and the byte length of that committed prefix.

  A line without its newline (a writer killed mid-line) is not committed; neither is anything
  after it.
  """
  if not os.path.exists(path):
    return [], 0
  with open(path, 'rb') as f:
    data = f.read()
  entries, end = [], 0
  for line in data.splitlines(keepends=True):
    if not line.endswith(b'\n'):
      break
    try:
      fields = json.loads(line)
      entries.append(Entry(**{k: fields[k] for k in Entry._fields}))  # Others: a later version.
    except (ValueError, TypeError, KeyError):
      break
    end += len(line)
  return entries, end
