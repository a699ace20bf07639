"""Process-wide set-up, made once by every entry point (and notebook) before JAX starts."""

import ast
import difflib
import os
import re
import signal
import sys

from absl import app, flags, logging

from ensembles.configs import common as config_common

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
  shows the traceback instead. An override of a config key that does not exist names the
  nearest one (``unknown config key hparams.lerning_rate; did you mean
  hparams.learning_rate?``). Asking for help (``--help``) exits 0 (absl exits 1). Each
  launcher adopts the key flags of the modules that define its flags (``common``, this one),
  so ``--help`` lists them and not only the launcher's own. A Ctrl-C that training does not
  stop at a safe point itself (loading a dataset, the analysis) prints one line and exits 130.
  """
  def verbose() -> bool:
    if os.environ.get('ENSEMBLES_VERBOSE') == '1':
      return True
    if VERBOSE.present:  # Parsed: --verbose, --verbose=true, --noverbose...
      return VERBOSE.value
    return any(re.fullmatch(r'--?verbose(=(1|true|True))?', a) for a in sys.argv[1:])

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:  # A bad flag value, an unknown flag.
      _fail(f'{e} (--help lists the flags)')
    except Exception as e:  # pylint: disable=broad-except  # config_flags: load or override
      if verbose():
        raise
      _fail(_unknown_config_key(argv) or _plain(e))

  def guarded(argv):
    try:
      return main(argv)
    # OSError: a config file that failed to load, a disk; UsageError: a flag value the store
    # refuses (absl would print the whole usage).
    except (ValueError, OSError, app.UsageError) as e:
      if verbose():
        raise
      _fail(_plain(e))
    except KeyboardInterrupt:  # Ctrl-C outside training's own stop (loading, the analysis).
      if verbose():
        raise
      print('stopped on Ctrl-C (SIGINT): rerun the same command to resume.', flush=True)
      raise SystemExit(128 + signal.SIGINT) from None  # The shell's, as training's stop.

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
  if not isinstance(error, (ValueError, OSError, app.UsageError)):  # e.g. a config SyntaxError
    return f'{type(error).__name__}: {error}'
  return str(error)


def _unknown_config_key(argv: list[str]) -> str | None:
  """The first ``--<config>.<path>=...`` of argv whose path names no field of the config it
  overrides, as a message with the nearest field name; None when every path names one (or the
  config file does not load: its own error says more)."""
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if not hasattr(type(flag), 'override_values'):  # Not a config_flags flag.
      continue
    given = [a.split('=', 1)[1] for a in argv[1:] if a.startswith((f'--{name}=', f'-{name}='))]
    overrides = [a for a in argv[1:] if re.match(rf'--?(no)?{name}\.', a)]
    if not given or not overrides:
      continue
    try:
      config = flag.parser.parse(given[-1])
    except Exception:  # pylint: disable=broad-except  # reported by the caller
      return None
    for arg in overrides:
      path = arg.split('=', 1)[0].split('.', 1)[1]
      message = _check_config_path(config, path)
      if (message and path.startswith('sweep.') and '=' in arg
          and path[len('sweep.'):] in config_common.default_hparams()):
        message += ' ' + _whole_sweep_hint(name, config.sweep, path[len('sweep.'):],
                                           arg.split('=', 1)[1])
      if message:
        return f'{arg}: {message}'
  return None


def _check_config_path(config, path: str) -> str | None:
  """Why ``path`` (``a.b[0].c``) names no field of ``config``; None if it does (or if it runs
  into a value that is not a dict, which config_flags reports itself)."""
  node, walked = config, ''
  for part in path.split('.'):
    key, *indices = re.split(r'[\[\]]+', part.rstrip(']'))
    if not hasattr(node, 'keys'):
      return None
    keys = sorted(node.keys())
    field = f'{walked}.{key}'.lstrip('.')
    if key not in keys:
      near = difflib.get_close_matches(key, keys, n=1)
      if near:
        return f'unknown config key {field}; did you mean {f"{walked}.{near[0]}".lstrip(".")}?'
      where = f'config.{walked}' if walked else 'the config'
      return f'unknown config key {field}; {where} has: {", ".join(keys)}.'
    node = node[key]
    for index in indices:
      if not isinstance(node, (tuple, list)) or not index.isdigit():
        return None
      if int(index) >= len(node):
        return (f'no config entry {field}[{index}]; config.{field} has {len(node)} '
                f'(indices 0 to {len(node) - 1}).')
      node, field = node[int(index)], f'{field}[{index}]'
    walked = field
  return None


def _whole_sweep_hint(flag: str, sweep, name: str, value: str) -> str:
  """How to add the field ``name`` to a config's sweep from the command line: config_flags sets
  existing fields only, so the whole sweep is given as a dict."""
  try:
    values = ast.literal_eval(value)
  except (SyntaxError, ValueError):
    values = value
  values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
  whole = repr({**sweep.to_dict(), name: values})
  return f'To add a field to the sweep, give it whole: --{flag}.sweep="{whole}"'


def _fail(message: str) -> None:
  print(f'error: {message}\n(--verbose shows the traceback)', file=sys.stderr)
  raise SystemExit(ERROR_EXIT_CODE)
