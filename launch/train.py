r"""Trains a sweep and records its trajectories.

  python -m launch.train --config=configs/quickstart.py --workdir=/tmp/quickstart \
      [--config.hparams.epochs=5] [--overwrite]

Rerunning the same command on the same workdir resumes where it stopped.
"""

from absl import app, flags, logging
from ml_collections import config_flags

import ensembles

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the trajectories store goes.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Delete what the workdir holds first.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  summary = ensembles.train_and_record(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  print(summary.table())


if __name__ == '__main__':
  app.run(main)
