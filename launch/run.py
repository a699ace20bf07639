r"""Trains a sweep, then maps its trajectories: the README's main job.

  python -m launch.run --config=configs/quickstart.py --workdir=/tmp/quickstart \
      [--config.hparams.epochs=5] [--split=train] [--color_by=arch] [--overwrite]

Writes the trajectories store to --workdir and the analysis to --workdir/analysis.
Rerunning the same command resumes training where it stopped.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

import analysis
import ensembles

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the trajectories store goes.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Delete what the workdir holds first.')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'test'], 'Probe split to analyse.')
_COLOR_BY = flags.DEFINE_string('color_by', 'arch', 'Hparams key that colours trajectories.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  hparams = sorted(ensembles.default_config().hparams)
  if _COLOR_BY.value not in hparams:  # Checked before hours of training, not after.
    raise app.UsageError(f'--color_by={_COLOR_BY.value!r}: accepted one of {hparams}.')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  summary = ensembles.train_and_record(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  print(summary.table())
  report = analysis.analyze_trajectories(
      ensembles.load_trajectories(_WORKDIR.value), os.path.join(_WORKDIR.value, 'analysis'),
      split=_SPLIT.value, color_by=_COLOR_BY.value)
  print('\n'.join(report.lines()))


if __name__ == '__main__':
  app.run(main)
