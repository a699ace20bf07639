r"""Trains a sweep, then maps its trajectories: the README's main job.

  python -m ensembles.launch.run --config=ensembles/configs/quickstart.py --workdir=/tmp/quickstart \
      [--config.hparams.epochs=5] [--split=train] [--color_by=arch] [--overwrite]

Writes the trajectories store to --workdir and the analysis to --workdir/analysis.
Rerunning the same command resumes training where it stopped.
"""

import os

import jax
from absl import app, flags

from ensembles import analysis
from ensembles import store
from ensembles.configs import common as config_common
from ensembles.launch import common
from ensembles.launch import runtime

flags.adopt_module_key_flags(common)
flags.adopt_module_key_flags(runtime)

_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'test'], 'Probe split to analyse.')
_COLOR_BY = flags.DEFINE_string('color_by', 'arch', 'Hparams key that colours trajectories.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  hparams = sorted(config_common.default_hparams())
  if _COLOR_BY.value not in hparams:  # Checked before hours of training, not after.
    raise app.UsageError(f'--color_by={_COLOR_BY.value!r}: accepted one of {hparams}.')
  common.train()
  workdir = common.WORKDIR.value  # Every process maps its share; process 0 writes and prints.
  report = analysis.analyze_trajectories(
      store.load_trajectories(workdir), os.path.join(workdir, 'analysis'),
      split=_SPLIT.value, color_by=_COLOR_BY.value)
  if jax.process_index() == 0:
    print('\n'.join(report.lines()))


def run():
  """The ``ensembles-run`` command."""
  runtime.run(main)


if __name__ == '__main__':
  run()
