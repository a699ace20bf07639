"""The trajectories store: the bottom layer, and the only thing the analysis knows of training.

It needs NumPy, TensorStore and Orbax, never the trainer: a store opens on a laptop, years
later. Names are imported on first use, so that ``from ensembles.store import TrajectoryWriter``
loads NumPy and TensorStore only (no JAX): a PyTorch training loop can record through it.

Public API:
  load_trajectories(workdir, allow_partial=False) -> Trajectories: metadata on opening;
    probabilities whole (probs) or by points (block_plan, read_block -> Block, read_points)
  TrajectoryWriter(workdir, members, labels, num_classes): records checkpoints from any
    training loop (format 2); write(member, step, split, values, *, epoch, kind), close()
  import_arrays(workdir, probs, labels, members, *, kind, steps, epochs) -> ImportSummary:
    a store from .npy, .npz, HDF5 or Zarr arrays of any pipeline (``ensembles-import``)
  TrajectoryStore: the protocol the analysis reads (members, epochs, status, probs, labels)
  CohortWriter(directory, dtype, num_members): the trainer's cohort records and state (format 1)
  read_metadata(workdirs) -> (members, splits): a store's (or several's) manifests alone
  StoreError; the format's names (FORMAT_VERSION, MEMBERS_FORMAT_VERSION, SPLITS, METRICS,
  RECORD_KEYS, cohort_dir, read_manifest, write_manifest)
"""

import importlib

_LAZY = {
    **dict.fromkeys(
        ('FORMAT_VERSION', 'MEMBERS_FORMAT_VERSION', 'METRICS', 'READABLE_VERSIONS',
         'RECORD_KEYS', 'SPLITS', 'STATUS_DIVERGED', 'STATUS_OK', 'STORAGE_DTYPES', 'STORE_KEY',
         'SWEEP_FILE', 'StoreError', 'cohort_dir', 'has_manifest', 'manifest_splits',
         'read_manifest', 'read_metadata', 'store_names', 'write_manifest'),
        'ensembles.store.format'),
    **dict.fromkeys(('Block', 'BlockSpec', 'Trajectories', 'TrajectoryStore', 'block_plan',
                     'load_trajectories', 'read_record'), 'ensembles.store.reader'),
    'CohortWriter': 'ensembles.store.writer',
    'TrajectoryWriter': 'ensembles.store.trajectory_writer',
    **dict.fromkeys(('ImportSummary', 'import_arrays'), 'ensembles.store.importing'),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
