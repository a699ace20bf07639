"""Lockstep ensembles of small networks and their prediction trajectories.

Public API:
  train_and_record(config, workdir) -> TrainSummary
  load_trajectories(workdir) -> Trajectories
  default_config() -> a sweep ConfigDict with every default
"""

# pylint: disable=g-import-not-at-top,wrong-import-position

from ensembles import devices as _devices

# Before anything starts the JAX backend: on CPU, one device per core (see devices.py).
_devices.use_cpu_cores()

from ensembles.experiment import (Stopped, TrainSummary, default_config, plan,
                                  train_and_record)
from ensembles.store import StoreError, Trajectories, load_trajectories
from ensembles.sweep import ConfigError, Hparams, expand_members, make_cohorts

__all__ = [
    'ConfigError', 'Hparams', 'Stopped', 'StoreError', 'TrainSummary', 'Trajectories',
    'default_config', 'expand_members', 'load_trajectories', 'make_cohorts', 'plan',
    'train_and_record',
]
