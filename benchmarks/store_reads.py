r"""What reading a trajectories store costs: opening it, one record, a block of points.

  python -m benchmarks.store_reads            # 2 cohorts x 250 members, 20 times, N = 200
  python -m benchmarks.store_reads --quick    # a smoke test

Writes a store of Dirichlet probabilities through ``store.CohortWriter`` (float16, as the
trainer's default storage), then times in this process: opening it (``load_trajectories``:
the manifest and every record's small arrays), restoring one record whole, one split of one
record, and ``read_points`` of a block of points of one cohort at consecutive times (what the
map reads per block), and of the same number of points scattered over every record (what the
landmarks cost). Files and bytes per record are counted on disk. Results: the table printed
and benchmarks/results/store_reads_<host>.md (not with --quick).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from absl import app, flags

from benchmarks import common
from ensembles import store

_MEMBERS = flags.DEFINE_integer('members', 250, 'Members per cohort.')
_COHORTS = flags.DEFINE_integer('cohorts', 2, 'Cohorts.')
_TIMES = flags.DEFINE_integer('times', 20, 'Recording times.')
_PROBES = flags.DEFINE_integer('probes', 200, 'Probes per split (N).')
_QUICK = flags.DEFINE_bool('quick', False, 'A small store, nothing written to results/.')

# Classes of the synthetic probabilities, and timed repeats of each read (median reported).
NUM_CLASSES = 10
REPEATS = 5


def _write(workdir: str, members: int, cohorts: int, times: int, probes: int) -> None:
  rng = np.random.default_rng(0)
  labels = rng.integers(0, NUM_CLASSES, probes).tolist()
  store.write_manifest(workdir, dict(
      members=[dict(seed=e) for e in range(members * cohorts)], epochs=list(range(times)),
      num_classes=NUM_CLASSES, cohorts=[dict(index=c, members=list(range(
          c * members, (c + 1) * members))) for c in range(cohorts)],
      probes={f'{s}_{k}': labels if k == 'labels' else list(range(probes))
              for s in store.SPLITS for k in ('labels', 'indices')}))
  for c in range(cohorts):
    writer = store.CohortWriter(store.cohort_dir(workdir, c), 'float16', members)
    for t in range(times):
      p = rng.dirichlet(np.ones(NUM_CLASSES), (members, probes)).astype(np.float32)
      writer.write_record(t, dict(step=np.int64(t), diverged_at=np.full(members, -1),
                                  train_probs=p, test_probs=p, **{
                                      k: np.zeros(members, np.float32) for k in store.METRICS}))
    writer.close()


def _files_and_bytes(path: str) -> tuple[int, int]:
  sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs]
  return len(sizes), sum(sizes)


def main(argv):
  del argv
  members, cohorts, times, probes = ((20, 2, 4, 50) if _QUICK.value else
                                     (_MEMBERS.value, _COHORTS.value, _TIMES.value, _PROBES.value))
  workdir = tempfile.mkdtemp(prefix='store_reads_')
  try:
    _write(workdir, members, cohorts, times, probes)
    records = cohorts * times
    open_s, _ = common.median_seconds(lambda: store.load_trajectories(workdir), REPEATS)
    traj = store.load_trajectories(workdir)
    directory = store.cohort_dir(workdir, 0)
    whole_s, _ = common.median_seconds(lambda: store.read_record(directory, 0), REPEATS)
    split_s, _ = common.median_seconds(lambda: traj.read_points(
        'train', np.arange(members), np.zeros(members, np.int64)), REPEATS)
    block = min(members * times, 4 * members)
    block_m = np.repeat(np.arange(members), block // members)
    block_t = np.tile(np.arange(block // members), members)
    block_s, _ = common.median_seconds(lambda: traj.read_points('train', block_m, block_t),
                                       REPEATS)
    rng = np.random.default_rng(1)
    flat = rng.choice(members * cohorts * times, block, replace=False)
    scattered_s, _ = common.median_seconds(
        lambda: traj.read_points('train', flat // times, flat % times), REPEATS)
    files, size = _files_and_bytes(os.path.join(directory, 'records', '0'))
    rows = [
        ('open (manifest + small arrays of every record)', f'{records} records',
         open_s, open_s / records),
        ('one record, every array', '1 record', whole_s, whole_s),
        ("one record, one split's probabilities", '1 record', split_s, split_s),
        (f'block: {block} points of one cohort, {block // members} consecutive times',
         f'{block // members} records', block_s, block_s / (block // members)),
        (f'{block} points scattered over the store', f'{records} records', scattered_s,
         scattered_s / records),
    ]
    lines = ['# Store reads', '', *common.environment_lines(), '',
             f'Store: {cohorts} cohorts x {members} members x {times} times, N = {probes} '
             f'probes per split, C = {NUM_CLASSES}, float16; one record: {files} files, '
             f'{size / 2**20:.1f} MiB.', '']
    table = '\n'.join(lines) + '\n' + common.markdown_table(
        ['read', 'touches', 'seconds', 'per record (s)'],
        [(name, touched, f'{s:.3f}', f'{per:.4f}') for name, touched, s, per in rows])
    print(table)
    if not _QUICK.value:
      common.write_results(table, os.path.join(
          common.RESULTS_DIR, f'store_reads_{common.host_kind()}.md'))
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
