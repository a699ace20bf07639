r"""Trains a sweep and records its trajectories.

  python -m launch.train --config=configs/quickstart.py --workdir=/tmp/quickstart \
      [--config.hparams.epochs=5] [--overwrite]

Rerunning the same command on the same workdir resumes where it stopped. On several hosts,
add --distributed (SLURM, TPU pods, Open MPI) or --coordinator_address, --num_processes and
--process_id; see launch/slurm.sbatch and launch/tpu_pod.sh.
"""

from absl import app

from launch import common


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.train()


if __name__ == '__main__':
  app.run(main)
