r"""Maps the trajectories of a trained sweep with InPCA and compares them by factor.

  python -m ensembles.launch.analyze --workdir=/tmp/quickstart [--split=train] [--color_by=arch]

Reads the trajectories store in --workdir, writes DIR/analysis/: embedding.npz,
equal_progress.npz, factors.csv, factors.md and the pictures; prints ES_1..ES_5.
"""

import os

from absl import app, flags

from ensembles import analysis
from ensembles import store
from ensembles.launch import runtime

FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string('workdir', None, 'The trajectories store (train_and_record).')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'test'], 'Probe split to analyse.')
_COLOR_BY = flags.DEFINE_string('color_by', 'arch', 'Hparams key that colours trajectories.')
_MAX_POINTS = flags.DEFINE_integer('max_points', analysis.summary.DEFAULT_MAX_POINTS,
                                   'Most checkpoints embedded (evenly thinned above it).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runtime.start_process()
  summary = analysis.analyze_trajectories(
      store.load_trajectories(_WORKDIR.value), os.path.join(_WORKDIR.value, 'analysis'),
      split=_SPLIT.value, color_by=_COLOR_BY.value, max_points=_MAX_POINTS.value)
  print('\n'.join(summary.lines()))


def run():
  """The ``ensembles-analyze`` command."""
  app.run(main)


if __name__ == '__main__':
  run()
