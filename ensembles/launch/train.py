r"""Trains a sweep and records its trajectories.

  python -m ensembles.launch.train --config=ensembles/configs/quickstart.py --workdir=/tmp/quickstart \
      [--config.hparams.epochs=5] [--overwrite]

Rerunning the same command on the same workdir resumes where it stopped. On several hosts,
add --distributed (SLURM, TPU pods, Open MPI) or --coordinator_address, --num_processes and
--process_id; see ensembles/launch/slurm.sbatch and ensembles/launch/tpu_pod.sh.
"""

from absl import app, flags

from ensembles.launch import common
from ensembles.launch import runtime

flags.adopt_module_key_flags(common)
flags.adopt_module_key_flags(runtime)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.train()


def run():
  """The ``ensembles-train`` command."""
  runtime.run(main)


if __name__ == '__main__':
  run()
