"""The trajectories store: the bottom layer, and the only thing the analysis knows of training.

It needs NumPy and Orbax, never the trainer: a store opens on a laptop, years later.

Public API:
  load_trajectories(workdir, allow_partial=False) -> Trajectories: metadata on opening;
    probabilities whole (probs) or by points (block_plan, read_block -> Block, read_points)
  TrajectoryStore: the protocol the analysis reads (members, epochs, status, probs, labels)
  CohortWriter(directory, dtype, num_members): one cohort's records and resumable state
  StoreError; the format's names (FORMAT_VERSION, SPLITS, METRICS, RECORD_KEYS, cohort_dir,
  read_manifest, write_manifest)
"""

from ensembles.store.format import (FORMAT_VERSION, METRICS, RECORD_KEYS, SPLITS, STATUS_DIVERGED,
                                    STATUS_OK, STORAGE_DTYPES, SWEEP_FILE, StoreError, cohort_dir,
                                    has_manifest, read_manifest, write_manifest)
from ensembles.store.reader import (Block, BlockSpec, Trajectories, TrajectoryStore, block_plan,
                                    load_trajectories, read_record)
from ensembles.store.writer import CohortWriter

__all__ = [
    'Block', 'BlockSpec', 'CohortWriter', 'FORMAT_VERSION', 'METRICS', 'RECORD_KEYS', 'SPLITS',
    'STATUS_DIVERGED', 'STATUS_OK', 'STORAGE_DTYPES', 'SWEEP_FILE', 'StoreError', 'Trajectories',
    'TrajectoryStore', 'block_plan', 'cohort_dir', 'has_manifest', 'load_trajectories',
    'read_manifest', 'read_record', 'write_manifest',
]
