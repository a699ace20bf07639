r"""Maps the trajectories of a trained sweep with InPCA and compares them by factor.

  python -m ensembles.launch.analyze --workdir=/tmp/quickstart [--split=train] [--color_by=arch]
      [--landmarks=L] [--overwrite] [--distributed | --coordinator_address=H:P ...]
  python -m ensembles.launch.analyze --workdir=/tmp/quickstart,/tmp/imported --outdir=/tmp/joint

Reads the trajectories store in --workdir (one still being trained maps what it has, and says
what is missing; several, comma-separated, are mapped jointly if their probes are the same
samples, each member's hparams then holding its store's name under 'store') and writes
DIR/analysis/ (or --outdir): map/ (every point's coordinates, Parquet), embedding.npz,
equal_progress.npz, factors.csv, factors.md and the pictures, named by --color_by
(embedding_2d_by_arch.png, embedding_3d_by_arch.html, ...: each colouring keeps its own);
prints ES_1..ES_5. Up to ``mapping.LANDMARK_THRESHOLD`` points the map is a full InPCA; above,
landmark InPCA on ``mapping.DEFAULT_LANDMARKS`` points unless --landmarks says otherwise. The
flags are checked before any record is read. A killed map resumes
when the command is run again. Under jax.distributed (the flags of ensembles.launch.train)
every process places a share of the points on its devices; process 0 writes and prints.
"""

import os
import time

import jax
import numpy as np
from absl import app, flags

from ensembles import analysis
from ensembles import store
from ensembles.analysis import mapping
from ensembles.launch import runtime

flags.adopt_module_key_flags(runtime)

FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_list(
    'workdir', None, 'The trajectories store (train_and_record, TrajectoryWriter, '
    'ensembles-import), or several, comma-separated, mapped jointly.')
_OUTDIR = flags.DEFINE_string('outdir', None, 'Where the analysis goes (default: '
                              'WORKDIR/analysis; required with several stores).')
_SPLIT = flags.DEFINE_string('split', 'train', 'Probe split to analyse (one of the store\'s).')
_COLOR_BY = flags.DEFINE_string(
    'color_by', None, 'Hparams key that colours trajectories (default: the first that varies '
    'among store, arch and the others, alphabetically).')
_MAX_POINTS = flags.DEFINE_integer('max_points', analysis.summary.DEFAULT_MAX_POINTS,
                                   'Most checkpoints of the comparison embedding.', lower_bound=2)
_LANDMARKS = flags.DEFINE_integer(
    'landmarks', None, 'Landmarks of the map, at least the '
    f'{analysis.summary.DEFAULT_COMPONENTS} components it keeps (default: every point up to '
    f'{mapping.LANDMARK_THRESHOLD} points, {mapping.DEFAULT_LANDMARKS} above).',
    lower_bound=analysis.summary.DEFAULT_COMPONENTS)
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace a map in DIR/analysis/map made with other settings.')
flags.mark_flags_as_required(['workdir'])

# Seconds between two progress lines of the map.
PROGRESS_EVERY_SECONDS = 10.0


class ProgressLine:
  """Prints the map's progress, rate and time left every PROGRESS_EVERY_SECONDS; the rate is
  that of the placement alone (from the first call, with 0 done, after the landmark fit)."""

  def __init__(self, clock=time.monotonic, say=print):
    self._clock, self._say = clock, say
    self._start = self._last = None

  def __call__(self, done: int, todo: int) -> None:
    now = self._clock()
    if self._start is None or done == 0:
      self._start = self._last = now
      self._say(f'Placing {todo:,} points...', flush=True)
      return
    if now - self._last < PROGRESS_EVERY_SECONDS and done < todo:
      return
    self._last = now
    rate = done / max(now - self._start, 1e-9)
    left = (todo - done) / rate if rate else float('inf')
    eta = f'{int(left // 60)}m{int(left % 60):02d}s' if np.isfinite(left) else '?'
    self._say(f'Placed {done:,} of {todo:,} points ({100 * done / max(todo, 1):.1f}%), '
          f'{rate:,.0f} points/s, {eta} left', flush=True)


def landmark_choice(traj: store.Trajectories, landmarks: int | None) -> tuple[int | None, str]:
  """(landmarks for embed_trajectories, a line saying what the map will be and why)."""
  ok = np.asarray([s != store.STATUS_DIVERGED for s in traj.status])
  points = int((traj.recorded & ok[:, None]).sum())
  if landmarks is not None:
    if landmarks > points:  # Checked on the metadata, before any record is read.
      raise app.UsageError(f'--landmarks={landmarks}: more than the {points:,} points to map '
                           '(recorded, of members that did not diverge); accepted: '
                           f'{analysis.summary.DEFAULT_COMPONENTS} to {points:,}.')
    return landmarks, f'Map: {points:,} points on {landmarks:,} landmarks (--landmarks).'
  if points <= mapping.LANDMARK_THRESHOLD:
    return None, (f'Map: full InPCA of {points:,} points (at most '
                  f'{mapping.LANDMARK_THRESHOLD:,}: every point a landmark).')
  return mapping.DEFAULT_LANDMARKS, (
      f'Map: {points:,} points, more than {mapping.LANDMARK_THRESHOLD:,}: landmark InPCA on '
      f'{mapping.DEFAULT_LANDMARKS:,} landmarks (set --landmarks to change).')


def color_key(members: list[dict], asked: str | None, where: str) -> str:
  """--color_by checked against the members' hparams, or its default (see the flag)."""
  keys = sorted({key for hp in members for key in hp})
  if not keys:
    raise app.UsageError(f'the members in {where} have no hparams to colour by: record each '
                         "member's hyperparameters as a dict (e.g. {'seed': 0}).")
  if asked is not None:
    if any(asked not in hp for hp in members):
      raise app.UsageError(f'--color_by={asked!r}: accepted one of {keys} (the hparams of '
                           f'the members in {where}).')
    return asked
  shared = [k for k in keys if all(k in hp for hp in members)]
  varying = [k for k in shared if len({repr(hp[k]) for hp in members}) > 1]
  preferred = [k for k in (store.STORE_KEY, 'arch') if k in varying]
  return (preferred or varying or shared or keys)[0]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runtime.start_process()
  say = print if jax.process_index() == 0 else lambda *args, **kwargs: None
  # Flags checked against the manifests before any record is read.
  workdirs = _WORKDIR.value
  if len(workdirs) > 1 and _OUTDIR.value is None:
    raise app.UsageError(f'--workdir names {len(workdirs)} stores: say where their joint '
                         'analysis goes with --outdir=DIR.')
  members, splits = store.read_metadata(workdirs)
  if _SPLIT.value not in splits:
    raise app.UsageError(f'--split={_SPLIT.value!r}: accepted {list(splits)} (the probe splits '
                         f'of {",".join(workdirs)}).')
  color_by = color_key(members, _COLOR_BY.value, ','.join(workdirs))
  traj = store.load_trajectories(workdirs, allow_partial=True)
  if traj.missing:
    say(f'The store is partial: {len(traj.missing)} records are missing (training unfinished '
        'or killed, or checkpoints written on some splits only); mapping what is there.',
        flush=True)
  landmarks, line = landmark_choice(traj, _LANDMARKS.value)
  say(line, flush=True)
  summary = analysis.analyze_trajectories(
      traj, _OUTDIR.value or os.path.join(workdirs[0], 'analysis'), split=_SPLIT.value,
      color_by=color_by, max_points=_MAX_POINTS.value, landmarks=landmarks,
      overwrite=_OVERWRITE.value, on_block=ProgressLine(say=say))
  say('\n'.join(summary.lines()))


def run():
  """The ``ensembles-analyze`` command."""
  runtime.run(main)


if __name__ == '__main__':
  run()
