"""Training many small networks in lockstep cohorts and recording their trajectories.

Public API:
  train_and_record(config, workdir, overwrite=False) -> TrainSummary
  plan(config) -> Plan (validated, nothing compiled); Plan.compile_cohort(c, mesh)
  read_config(config) -> ExperimentConfig (frozen, typed records)
  expand_members(config), make_cohorts(members); Hparams, Cohort
  check_overrides(config, overrides): refuses command-line overrides that no member uses
  ConfigError, Stopped
  use_cpu_cores(), initialize_distributed(...): process-wide set-up, called by the launchers
"""

from ensembles.training.config import ExperimentConfig, read_config
from ensembles.training.devices import initialize_distributed, use_cpu_cores
from ensembles.training.experiment import Plan, TrainSummary, plan, train_and_record
from ensembles.training.loop import CohortSummary, Stopped
from ensembles.training.sweep import (Cohort, ConfigError, Hparams, check_overrides, expand_members,
                                      make_cohorts)

__all__ = [
    'Cohort', 'CohortSummary', 'ConfigError', 'ExperimentConfig', 'Hparams', 'Plan', 'Stopped',
    'TrainSummary', 'check_overrides', 'expand_members', 'initialize_distributed',
    'make_cohorts', 'plan', 'read_config', 'train_and_record', 'use_cpu_cores',
]
