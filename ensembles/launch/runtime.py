"""Process-wide set-up, made once by every entry point (and notebook) before JAX starts."""

import sys

from absl import app, flags, logging

from ensembles.training import devices

DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Start jax.distributed, detecting SLURM / TPU pods / Open MPI.')
COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'jax.distributed: host:port of process 0.')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'jax.distributed: process count.')
PROCESS_ID = flags.DEFINE_integer('process_id', None, 'jax.distributed: this process.')


def start_process() -> None:
  """Quiet library logs, on a CPU-only machine one JAX device per core
  (``devices.use_cpu_cores``; a device count the user chose wins), and ``jax.distributed``
  when the flags ask for it."""
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  devices.use_cpu_cores()
  if DISTRIBUTED.value or COORDINATOR_ADDRESS.value is not None:
    devices.initialize_distributed(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value,
                                   PROCESS_ID.value)


# absl's help flags; absl exits with status 1 after printing the help.
_HELP_FLAGS = ('-?', '-h', '-help', '--help', '--helpshort', '--helpfull', '--helpxml')


def run(main) -> None:
  """``app.run(main)``, where asking for help (``--help``) exits with status 0: it succeeded.

  Each launcher adopts the key flags of the modules that define its flags (``common``, this
  one), so ``--help`` lists them and not only the launcher's own.
  """
  try:
    app.run(main)
  except SystemExit as e:
    if e.code == 1 and any(arg in _HELP_FLAGS for arg in sys.argv[1:]):
      raise SystemExit(0) from None
    raise
