"""A sweep config read once into frozen, typed records: everything downstream takes these.

``read_config(config)`` checks every section of a ConfigDict (unknown keys, values, the
members of the sweep) and returns an ``ExperimentConfig``; nothing after it reads the
ConfigDict again. Defaults live in ``ensembles.configs.common``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ensembles.configs import common as config_common
from ensembles.store import STORAGE_DTYPES
from ensembles.training import sweep as sweep_lib
from ensembles.training.sweep import ConfigError

if TYPE_CHECKING:
  import ml_collections

# Dtypes of the training forward and backward passes (``TrainConfig.compute_dtype``).
COMPUTE_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class RecordConfig:
  """When and how predictions are recorded (``config.record``)."""
  dense_epochs: float
  dense_per_epoch: int
  every_epoch_until: float
  sparse_every: float
  dtype: str
  train_probe_size: int | None
  test_probe_size: int | None
  probe_seed: int

  def __post_init__(self):
    if self.dtype not in STORAGE_DTYPES:
      raise ConfigError(f'config.record.dtype={self.dtype!r}: accepted '
                        f'{", ".join(STORAGE_DTYPES)}.')
    for name in ('dense_per_epoch', 'sparse_every'):
      if not getattr(self, name) > 0:
        raise ConfigError(f'config.record.{name}={getattr(self, name)!r}: must be > 0.')
    for name in ('dense_epochs', 'every_epoch_until'):
      if not getattr(self, name) >= 0:
        raise ConfigError(f'config.record.{name}={getattr(self, name)!r}: must be >= 0.')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Knobs of the engine, not of the members (``config.train``)."""
  eval_batch_size: int
  member_block: int
  compute_dtype: str
  log_every_seconds: float
  checkpoint_every_seconds: float
  compilation_cache_dir: str | None

  def __post_init__(self):
    if self.eval_batch_size <= 0:
      raise ConfigError(f'config.train.eval_batch_size={self.eval_batch_size}: must be > 0.')
    if self.member_block < 0:
      raise ConfigError(
          f'config.train.member_block={self.member_block}: accepted 0 (the default: picked by '
          'backend, architecture and device memory) or a positive member count.')
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ConfigError(f'config.train.compute_dtype={self.compute_dtype!r}: accepted '
                        f'{", ".join(COMPUTE_DTYPES)}.')

  @property
  def member_block_set(self) -> bool:
    """Whether the user chose the member block (else it is fitted to the device's memory)."""
    return self.member_block > 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where datasets live (``config.data``); None: the defaults of ``training.data``."""
  data_dir: str | None
  manual_dir: str | None


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The members of a sweep (``config.hparams``, ``config.sweep``, ``config.variants``)."""
  members: tuple[sweep_lib.Hparams, ...]

  def __post_init__(self):
    names = sorted({m.dataset for m in self.members})
    if len(names) > 1:
      raise ConfigError(
          f'hparams.dataset takes several values {names}: members of one sweep share the '
          'probe sets, so a sweep uses one dataset; run one sweep per dataset.')

  @property
  def dataset(self) -> str:
    return self.members[0].dataset

  @property
  def epochs(self) -> int:
    return self.members[0].epochs


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """A whole sweep config, validated. ``source`` is the ConfigDict as a plain dict (for the
  store's manifest), with None for the ``hparams`` fields that no member uses (set by the sweep
  or by every variant: ``sweep.shadowed_hparams``), so that it never shows a value no member
  trained with."""
  sweep: SweepConfig
  record: RecordConfig
  train: TrainConfig
  data: DataConfig
  source: dict[str, Any]


def _section(config: ml_collections.ConfigDict, name: str, record_type: type,
             defaults: ml_collections.ConfigDict):
  """``config.<name>`` over its defaults, as ``record_type``; unknown keys are an error."""
  values = defaults.to_dict()
  given = config.get(name)
  if given is not None:
    unknown = sorted(set(given) - set(values))
    if unknown:
      raise ConfigError(f'config.{name} has unknown keys {unknown}; accepted: {sorted(values)}.')
    values.update(dict(given))
  return record_type(**values)


def read_config(config: ml_collections.ConfigDict) -> ExperimentConfig:
  """Reads and validates a sweep config; loads no data and compiles nothing.

  Raises:
    ConfigError (a ValueError) naming the config key or member at fault.
  """
  return ExperimentConfig(
      sweep=SweepConfig(tuple(sweep_lib.expand_members(config))),
      record=_section(config, 'record', RecordConfig, config_common.default_record_config()),
      train=_section(config, 'train', TrainConfig, config_common.default_train_config()),
      data=_section(config, 'data', DataConfig, config_common.default_data_config()),
      source=_source(config))


def _source(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``config`` as a plain dict, its shadowed ``hparams`` fields None."""
  source = config.to_dict()
  for name in sweep_lib.shadowed_hparams(config):
    if name in source.get('hparams', {}):
      source['hparams'][name] = None
  return source
