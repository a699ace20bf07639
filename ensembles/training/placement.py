"""Placing a cohort on the devices and compiling its program to fit them: the one way the
trainer, the benchmarks and the tests set a cohort up.

    placed = place_cohort(mesh, cohort.hparams, dataset, train_indices, test_indices)
    program, compiled = compile_cohort(program, placed, mesh)
    state = compiled.train(compiled.init(placed.hp), placed.hp, placed.dataset, num_steps)

Members are sharded over the mesh (padded to a multiple of its size with masked members); the
dataset and probes are replicated on every device. On devices that report their memory (GPUs,
TPUs), ``compile_cohort`` halves the member block until XLA's memory analysis of the compiled
programs fits.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from ensembles.training import data as data_lib
from ensembles.training import devices
from ensembles.training import multihost
from ensembles.training.program import (CohortProgram, CompiledCohort, MemberHparams, Probes,
                                        member_hparams)
from ensembles.training.sweep import ConfigError, Hparams

# ``compile_to_fit`` keeps a cohort's programs within this share of a device's memory (the rest:
# allocator fragmentation and what XLA's analysis does not count).
MEMORY_FIT_FRACTION = 0.9


class Placed(NamedTuple):
  """A cohort's inputs where ``CohortProgram.compile`` expects them."""
  hp: MemberHparams
  dataset: data_lib.Dataset
  probes: Probes | None


def make_probes(dataset: data_lib.Dataset, train_indices: np.ndarray,
                test_indices: np.ndarray) -> Probes:
  """Normalised probe arrays, computed once on the host (``place`` puts them on devices)."""
  norm = lambda x: np.asarray(data_lib.normalize(x, np.asarray(dataset.mean),
                                                 np.asarray(dataset.std)))
  return Probes(x_train=norm(np.asarray(dataset.x_train)[train_indices]),
                y_train=np.asarray(dataset.y_train)[train_indices],
                x_test=norm(np.asarray(dataset.x_test)[test_indices]),
                y_test=np.asarray(dataset.y_test)[test_indices])


def place(mesh: jax.sharding.Mesh, hp: MemberHparams, dataset: data_lib.Dataset,
          probes: Probes | None = None) -> Placed:
  """Puts a cohort's inputs on ``mesh``: members sharded, dataset and probes replicated.

  ``hp``'s member count must be a multiple of the mesh size (``member_hparams(..., size)``).
  """
  rep = devices.replicated(mesh)
  return Placed(devices.put(hp, devices.member_shardings(hp, mesh)),
                dataset.replace(**{k: devices.put(getattr(dataset, k), rep)
                                   for k in ('x_train', 'y_train', 'x_test', 'y_test', 'mean',
                                             'std')}),
                None if probes is None else devices.put(probes, rep))


def place_cohort(mesh: jax.sharding.Mesh, hparams: Sequence[Hparams], dataset: data_lib.Dataset,
                 train_indices: np.ndarray, test_indices: np.ndarray) -> Placed:
  """``place`` for members ``hparams``, padded to the mesh, with the probes at the indices."""
  hp = member_hparams(hparams, devices.padded_size(len(hparams), mesh))
  return place(mesh, hp, dataset, make_probes(dataset, train_indices, test_indices))


def format_bytes(n: int) -> str:
  """'1.50 GiB', or '12.3 MiB' below a GiB."""
  return f'{n / 2**30:.2f} GiB' if n >= 2**30 else f'{n / 2**20:.1f} MiB'


def peak_bytes(compiled: CompiledCohort) -> int:
  """Device bytes the largest of a cohort's programs needs at once, by XLA's memory analysis
  (arguments + outputs - donated + temporaries, per device)."""
  def need(executable) -> int:
    m = executable.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes)
  return max(need(f) for f in (compiled.init, compiled.train, compiled.evaluate,
                               compiled.pretrain) if f is not None)


def compile_to_fit(program: CohortProgram, hp: MemberHparams, dataset: data_lib.Dataset,
                   probes: Probes, mesh: jax.sharding.Mesh, memory_limit: int | None,
                   fresh: bool = True) -> tuple[CohortProgram, CompiledCohort]:
  """``program.compile``, with smaller member blocks until the programs fit ``memory_limit``.

  Starting from ``program.member_block`` (0: every member of a device at once), the block is
  halved while ``peak_bytes`` exceeds ``MEMORY_FIT_FRACTION`` of the limit: a block's
  activations scale with its members, the cohort's state does not. No limit (CPU): one compile.

  Returns:
    (the program with the member block that fits, its compiled functions).

  Raises:
    ValueError: even one member at a time does not fit (the message says what would).
  """
  per_device = hp.real.shape[0] // mesh.size
  block = min(program.member_block or per_device, per_device)
  seconds = 0.0
  while True:
    compiled = program.compile(hp, dataset, probes, mesh, fresh=fresh)
    seconds += compiled.compile_seconds
    need = None if memory_limit is None else peak_bytes(compiled)
    if need is None or need <= MEMORY_FIT_FRACTION * memory_limit:
      return program, compiled._replace(compile_seconds=seconds)  # Every attempt counts.
    if block == 1:
      raise ValueError(
          f'{per_device} members per device need {format_bytes(need)} of '
          f'device memory even one at a time (XLA\'s analysis), more than '
          f'{MEMORY_FIT_FRACTION:.0%} of the {format_bytes(memory_limit)} a device holds; '
          'accepted: fewer members per device (more devices, or fewer seeds per cohort), a '
          'smaller batch_size, or a smaller config.train.eval_batch_size.')
    block = -(-block // 2)
    program = dataclasses.replace(program, member_block=block)




def compile_cohort(program: CohortProgram, placed: Placed, mesh: jax.sharding.Mesh, *,
                   fit_memory: bool = True, fresh: bool = True,
                   where: str = 'cohort') -> tuple[CohortProgram, CompiledCohort]:
  """Compiles ``program`` for ``placed`` inputs on ``mesh``, fitted to the devices' memory.

  Args:
    program: the cohort's program.
    placed: its inputs (``place_cohort``).
    mesh: the member mesh (``devices.member_mesh``).
    fit_memory: halve ``program.member_block`` until the programs fit the devices' memory
      (``compile_to_fit``); False keeps the block (the user set it) and only warns.
    fresh: the cohort starts from init (False: it resumes; pretraining is not compiled).
    where: names the cohort in messages and errors.

  Returns:
    (the program with the member block used, its compiled functions).

  Raises:
    ConfigError: even one member at a time does not fit a device.
  """
  limit = devices.memory_limit_bytes(mesh)
  try:
    fitted, compiled = compile_to_fit(program, placed.hp, placed.dataset, placed.probes, mesh,
                                      limit if fit_memory else None, fresh)
  except ValueError as e:
    raise ConfigError(f'{where}: {e}') from e
  need = not fit_memory and limit and peak_bytes(compiled)
  if need and need > MEMORY_FIT_FRACTION * limit:
    warnings.warn(f'{where}: config.train.member_block={program.member_block} needs '
                  f'{format_bytes(need)} per device by XLA\'s analysis, the device holds '
                  f'{format_bytes(limit)}: it may run out of memory (0 picks a block that fits).',
                  stacklevel=2)
  if fitted.member_block != program.member_block:
    multihost.say(f'{where}: trains its members in blocks of {fitted.member_block} per device '
                  f'to fit {format_bytes(limit)} of device memory')
  return fitted, compiled
