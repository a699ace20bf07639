"""The store's format: its files, their names and the manifest (``sweep.json``).

Layout of a store (a workdir)::

    sweep.json                     format version, the config, members, cohorts, grid, probes
    cohorts/<c>/records/<t>/       Orbax: probabilities + metrics at recording time index t
    cohorts/<c>/state/<step>/      Orbax: the latest resumable state, under its training step

A record holds the arrays ``RECORD_KEYS``, member axis first, for the cohort's members only.
Nothing here imports the trainer: a store opens on a laptop, years later.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

FORMAT_VERSION = 1
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


class StoreError(ValueError):
  """A trajectories store that cannot be read or written; the message says which file and why."""


def cohort_dir(workdir: str, cohort_index: int) -> str:
  """Where cohort ``cohort_index`` keeps its records and state."""
  return os.path.join(workdir, 'cohorts', f'{cohort_index:03d}')


def write_manifest(workdir: str, manifest: dict[str, Any]) -> None:
  """Writes ``sweep.json`` atomically (temporary file, then rename)."""
  os.makedirs(workdir, exist_ok=True)
  manifest = dict(manifest, format_version=FORMAT_VERSION)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix='.sweep-', suffix='.json')
  with os.fdopen(fd, 'w') as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(workdir, SWEEP_FILE))


def has_manifest(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, SWEEP_FILE))


def read_manifest(workdir: str) -> dict[str, Any]:
  """Reads and version-checks ``sweep.json``."""
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.exists(path):
    raise StoreError(f'{path} does not exist: {workdir!r} is not a trajectories store '
                     '(written by ensembles.train_and_record).')
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise StoreError(f'{path} cannot be read as JSON: {e}') from e
  version = manifest.get('format_version')
  if version != FORMAT_VERSION:
    raise StoreError(f'{path} has store format version {version!r}; this version of ensembles '
                     f'reads version {FORMAT_VERSION} only. Use the ensembles release that '
                     'wrote it, or train again.')
  return manifest

