"""Lockstep ensembles of small networks and the map of their prediction trajectories.

Layers (each imports only those below it; ``tests/test_layers.py`` checks):

  ensembles.launch, ensembles.reproduction   entry points and the paper's report
  ensembles.analysis                          reads stores through ``store.TrajectoryStore``
  ensembles.training                          config records -> cohorts -> one XLA program each
  ensembles.configs                           sweep files; ``common`` holds every default
  ensembles.store                             the store: format, writer, reader (NumPy + Orbax)

Public API (names are imported on first use, so ``import ensembles.store`` stays light):
  train_and_record(config, workdir) -> TrainSummary
  load_trajectories(workdir) -> Trajectories
  default_config() -> a sweep ConfigDict with every default
  use_cpu_cores(): one JAX device per CPU core; call it before JAX starts (launchers do)
"""

import importlib

_LAZY = {
    'ConfigError': 'ensembles.training',
    'Hparams': 'ensembles.training',
    'Stopped': 'ensembles.training',
    'TrainSummary': 'ensembles.training',
    'expand_members': 'ensembles.training',
    'make_cohorts': 'ensembles.training',
    'plan': 'ensembles.training',
    'train_and_record': 'ensembles.training',
    'use_cpu_cores': 'ensembles.training',
    'StoreError': 'ensembles.store',
    'Trajectories': 'ensembles.store',
    'load_trajectories': 'ensembles.store',
    'default_config': 'ensembles.configs.common',
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
