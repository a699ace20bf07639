"""Flags shared by the training entry points, and their start."""

from absl import flags
from ml_collections import config_flags

from ensembles import training
from ensembles.launch import runtime
from ensembles.training import periodic

CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep config file.', lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'Where the trajectories store goes.')
OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Delete what the workdir holds first.')
flags.mark_flags_as_required(['config', 'workdir'])


def train() -> training.TrainSummary:
  """Starts the process (logging, devices, multi-host runtime), trains, prints the table.

  An override of an hparam that the sweep or every variant sets is refused first
  (``training.check_overrides``): no member would use it. A stop on SIGTERM or Ctrl-C prints
  one line (where it stopped; rerunning resumes) and exits with ``periodic.exit_status`` of the
  signal: 143 for SIGTERM, 130 for Ctrl-C; a second signal ends the process at once, the same.
  """
  overrides = config_flags.get_override_values(flags.FLAGS[CONFIG.name])
  training.check_overrides(CONFIG.value, overrides)
  runtime.start_process()
  try:
    summary = training.train_and_record(CONFIG.value, WORKDIR.value, overwrite=OVERWRITE.value,
                                        exit_on_second_signal=True)
  except training.Stopped as e:
    print(e, flush=True)
    raise SystemExit(periodic.exit_status(e.signum)) from None
  print(summary.table())
  return summary
