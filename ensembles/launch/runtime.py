"""Process-wide set-up, made once by every entry point (and notebook) before JAX starts."""

import os
import sys

from absl import app, flags, logging

DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Start jax.distributed, detecting SLURM / TPU pods / Open MPI.')
COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None, 'jax.distributed: host:port of process 0.')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'jax.distributed: process count.')
PROCESS_ID = flags.DEFINE_integer('process_id', None, 'jax.distributed: this process.')
VERBOSE = flags.DEFINE_bool('verbose', False, 'Print errors with their traceback, and INFO logs.')

# Exit status of a known error (bad config, flag value or store), printed without traceback.
ERROR_EXIT_CODE = 2


def start_process() -> None:
  """Quiet library logs, on a CPU-only machine one JAX device per core
  (``devices.use_cpu_cores``; a device count the user chose wins), and ``jax.distributed``
  when the flags ask for it."""
  # Imported here: a launcher that needs no JAX (import_arrays) runs without the trainer.
  from ensembles.training import devices  # pylint: disable=import-outside-toplevel
  # Orbax logs every save and restore at INFO.
  logging.set_verbosity(logging.INFO if VERBOSE.value else logging.WARNING)
  devices.use_cpu_cores()
  if DISTRIBUTED.value or COORDINATOR_ADDRESS.value is not None:
    devices.initialize_distributed(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value,
                                   PROCESS_ID.value)


# absl's help flags; absl exits with status 1 after printing the help.
_HELP_FLAGS = ('-?', '-h', '-help', '--help', '--helpshort', '--helpfull', '--helpxml')


def run(main) -> None:
  """``app.run(main)`` as a user meets it: a known error is one short block, not a traceback.

  A ``ValueError`` (``ConfigError`` and ``StoreError`` are ones: their messages say what was
  wrong, where, and what is accepted), an ``OSError``, or a config file that cannot be loaded or
  overridden prints ``error: <message>`` and exits ERROR_EXIT_CODE; ``--verbose`` (or ENSEMBLES_VERBOSE=1)
  shows the traceback instead. Asking for help (``--help``) exits 0 (absl exits 1). Each
  launcher adopts the key flags of the modules that define its flags (``common``, this one),
  so ``--help`` lists them and not only the launcher's own.
  """
  verbose = lambda: '--verbose' in sys.argv or os.environ.get('ENSEMBLES_VERBOSE') == '1'  # noqa

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:  # A bad flag value, an unknown flag.
      _fail(f'{e} (--help lists the flags)')
    except Exception as e:  # pylint: disable=broad-except  # config_flags: load or override
      if verbose():
        raise
      _fail(_plain(e))

  def guarded(argv):
    try:
      return main(argv)
    except (ValueError, OSError) as e:  # OSError: a config file that failed to load, a disk
      if verbose():
        raise
      _fail(_plain(e))

  try:
    app.run(guarded, flags_parser=parse)
  except SystemExit as e:
    if e.code == 1 and any(arg in _HELP_FLAGS for arg in sys.argv[1:]):
      raise SystemExit(0) from None
    raise


def _plain(error: BaseException) -> str:
  """An error's message as text: config_flags wraps a KeyError (quoted, escaped) in others."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str):
    return error.args[0]
  if not isinstance(error, (ValueError, OSError)):  # e.g. a SyntaxError in a config file
    return f'{type(error).__name__}: {error}'
  return str(error)


def _fail(message: str) -> None:
  print(f'error: {message}\n(--verbose shows the traceback)', file=sys.stderr)
  raise SystemExit(ERROR_EXIT_CODE)
