"""``train_and_record(config, workdir)``: a whole sweep, from config to store.

Everything that can be wrong with the input is checked first (``plan``): members, record grid,
datasets, model options, batch sizes, then the workdir, before anything is compiled or
written. Then each cohort trains in lockstep between recording times, records its members'
predictions and saves its state (``loop.train_cohort``). Rerunning the same command on the
same workdir resumes: finished cohorts are skipped, the others continue from their last saved
state. A run holds its workdir for as long as it trains (``workdir.hold``).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import TYPE_CHECKING

import jax
import numpy as np

from ensembles.configs import common as config_common
from ensembles.training import data as data_lib
from ensembles.training import devices
from ensembles.training import loop
from ensembles.training import multihost
from ensembles.training import placement
from ensembles.training import recording
from ensembles.training import sweep as sweep_lib
from ensembles.training import workdir as workdir_lib
from ensembles.training.config import ExperimentConfig, read_config
from ensembles.training.periodic import StopOnSignal, signal_name
from ensembles.training.program import CohortProgram, CompiledCohort
from ensembles.training.sweep import ConfigError

if TYPE_CHECKING:
  import ml_collections


@dataclasses.dataclass(frozen=True)
class TrainSummary:
  """What ``train_and_record`` did, cohort by cohort."""
  workdir: str
  cohorts: tuple[loop.CohortSummary, ...]
  wall_seconds: float

  @property
  def num_members(self) -> int:
    return sum(c.members for c in self.cohorts)

  def table(self) -> str:
    header = (f'{"cohort":<44} {"members":>7} {"wall s":>7} {"steps/s":>9} '
              f'{"train acc":>9} {"test acc":>8} {"diverged":>8}')
    rows = [header, '-' * len(header)]
    for c in self.cohorts:
      timing = (f'{"done earlier":>17}' if c.done_earlier else
                f'{c.compile_seconds + c.train_seconds:>7.1f} {c.model_steps_per_second:>9.0f}')
      rows.append(f'{c.index:>3} {c.description:<40} {c.members:>7} {timing} '
                  f'{c.train_accuracy:>9.3f} {c.test_accuracy:>8.3f} {c.diverged:>8}')
    rows.append(f'{self.num_members} members in {len(self.cohorts)} cohorts, '
                f'{self.wall_seconds:.1f} s; trajectories in {self.workdir}')
    return '\n'.join(rows)

  def __str__(self) -> str:
    return self.table()


@dataclasses.dataclass(frozen=True)
class Plan:
  """A validated sweep: everything needed to run, nothing compiled yet."""
  config: ExperimentConfig
  cohorts: tuple[sweep_lib.Cohort, ...]
  programs: tuple[CohortProgram, ...]
  dataset: data_lib.Dataset
  epochs_grid: np.ndarray
  probes: dict[str, dict[str, np.ndarray]]

  @property
  def members(self) -> tuple[sweep_lib.Hparams, ...]:
    return self.config.sweep.members

  @property
  def record(self):
    return self.config.record

  @property
  def train(self):
    return self.config.train

  def manifest(self) -> dict:
    """The store's ``sweep.json`` (``store.write_manifest`` adds the format version)."""
    return dict(
        config=self.config.source,
        members=[m.to_dict() for m in self.members],
        cohorts=[dict(index=c.index, members=list(c.members), description=c.describe(),
                      steps=recording.recording_steps(self.epochs_grid, p.steps_per_epoch)
                      .tolist())
                 for c, p in zip(self.cohorts, self.programs)],
        epochs=self.epochs_grid.tolist(),
        record=dataclasses.asdict(self.record),
        num_classes=self.dataset.info.num_classes,
        probes={f'{split}_{kind}': self.probes[split][kind].tolist()
                for split in ('train', 'test') for kind in ('indices', 'labels')},
    )

  def cohort_name(self, c: int) -> str:
    """How every message names cohort ``c``: its index, as in the store (``cohorts/001``
    for 1), and its description."""
    return f'cohort {self.cohorts[c].index} ({self.cohorts[c].describe()})'

  def compile_cohort(self, c: int, mesh: jax.sharding.Mesh,
                     fresh: bool = True) -> tuple[CompiledCohort, placement.Placed]:
    """Places cohort ``c``'s hparams, dataset and probes on ``mesh`` and compiles its program
    (``placement.compile_cohort``: fitted to the devices' memory unless
    ``config.train.member_block`` was set).

    Returns:
      (the compiled cohort, its placed inputs).
    """
    cohort = self.cohorts[c]
    placed = placement.place_cohort(mesh, cohort.hparams, self.dataset,
                                    self.probes['train']['indices'],
                                    self.probes['test']['indices'])
    _, compiled = placement.compile_cohort(
        self.programs[c], placed, mesh, fit_memory=not self.train.member_block_set,
        fresh=fresh, where=self.cohort_name(c))
    return compiled, placed


def plan(config: ml_collections.ConfigDict | ExperimentConfig) -> Plan:
  """Validates a sweep config and loads its dataset; compiles and writes nothing.

  Raises:
    ConfigError (a ValueError) naming the config key or member at fault.
  """
  cfg = config if isinstance(config, ExperimentConfig) else read_config(config)
  members = cfg.sweep.members
  dataset = data_lib.load_dataset(cfg.sweep.dataset, data_dir=cfg.data.data_dir,
                                  manual_dir=cfg.data.manual_dir)
  num_train = dataset.info.num_train
  for index, member in enumerate(members):
    if member.batch_size > num_train:
      raise ConfigError(
          f'member {index}: hparams.batch_size={member.batch_size} is larger than the '
          f'{num_train} training examples of {member.dataset!r}; accepted: 1..{num_train}.')
  cohorts = sweep_lib.make_cohorts(members)
  programs = []
  for cohort in cohorts:
    try:
      programs.append(CohortProgram.for_cohort(
          cohort, dataset.info, cfg.train.eval_batch_size, cfg.train.member_block,
          cfg.train.compute_dtype))
    except ValueError as e:
      raise ConfigError(
          f'cohort {cohort.index} ({cohort.describe()}, members {list(cohort.members)}): '
          f'{e}') from e
  probes = {}
  for split, labels, size in (('train', dataset.y_train, cfg.record.train_probe_size),
                              ('test', dataset.y_test, cfg.record.test_probe_size)):
    try:
      indices = data_lib.probe_indices(np.asarray(labels), size, cfg.record.probe_seed)
    except ValueError as e:
      raise ConfigError(f'config.record.{split}_probe_size: {e}') from e
    probes[split] = dict(indices=indices, labels=np.asarray(labels)[indices])
  return Plan(config=cfg, cohorts=tuple(cohorts), programs=tuple(programs), dataset=dataset,
              epochs_grid=recording.recording_epochs(cfg.sweep.epochs, cfg.record),
              probes=probes)


def _use_compilation_cache(directory: str | None) -> None:
  """``devices.use_compilation_cache``; a default folder that cannot be created only warns."""
  try:
    devices.use_compilation_cache(directory)
  except OSError as e:
    problem = (f'config.train.compilation_cache_dir={directory!r} cannot be created ({e}); '
               "accepted: a writable directory, or '' for no compilation cache.")
    if directory != config_common.DEFAULT_COMPILATION_CACHE_DIR:
      raise ConfigError(problem) from e
    warnings.warn(f'Training without a compilation cache: {problem}', stacklevel=3)


def train_and_record(config: ml_collections.ConfigDict, workdir: str, *,
                     overwrite: bool = False,
                     exit_on_second_signal: bool = False) -> TrainSummary:
  """Trains every member of a sweep in lockstep cohorts and records trajectories.

  Args:
    config: a sweep config (see ``ensembles/configs/quickstart.py``).
    workdir: where the trajectories store goes. If it already holds this sweep,
      training resumes; if it holds another, an error (unless ``overwrite``).
    overwrite: delete whatever ``workdir`` holds first (not while another run trains
      into it: a workdir is held by one run at a time).
    exit_on_second_signal: a second SIGTERM or Ctrl-C ends the process at once, even inside
      a compiled call (the commands: the process is only this run); False (a notebook, whose
      kernel should survive): the second signal goes to its usual handler at the end of the
      current training call (a ``KeyboardInterrupt`` for a Ctrl-C). Either way the store
      stays one that a rerun resumes from its last saved state.

  Returns:
    A ``TrainSummary``; ``print(summary)`` shows the per-cohort table.

  Raises:
    ConfigError: bad input, before anything is compiled or written (see ``plan``).
    Stopped: SIGTERM or SIGINT (Ctrl-C) arrived; the state was saved at the end of the
      current training call (``periodic.CHUNK_SECONDS``, mid-epoch included) or recording.

  Example:
    >>> summary = train_and_record(quickstart.get_config('tiny'), '/tmp/run')
    >>> trajectories = load_trajectories('/tmp/run')
  """
  started = time.perf_counter()
  plan_ = plan(config)
  _use_compilation_cache(plan_.train.compilation_cache_dir)
  workdir = os.path.abspath(workdir)
  stop = StopOnSignal(exit_at_once=exit_on_second_signal, say=multihost.say)
  with workdir_lib.hold(workdir), stop:
    workdir_lib.prepare(workdir, plan_.manifest(), overwrite)
    count = len(plan_.cohorts)
    cohorts = '1 cohort (0)' if count == 1 else f'{count} cohorts (0 to {count - 1})'
    multihost.say(f'{len(plan_.members)} members in {cohorts}, '
                  f'{len(plan_.epochs_grid)} recording times, workdir {workdir}')
    mesh = devices.member_mesh()
    pace, summaries = loop.RunPace(), []
    for c in range(count):
      if c and multihost.agree(stop.asked(), False, 0)[0]:
        raise loop.Stopped(f'stopped on {signal_name(stop.signum)} before '
                           f'{plan_.cohort_name(c)}, the cohorts before it done: rerun the '
                           'same command to resume.', stop.signum)
      summaries.append(loop.train_cohort(plan_, c, workdir, mesh, stop, pace=pace))
  return TrainSummary(workdir=workdir, cohorts=tuple(summaries),
                      wall_seconds=time.perf_counter() - started)
