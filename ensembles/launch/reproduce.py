r"""Regenerates every number and figure of docs/REPRODUCTION.md.

  python -m ensembles.launch.reproduce --workdir=workdirs/reproduction [--docs_dir=docs] [--notrain]
  python -m ensembles.launch.reproduce --config_arg=mnist1d --workdir=workdirs/reproduction_mnist1d
  python -m ensembles.launch.reproduce --config_arg=mnist5k --workdir=workdirs/reproduction_mnist5k

Trains the sweep of ensembles/configs/reproduction.py (digits, or the argument's dataset) into --workdir
(resuming what it holds), runs the standard analysis into --workdir/analysis and the report's
four findings, and writes --docs_dir/figures/*.png, --docs_dir/reproduction_numbers.md and
.json; for mnist1d (mnist5k), --docs_dir/figures/mnist1d_*.png (mnist5k_*.png) and
reproduction_numbers_mnist1d.md, .json (_mnist5k).
"""

import sys

from absl import app, flags

from ensembles.configs import reproduction as config_lib
from ensembles.launch import runtime
from ensembles.reproduction import report as reproduction

flags.adopt_module_key_flags(runtime)

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trajectories store of the sweep.')
_DOCS_DIR = flags.DEFINE_string('docs_dir', 'docs', 'Where the figures and numbers go.')
_CONFIG_ARG = flags.DEFINE_enum(
    'config_arg', '', list(config_lib.ARGS),
    'Argument of ensembles/configs/reproduction.py: the dataset (digits if empty, mnist1d, mnist5k); '
    'tiny: test-sized.')
_TRAIN = flags.DEFINE_bool('train', True, 'Train (or resume) before analysing.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runtime.start_process()
  command = 'python -m ensembles.launch.reproduce ' + ' '.join(sys.argv[1:])
  files = reproduction.regenerate(_WORKDIR.value, _DOCS_DIR.value, _CONFIG_ARG.value,
                                  train=_TRAIN.value, command=command)
  print('Wrote:\n' + '\n'.join(files))


def run():
  """The ``ensembles-reproduce`` command."""
  runtime.run(main)


if __name__ == '__main__':
  run()
