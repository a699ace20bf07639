"""Sweep configs → members → cohorts.

A sweep config (``ensembles/configs/<name>.py``, ``get_config(arg)``) holds

* ``config.hparams``: one value per hyperparameter (the defaults of every member);
* ``config.sweep``: a ConfigDict whose fields are sequences over the same names.

* ``config.variants`` (optional): a tuple of dicts, each a sub-sweep over hparam
  names (values or sequences of values) — for values that only make sense
  together, e.g. an optimizer with its own learning rates, or an architecture
  with its own width.

The members are the Cartesian product of the sweep fields applied over the
defaults; with variants, the concatenation over variants of the product of the
variant's fields and the sweep's fields. Member order is deterministic:
variants in the order given; within one, fields in alphabetical order of their
names (the order ``ConfigDict.keys()`` gives), the last one varying fastest,
exactly as ``itertools.product`` does. A field that the sweep sets, or that
every variant sets, is therefore never read from ``config.hparams``
(``shadowed_hparams``); a command-line override of it there is refused
(``check_overrides``).

Members that can share one compiled program form a *cohort*: everything that
changes the program's shapes or structure (see ``COHORT_KEYS``) is equal within
a cohort; everything else (``MEMBER_KEYS``) becomes a traced per-member array.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from ensembles.configs import common as config_common
from ensembles.training import data as data_lib
from ensembles.training import models as models_lib
from ensembles.training.optim import OPTIMIZERS, SCHEDULES

INITS = ('default', 'random_labels', 'subset')


# Fields that change the compiled program: equal within a cohort.
COHORT_KEYS = ('dataset', 'arch', 'width', 'depth', 'norm', 'patch_size', 'num_heads',
               'kernel_size', 'optimizer', 'batch_size', 'epochs', 'warmup_epochs', 'init',
               'init_epochs', 'init_subset')
# Fields that are traced per-member arrays inside a cohort.
MEMBER_KEYS = ('learning_rate', 'momentum', 'weight_decay', 'schedule', 'augment',
               'label_smoothing', 'init_scale', 'seed')


@dataclasses.dataclass(frozen=True)
class Hparams:
  """The resolved hyperparameters of one member (validated, typed)."""
  dataset: str
  arch: str
  width: int
  depth: int
  norm: bool
  patch_size: int
  num_heads: int
  kernel_size: int
  optimizer: str
  learning_rate: float
  momentum: float
  nesterov: bool
  batch_size: int
  weight_decay: float
  schedule: str
  warmup_epochs: float
  epochs: int
  augment: bool
  label_smoothing: float
  init_scale: float
  seed: int
  init: str
  init_epochs: int
  init_subset: float

  @property
  def model_config(self) -> models_lib.ModelConfig:
    return models_lib.ModelConfig(
        arch=self.arch, width=self.width, depth=self.depth, norm=self.norm,
        patch_size=self.patch_size, num_heads=self.num_heads, kernel_size=self.kernel_size)

  def cohort_key(self) -> tuple[Any, ...]:
    return tuple(getattr(self, k) for k in COHORT_KEYS)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Cohort:
  """Members that train as one vmapped program.

  Attributes:
    index: position of the cohort in the sweep.
    members: global member indices, in sweep order.
    hparams: the members' hparams, aligned with ``members``.
  """
  index: int
  members: tuple[int, ...]
  hparams: tuple[Hparams, ...]

  @property
  def shared(self) -> Hparams:
    """The first member's hparams: its COHORT_KEYS fields hold for all."""
    return self.hparams[0]

  @property
  def size(self) -> int:
    return len(self.members)

  def describe(self) -> str:
    h = self.shared
    return (f'{h.dataset}/{h.arch}(w={h.width},d={h.depth})/{h.optimizer}'
            f'/bs={h.batch_size}/{h.epochs}ep')


class ConfigError(ValueError):
  """A sweep config that cannot be run; the message says where and why."""


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Hparams)}
_TYPE_NAMES = {'int': int, 'float': float, 'bool': bool, 'str': str}


def _coerce(name: str, value: Any, where: str) -> Any:
  """Converts ``value`` to the type of hparam ``name`` or raises ConfigError."""
  kind = _TYPE_NAMES[_FIELD_TYPES[name]]
  if kind is bool:
    if isinstance(value, bool):
      return value
  elif kind is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
  elif kind is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif isinstance(value, str):
    return value
  raise ConfigError(f'{where}: {value!r} is not a valid {kind.__name__} for hparam {name!r}.')


def _check_choice(value: Any, choices: Sequence[Any], where: str) -> None:
  if value not in choices:
    accepted = ', '.join(map(str, choices))
    raise ConfigError(f'{where}: unknown value {value!r}; accepted: {accepted}.')


def _validate_member(h: Hparams, where: str) -> None:
  """Checks one member's values; ``where`` names the member in errors."""
  _check_choice(h.dataset, data_lib.DATASETS, f'{where} hparams.dataset')
  _check_choice(h.arch, models_lib.ARCHS, f'{where} hparams.arch')
  _check_choice(h.optimizer, OPTIMIZERS, f'{where} hparams.optimizer')
  _check_choice(h.schedule, SCHEDULES, f'{where} hparams.schedule')
  _check_choice(h.init, INITS, f'{where} hparams.init')
  positive = dict(width=h.width, depth=h.depth, batch_size=h.batch_size, epochs=h.epochs,
                  patch_size=h.patch_size, num_heads=h.num_heads, kernel_size=h.kernel_size,
                  init_scale=h.init_scale)
  for name, value in positive.items():
    if value <= 0:
      raise ConfigError(f'{where} hparams.{name}={value!r}: must be > 0.')
  non_negative = dict(learning_rate=h.learning_rate, weight_decay=h.weight_decay,
                      warmup_epochs=h.warmup_epochs, momentum=h.momentum)
  for name, value in non_negative.items():
    if not value >= 0:  # Also catches NaN.
      raise ConfigError(f'{where} hparams.{name}={value!r}: must be >= 0.')
  if not 0 <= h.momentum < 1:
    raise ConfigError(f'{where} hparams.momentum={h.momentum!r}: must be in [0, 1).')
  if not 0 <= h.label_smoothing < 1:
    raise ConfigError(
        f'{where} hparams.label_smoothing={h.label_smoothing!r}: must be in [0, 1).')
  if not 0 < h.init_subset <= 1:
    raise ConfigError(f'{where} hparams.init_subset={h.init_subset!r}: must be a fraction of '
                      'the train set in (0, 1].')
  if h.init_epochs < 0:
    raise ConfigError(f'{where} hparams.init_epochs={h.init_epochs!r}: must be >= 0.')
  if h.schedule == 'warmup_cosine' and h.warmup_epochs >= h.epochs:
    raise ConfigError(f'{where} hparams.warmup_epochs={h.warmup_epochs!r}: must be shorter '
                      f'than hparams.epochs={h.epochs}.')


def _resolve(values: Mapping[str, Any], where: str) -> Hparams:
  coerced = {name: _coerce(name, values[name], f'{where} hparams.{name}') for name in _FIELD_TYPES}
  if coerced['optimizer'] == 'sgd' and coerced['nesterov']:
    coerced['optimizer'] = 'nesterov'
  coerced['nesterov'] = coerced['optimizer'] == 'nesterov'
  hparams = Hparams(**coerced)
  _validate_member(hparams, where)
  return hparams


def _as_sequence(value: Any) -> Sequence[Any]:
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    return (value,)
  return value


def _sweep_fields(sweep: dict[str, Any], where: str,
                  defaults: Mapping[str, Any]) -> dict[str, Sequence[Any]]:
  """Checks that ``sweep`` maps hparam names to non-empty sequences."""
  unknown = sorted(set(sweep) - set(defaults))
  if unknown:
    raise ConfigError(f'{where} has keys {unknown} that are not hparams; '
                      f'accepted: {sorted(defaults)}.')
  for name, values in sweep.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
      raise ConfigError(f'{where}.{name}={values!r}: must be a sequence of values, '
                        f'e.g. ({values!r},).')
    if not values:
      raise ConfigError(f'{where}.{name} is empty: the sweep would have no members; '
                        'give at least one value or remove the field.')
  return dict(sweep)


def expand_members(config: ml_collections.ConfigDict) -> list[Hparams]:
  """The members of a sweep, in sweep order (see the module docstring).

  Args:
    config: a sweep config with ``hparams`` and ``sweep``.

  Returns:
    One validated ``Hparams`` per member.

  Raises:
    ConfigError: unknown hparam names, empty sweep fields, invalid values.
  """
  defaults = config_common.default_hparams().to_dict()
  base = dict(config.hparams)
  unknown = sorted(set(base) - set(defaults))
  if unknown:
    raise ConfigError(f'config.hparams has unknown keys {unknown}; accepted: {sorted(defaults)}.')
  defaults.update(base)
  sweep = _sweep_fields(dict(config.get('sweep') or {}), 'config.sweep', defaults)
  variants = config.get('variants') or ({},)
  if isinstance(variants, Mapping) or not isinstance(variants, Sequence):
    raise ConfigError(f'config.variants={variants!r}: must be a tuple of dicts (sub-sweeps).')
  members = []
  for v, variant in enumerate(variants):
    where = f'config.variants[{v}]'
    if not isinstance(variant, Mapping):
      raise ConfigError(f'{where}={variant!r}: must be a dict of hparam values or sequences.')
    fields = _sweep_fields({k: _as_sequence(x) for k, x in variant.items()}, where, defaults)
    clash = sorted(set(fields) & set(sweep))
    if clash:
      raise ConfigError(f'{where} and config.sweep both set {clash}: set each in one place.')
    fields.update(sweep)
    names = sorted(fields)
    for combo in itertools.product(*(fields[n] for n in names)):
      values = dict(defaults, **dict(zip(names, combo)))
      swept = ', '.join(f'{n}={x!r}' for n, x in zip(names, combo))
      members.append(_resolve(values, f'member {len(members)} ({swept or "defaults"})'))
  epochs = sorted({m.epochs for m in members})
  if len(epochs) > 1:
    raise ConfigError(f'hparams.epochs takes several values {epochs}: all members of a sweep '
                      'share one recording grid, so they must train for the same number of '
                      'epochs; run one sweep per epoch count.')
  return members


def _variants(config: ml_collections.ConfigDict) -> tuple[Mapping[str, Any], ...]:
  """The variants that are dicts (``expand_members`` reports the others)."""
  variants = config.get('variants') or ()
  if isinstance(variants, Mapping) or not isinstance(variants, Sequence):
    return ()
  return tuple(v for v in variants if isinstance(v, Mapping))


def shadowed_hparams(config: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
  """The hparams whose ``config.hparams`` value no member uses, and where theirs come from.

  A field that ``config.sweep`` sets, or that every variant sets, takes its values from there.

  Returns:
    hparam name -> {config path that sets it: its value there}, e.g.
    ``{'learning_rate': {'variants[0].learning_rate': 0.05}}``.
  """
  sweep = config.get('sweep') or {}
  shadowed = {name: {f'sweep.{name}': values} for name, values in sweep.items()}
  variants = _variants(config)
  if variants:
    for name in set.intersection(*(set(v) for v in variants)) - set(shadowed):
      shadowed[name] = {f'variants[{i}].{name}': v[name] for i, v in enumerate(variants)}
  return shadowed


def _flag_value(value: Any) -> str:
  """``value`` as it follows ``--flag=`` on a shell command line."""
  text = value if isinstance(value, str) else repr(value)
  if not re.fullmatch(r'[\w.+-]+', text):
    text = f'"{text}"' if "'" in text else f"'{text}'"
  return text


def check_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                    flag: str = 'config') -> None:
  """Refuses command-line overrides of hparams that no member would use.

  Example: on ``quickstart.py:tiny``, whose one variant sets ``learning_rate=0.05``,
  ``--config.hparams.learning_rate=0.1`` would train every member at 0.05; this raises instead,
  naming ``--config.variants[0].learning_rate=0.1``.

  Args:
    config: the sweep config after the overrides.
    overrides: overridden config paths and their new values, as ml_collections'
      ``config_flags.get_override_values`` gives them (``{'hparams.learning_rate': 0.1}``).
    flag: the name of the config flag, for the messages.

  Raises:
    ConfigError: an override of ``hparams.<name>`` where ``shadowed_hparams`` lists ``name``.
  """
  given = {}
  for path, value in overrides.items():
    if path == 'hparams' and isinstance(value, Mapping):  # --config.hparams='{...}'
      given.update(value)
    elif path.startswith('hparams.'):
      given[path.removeprefix('hparams.')] = value
  shadowed = shadowed_hparams(config)
  for name, value in given.items():
    if name not in shadowed:
      continue
    sources = shadowed[name]
    if f'sweep.{name}' in sources:
      where = f'config.sweep.{name}={sources[f"sweep.{name}"]!r}'
      instead = (f'--{flag}.sweep.{name}={_flag_value((value,))} (a tuple of the values to sweep)')
    else:
      where = 'config.variants (' + ', '.join(f'{p.split(".")[0]}: {v!r}'
                                              for p, v in sources.items()) + ')'
      instead = ' '.join(f'--{flag}.{p}={_flag_value(value)}' for p in sources)
    raise ConfigError(
        f'--{flag}.hparams.{name}={_flag_value(value)} would be ignored: every member takes '
        f'{name} from {where}, not from config.hparams. Set it there instead: {instead}.')


def make_cohorts(members: Sequence[Hparams]) -> list[Cohort]:
  """Groups members into cohorts by ``COHORT_KEYS``, in order of first appearance."""
  groups: dict[tuple[Any, ...], list[int]] = {}
  for index, member in enumerate(members):
    groups.setdefault(member.cohort_key(), []).append(index)
  return [Cohort(index=c, members=tuple(idx), hparams=tuple(members[i] for i in idx))
          for c, idx in enumerate(groups.values())]
