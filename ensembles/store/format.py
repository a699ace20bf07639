"""The store's format: its files, their names and the manifest (``sweep.json``).

Two layouts share the manifest and the reader; docs/STORE_FORMAT.md specifies both.

Version 1, written by the trainer (a workdir)::

    sweep.json                     format version, the config, members, cohorts, grid, probes
    cohorts/<c>/records/<t>/       Orbax: probabilities + metrics at recording time index t
    cohorts/<c>/state/<step>/      Orbax: the latest resumable state, under its training step

A record holds the arrays ``RECORD_KEYS``, member axis first, for the cohort's members only.

Version 2, written by ``TrajectoryWriter`` from any training loop::

    sweep.json                     format version, members, splits (probe labels), classes, dtype
    members/<m>/<split>.zarr/      Zarr v2: (K, N, C) probabilities, one chunk per checkpoint
    members/<m>/index.jsonl        one line per committed checkpoint: split, slot, step, epoch...

Nothing here imports the trainer: a store opens on a laptop, years later.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

FORMAT_VERSION = 1
# The layout of stores written member by member (``TrajectoryWriter``).
MEMBERS_FORMAT_VERSION = 2
READABLE_VERSIONS = (FORMAT_VERSION, MEMBERS_FORMAT_VERSION)
SWEEP_FILE = 'sweep.json'
SPLITS = ('train', 'test')
# A member's status in a store: trained to the end, or frozen at a non-finite loss or update.
STATUS_OK = 'ok'
STATUS_DIVERGED = 'diverged'
# Storage dtypes of recorded probabilities.
STORAGE_DTYPES = ('float32', 'float16')
# Orbax item names of a record and of a resumable state.
RECORD_ITEM = 'record'
STATE_ITEM = 'state'
# Per-member metrics on the probes, recorded with the probabilities.
METRICS = ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy')
# Every array of one record: the cohort's step, each member's divergence step (-1: none), its
# probabilities on each probe split and its metrics.
RECORD_KEYS = ('step', 'diverged_at', 'train_probs', 'test_probs') + METRICS


# The hparams key naming each member's store when several are read as one.
STORE_KEY = 'store'


class StoreError(ValueError):
  """A trajectories store that cannot be read or written; the message says which file and why."""


def cohort_dir(workdir: str, cohort_index: int) -> str:
  """Where cohort ``cohort_index`` keeps its records and state."""
  return os.path.join(workdir, 'cohorts', f'{cohort_index:03d}')


def write_manifest(workdir: str, manifest: dict[str, Any],
                   version: int = FORMAT_VERSION) -> None:
  """Writes ``sweep.json`` atomically (temporary file, then rename)."""
  os.makedirs(workdir, exist_ok=True)
  manifest = dict(manifest, format_version=version)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix='.sweep-', suffix='.json')
  with os.fdopen(fd, 'w') as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(workdir, SWEEP_FILE))


def has_manifest(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, SWEEP_FILE))


def read_manifest(workdir: str, versions: tuple[int, ...] = READABLE_VERSIONS) -> dict[str, Any]:
  """Reads ``sweep.json`` and checks that its format version is one of ``versions``."""
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.exists(path):
    raise StoreError(f'{path} does not exist: {workdir!r} is not a trajectories store '
                     '(written by ensembles.train_and_record or ensembles.store.TrajectoryWriter).')
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise StoreError(f'{path} cannot be read as JSON: {e}') from e
  version = manifest.get('format_version')
  if version not in versions:
    raise StoreError(f'{path} has store format version {version!r}; accepted here: '
                     f'{" or ".join(map(str, versions))}. Use the ensembles release that wrote '
                     'it, or write the store again.')
  return manifest



def manifest_splits(manifest: dict[str, Any]) -> tuple[str, ...]:
  """The probe splits of a store, from its manifest."""
  if manifest['format_version'] == MEMBERS_FORMAT_VERSION:
    return tuple(manifest['splits'])
  return SPLITS


def store_names(workdirs: Sequence[str]) -> list[str]:
  """The names of stores read as one: their directories' names, or paths where those clash."""
  paths = [os.path.abspath(w) for w in workdirs]
  names = [os.path.basename(p) for p in paths]
  return names if len(set(names)) == len(names) else paths


def read_metadata(workdirs: Sequence[str]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
  """(members, splits) of one store or of several read as one (``load_trajectories``), from
  the manifests alone: for checking what a user asks before any record is read."""
  manifests = [read_manifest(w) for w in workdirs]
  if len(manifests) == 1:
    return manifests[0]['members'], manifest_splits(manifests[0])
  members = [dict(hp, **{STORE_KEY: name})
             for m, name in zip(manifests, store_names(workdirs)) for hp in m['members']]
  splits = tuple(s for s in manifest_splits(manifests[0])
                 if all(s in manifest_splits(m) for m in manifests))
  return members, splits
