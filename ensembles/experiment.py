"""``train_and_record(config, workdir)``: a whole sweep, from config to store.

Everything that can be wrong with the input is checked first — members, record
grid, datasets, model options, batch sizes, the workdir — before anything is
compiled or written. Then each cohort trains in lockstep between recording
times, records its members' predictions, and saves its state. Rerunning the same
command on the same workdir resumes: finished cohorts are skipped, the others
continue from their last saved state. A run holds its workdir for as long as it
trains: a second run into the same workdir is refused with an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from ensembles import data as data_lib
from ensembles import devices
from ensembles import record as record_lib
from ensembles import store as store_lib
from ensembles import sweep as sweep_lib
from ensembles import train as train_lib


def default_train_config() -> ml_collections.ConfigDict:
  """``config.train`` defaults: knobs of the engine, not of the members."""
  return ml_collections.ConfigDict(dict(
      eval_batch_size=1024,    # probe examples per member evaluated at once
      member_block=0,          # members trained together per device; 0: by backend, arch, memory
      compute_dtype='float32',  # training passes: float32, or bfloat16 (mixed precision)
      log_every_seconds=10.0,  # progress line period
      checkpoint_every_seconds=60.0,  # resumable state this often (epoch end or recording)
      # JAX's persistent compilation cache ('' or None: none): reruns and resumes skip
      # compiling (devices.use_compilation_cache; a folder set in JAX's own config wins).
      compilation_cache_dir=devices.DEFAULT_COMPILATION_CACHE_DIR,
  ))


def default_data_config() -> ml_collections.ConfigDict:
  """``config.data`` defaults."""
  return ml_collections.ConfigDict(dict(
      data_dir=ml_collections.config_dict.placeholder(str),    # None: data.default_data_dir()
      manual_dir=ml_collections.config_dict.placeholder(str),  # archives downloaded by hand
  ))


class Stopped(Exception):
  """Training stopped on SIGTERM after saving its state: rerun the same command to resume."""


@dataclasses.dataclass(frozen=True)
class CohortSummary:
  """One cohort's run: ``train_seconds`` is the wall time from the first step to the last
  write (evaluations and recording included, compilation not), and ``model_steps_per_second``
  counts the members' steps of this run over it."""
  index: int
  description: str
  members: int
  steps: int
  compile_seconds: float
  train_seconds: float
  model_steps_per_second: float
  train_accuracy: float
  test_accuracy: float
  diverged: int
  resumed_from_step: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainSummary:
  """What ``train_and_record`` did, cohort by cohort."""
  workdir: str
  cohorts: tuple[CohortSummary, ...]
  wall_seconds: float

  @property
  def num_members(self) -> int:
    return sum(c.members for c in self.cohorts)

  def table(self) -> str:
    header = (f'{"cohort":<44} {"members":>7} {"wall s":>7} {"steps/s":>9} '
              f'{"train acc":>9} {"test acc":>8} {"diverged":>8}')
    rows = [header, '-' * len(header)]
    for c in self.cohorts:
      rows.append(f'{c.index:>3} {c.description:<40} {c.members:>7} '
                  f'{c.compile_seconds + c.train_seconds:>7.1f} {c.model_steps_per_second:>9.0f} '
                  f'{c.train_accuracy:>9.3f} {c.test_accuracy:>8.3f} {c.diverged:>8}')
    rows.append(f'{self.num_members} members in {len(self.cohorts)} cohorts, '
                f'{self.wall_seconds:.1f} s; trajectories in {self.workdir}')
    return '\n'.join(rows)

  def __str__(self) -> str:
    return self.table()


@dataclasses.dataclass(frozen=True)
class _Plan:
  """A validated sweep: everything needed to run, nothing compiled yet."""
  members: tuple[sweep_lib.Hparams, ...]
  cohorts: tuple[sweep_lib.Cohort, ...]
  programs: tuple[train_lib.CohortProgram, ...]
  datasets: dict[str, data_lib.Dataset]
  record: record_lib.RecordConfig
  epochs_grid: np.ndarray
  probes: dict[str, dict[str, np.ndarray]]
  eval_batch_size: int
  log_every_seconds: float
  checkpoint_every_seconds: float
  compilation_cache_dir: str
  member_block_set: bool = False  # config.train.member_block given (else fitted to memory)

  def manifest(self, config: ml_collections.ConfigDict) -> dict:
    dataset = self.members[0].dataset
    return dict(
        config=config.to_dict(),
        members=[m.to_dict() for m in self.members],
        cohorts=[dict(index=c.index, members=list(c.members), description=c.describe(),
                      steps=record_lib.recording_steps(self.epochs_grid, p.steps_per_epoch)
                      .tolist())
                 for c, p in zip(self.cohorts, self.programs)],
        epochs=self.epochs_grid.tolist(),
        record=dataclasses.asdict(self.record),
        num_classes=self.datasets[dataset].info.num_classes,
        probes={f'{split}_{kind}': self.probes[split][kind].tolist()
                for split in store_lib.SPLITS for kind in ('indices', 'labels')},
    )

  def compile_cohort(self, c: int, mesh: jax.sharding.Mesh, fresh: bool = True):
    """Places cohort ``c``'s hparams, dataset and probes on ``mesh`` and compiles its program.

    On devices that report their memory (GPUs, TPUs), a cohort whose programs would not fit
    trains in smaller member blocks (``train.compile_to_fit``), unless
    ``config.train.member_block`` was set: then it only warns.

    Returns:
      (``train.CompiledCohort``, placed hparams, placed dataset, placed probes).
    """
    cohort, program = self.cohorts[c], self.programs[c]
    dataset = self.datasets[cohort.shared.dataset]
    hp, dataset, probes = train_lib.place(
        mesh, train_lib.member_hparams(cohort.hparams, devices.padded_size(cohort.size, mesh)),
        dataset, train_lib.make_probes(dataset, self.probes['train']['indices'],
                                       self.probes['test']['indices']))
    limit = devices.memory_limit_bytes(mesh)
    where = f'cohort {c} ({cohort.describe()})'
    try:
      fitted, compiled = train_lib.compile_to_fit(
          program, hp, dataset, probes, mesh, None if self.member_block_set else limit, fresh)
    except ValueError as e:
      raise sweep_lib.ConfigError(f'{where}: {e}') from e
    need = self.member_block_set and limit and train_lib.peak_bytes(compiled)
    if need and need > train_lib.MEMORY_FIT_FRACTION * limit:
      warnings.warn(f'{where}: config.train.member_block={program.member_block} needs '
                    f'{train_lib.format_bytes(need)} per device by XLA\'s analysis, the device '
                    f'holds {train_lib.format_bytes(limit)}: it may run out of memory (0 picks '
                    'a block that fits).', stacklevel=2)
    if fitted.member_block != program.member_block:
      _say(f'{where}: trains its members in blocks of {fitted.member_block} per device to fit '
           f'{train_lib.format_bytes(limit)} of device memory')
    return compiled, hp, dataset, probes


def _section(config: ml_collections.ConfigDict, name: str, defaults: ml_collections.ConfigDict):
  section = ml_collections.ConfigDict(defaults)
  given = config.get(name)
  if given is not None:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
      raise sweep_lib.ConfigError(f'config.{name} has unknown keys {unknown}; '
                                  f'accepted: {sorted(defaults)}.')
    section.update(dict(given))
  return section


def plan(config: ml_collections.ConfigDict) -> _Plan:
  """Validates a sweep config and loads its datasets; compiles and writes nothing.

  Raises:
    ConfigError (a ValueError) naming the config key or member at fault.
  """
  members = sweep_lib.expand_members(config)
  record = record_lib.RecordConfig.from_config(
      _section(config, 'record', record_lib.default_record_config()))
  train_cfg = _section(config, 'train', default_train_config())
  data_cfg = _section(config, 'data', default_data_config())
  if train_cfg.eval_batch_size <= 0:
    raise sweep_lib.ConfigError(
        f'config.train.eval_batch_size={train_cfg.eval_batch_size}: must be > 0.')
  if train_cfg.member_block < 0:
    raise sweep_lib.ConfigError(
        f'config.train.member_block={train_cfg.member_block}: accepted 0 (the default: on '
        f'CPU {train_lib.CPU_MEMBER_BLOCKS}, 1 for other architectures; all members of a '
        'device at once on accelerators) or a positive member count.')
  if train_cfg.compute_dtype not in train_lib.COMPUTE_DTYPES:
    raise sweep_lib.ConfigError(
        f'config.train.compute_dtype={train_cfg.compute_dtype!r}: accepted '
        f'{", ".join(train_lib.COMPUTE_DTYPES)}.')
  names = sorted({m.dataset for m in members})
  if len(names) > 1:
    raise sweep_lib.ConfigError(
        f'hparams.dataset takes several values {names}: members of one sweep share the '
        'probe sets, so a sweep uses one dataset; run one sweep per dataset.')
  datasets = {name: data_lib.load_dataset(name, data_dir=data_cfg.data_dir,
                                          manual_dir=data_cfg.manual_dir) for name in names}
  for index, member in enumerate(members):
    num_train = datasets[member.dataset].info.num_train
    if member.batch_size > num_train:
      raise sweep_lib.ConfigError(
          f'member {index}: hparams.batch_size={member.batch_size} is larger than the '
          f'{num_train} training examples of {member.dataset!r}; accepted: 1..{num_train}.')
  cohorts = sweep_lib.make_cohorts(members)
  programs = []
  for cohort in cohorts:
    info = datasets[cohort.shared.dataset].info
    try:
      programs.append(train_lib.CohortProgram.for_cohort(
          cohort, info, train_cfg.eval_batch_size, train_cfg.member_block,
          train_cfg.compute_dtype))
    except ValueError as e:
      raise sweep_lib.ConfigError(
          f'cohort {cohort.index} ({cohort.describe()}, members {list(cohort.members)}): {e}'
      ) from e
  dataset = datasets[names[0]]
  probes = {}
  for split, labels, size in (('train', dataset.y_train, record.train_probe_size),
                              ('test', dataset.y_test, record.test_probe_size)):
    try:
      indices = data_lib.probe_indices(np.asarray(labels), size, record.probe_seed)
    except ValueError as e:
      raise sweep_lib.ConfigError(f'config.record.{split}_probe_size: {e}') from e
    probes[split] = dict(indices=indices, labels=np.asarray(labels)[indices])
  return _Plan(members=tuple(members), cohorts=tuple(cohorts), programs=tuple(programs),
               datasets=datasets, record=record,
               epochs_grid=record_lib.recording_epochs(members[0].epochs, record), probes=probes,
               eval_batch_size=train_cfg.eval_batch_size,
               log_every_seconds=train_cfg.log_every_seconds,
               checkpoint_every_seconds=train_cfg.checkpoint_every_seconds,
               compilation_cache_dir=train_cfg.compilation_cache_dir,
               member_block_set=train_cfg.member_block > 0)


def _say(message: str) -> None:
  """Progress goes to stdout (also in notebooks), apart from library logs; process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


# Shortest training call between two recordings epochs apart, in seconds (whole epochs; at
# least one): states and SIGTERM stops happen at call ends, and fast epochs are not worth a
# call and a host sync each.
MIN_CHUNK_SECONDS = 2.0

# flock errors of a filesystem without (working) locks, e.g. NFS without a lock daemon.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


@contextlib.contextmanager
def _hold_workdir(workdir: str) -> Iterator[None]:
  """Holds ``workdir`` while training: another run into it gets a ``ConfigError``.

  Process 0 takes an exclusive ``flock`` on the directory itself (creating it if needed; no
  file is added), without waiting: two runs into one store would write the same records and
  states, and an ``overwrite`` would delete a running one's trajectories. The kernel releases
  the lock when the process ends, however it ends, so a killed run can be resumed at once.
  Locks are per machine (and per shared filesystem whose locks work). Every process raises
  the same error.
  """
  held, problem = None, ''
  if jax.process_index() == 0:
    try:
      os.makedirs(workdir, exist_ok=True)
      held = os.open(workdir, os.O_RDONLY)
      fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      problem = (f'workdir {workdir!r} is in use by another training run (it holds the '
                 "directory's lock). Wait for that run to end or stop it, then rerun to "
                 'resume; or use another workdir.')
    except OSError as e:
      if held is not None and e.errno in _NO_LOCKS:
        warnings.warn(f'workdir {workdir!r}: its filesystem has no working locks ({e}); '
                      'training goes on, but nothing stops a second run into it.', stacklevel=3)
      else:
        problem = (f'workdir {workdir!r} cannot be written ({e}); give a writable directory '
                   'with free space.')
  if jax.process_count() > 1:
    failed = multihost_utils.broadcast_one_to_all(np.int32(bool(problem)))
    problem = problem or (f'workdir {workdir!r} cannot be held by process 0 (its error says '
                          'why).' if failed else '')
  try:
    if problem:
      raise sweep_lib.ConfigError(problem)
    yield
  finally:
    if held is not None:
      os.close(held)  # Releases the lock.


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[Callable[[], bool]]:
  """While training, SIGTERM (a preemption notice, ``scancel``, a job's time limit) asks the
  run to save its state at the end of the current training call (whole epochs: one, or a few
  under ~2 s) or the next recording and raise ``Stopped``, instead of dying where it stands;
  a second SIGTERM kills at once. Yields whether a stop was asked of this process (``_agreed``
  makes it every process's decision).
  """
  asked = threading.Event()

  def on_sigterm(signum, frame):
    if asked.is_set():
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
      os.kill(os.getpid(), signal.SIGTERM)
    asked.set()

  main = threading.current_thread() is threading.main_thread()  # Only it may set handlers.
  previous = signal.signal(signal.SIGTERM, on_sigterm) if main else None
  try:
    yield asked.is_set
  finally:
    if main:
      signal.signal(signal.SIGTERM, previous)


def _agreed(stop: bool, due: bool, epochs: int) -> tuple[bool, bool, int]:
  """(stop, state due, epochs per call) decided alike on every process: a stop if any process
  was asked, process 0's clock for the rest. Every process's train calls, state saves (Orbax
  barriers) and stops must match, and each process measures its own time."""
  if jax.process_count() == 1:
    return stop, due, epochs
  views = np.asarray(multihost_utils.process_allgather(np.array([stop, due, epochs], np.int64)))
  return bool(views[:, 0].max()), bool(views[0, 1]), int(views[0, 2])


def _empty_directory(directory: str) -> None:
  """Deletes what ``directory`` holds, keeping the (locked) directory itself."""
  for entry in os.scandir(directory):
    if entry.is_dir(follow_symlinks=False):
      shutil.rmtree(entry.path)
    else:
      os.unlink(entry.path)


def _prepare_workdir(workdir: str, manifest: dict, overwrite: bool) -> None:
  """Refuses a workdir that holds another sweep, unless ``overwrite``; writes sweep.json.

  Every process checks (and raises the same error); only process 0 writes.
  """
  writer = jax.process_index() == 0
  if overwrite and os.path.isdir(workdir) and writer:
    _empty_directory(workdir)
  _sync('overwrite')
  fresh = True
  if os.path.exists(os.path.join(workdir, store_lib.SWEEP_FILE)):
    stored = store_lib.read_manifest(workdir)
    if any(stored.get(k) != manifest[k] for k in ('members', 'epochs', 'probes', 'record')):
      raise sweep_lib.ConfigError(
          f'workdir {workdir!r} holds a different sweep (its sweep.json lists other members, '
          'recording grid or probes). Use a new workdir, or pass overwrite=True '
          '(--overwrite) to delete the stored trajectories.')
    fresh = False
  elif os.path.isdir(workdir) and os.listdir(workdir):
    raise sweep_lib.ConfigError(
        f'workdir {workdir!r} is not empty and holds no sweep.json: refusing to write into it. '
        'Use a new or empty workdir, or pass overwrite=True (--overwrite).')
  _sync('checked')  # Every process has looked before process 0 writes.
  if fresh and writer:
    try:
      store_lib.write_manifest(workdir, manifest)
    except OSError as e:
      raise sweep_lib.ConfigError(f'workdir {workdir!r} cannot be written ({e}); give a '
                                  'writable directory with free space.') from e
  _sync('manifest')


def _sync(name: str) -> None:
  """A barrier across processes (nothing on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'ensembles:{name}')


def _train_cohort(plan_: _Plan, c: int, workdir: str, mesh: jax.sharding.Mesh,
                  stop_asked: Callable[[], bool]) -> CohortSummary:
  """Trains cohort ``c`` from where its store stands, recording at its recording steps.

  Between two recordings it trains in whole epochs (``_chunk_ends``), and saves its state
  after a chunk or a record once ``checkpoint_every_seconds`` have passed since the last save,
  when ``stop_asked()`` (then raises ``Stopped``), and at the end; across processes these
  decisions are agreed (``_agreed``). States are saved under their training step
  (``state.step``, read back from the state itself on resume); a state implies the records up
  to its step are stored.
  """
  cohort, program = plan_.cohorts[c], plan_.programs[c]
  steps = record_lib.recording_steps(plan_.epochs_grid, program.steps_per_epoch)
  directory = store_lib.cohort_dir(workdir, cohort.index)
  writer = record_lib.CohortWriter(directory, plan_.record.dtype, cohort.size)
  latest = writer.latest_state_step()
  if writer.recorded() >= set(range(len(steps))):  # Finished earlier: nothing to compile.
    writer.close()
    final = store_lib.read_record(directory, len(steps) - 1)
    _say(f'cohort {c + 1}/{len(plan_.cohorts)} {cohort.describe()}: finished earlier')
    return _summary(c, cohort, steps, final, compile_seconds=0.0, train_seconds=0.0,
                    done_steps=0, resumed_from_step=int(steps[-1]))
  try:
    compiled, hp, dataset, probes = plan_.compile_cohort(c, mesh, fresh=latest is None)
    if latest is None:
      state, position, first = compiled.init(hp), 0, 0
      if compiled.pretrain is not None:
        state = compiled.pretrain(state, hp, dataset)
    else:
      state = writer.restore_state(latest, compiled.abstract_state)
      position = int(state.step.addressable_data(0))  # Replicated: every process has it.
      first = int(np.searchsorted(steps, position, side='right'))  # Recorded up to here.
      lost = sorted(set(range(first)) - writer.recorded())
      if lost:  # A state implies its records (write_state): they were removed since.
        raise store_lib.StoreError(
            f'cohort {c} ({cohort.describe()}): recording steps {lost} are missing from '
            f'{os.path.join(directory, "records")}, and its saved state is at training step '
            f'{position}, past them, so resuming cannot record them again. Rerun with '
            '--overwrite (train_and_record(..., overwrite=True)) to train the sweep again, or '
            'read the rest with load_trajectories(workdir, allow_partial=True).')
      _say(f'cohort {c + 1}/{len(plan_.cohorts)} {cohort.describe()}: resuming at step '
           f'{position}')
    resumed_from = None if latest is None else position
    recorded = writer.recorded()
    started = last_log = last_checkpoint = time.perf_counter()
    done_steps, epochs = 0, 1  # Epochs per call: 1 until an interval has been timed.
    due = lambda now: now - last_checkpoint >= plan_.checkpoint_every_seconds  # noqa: E731
    for t in range(first, len(steps)):
      interval_started, interval_steps = time.perf_counter(), int(steps[t]) - position
      for end in _chunk_ends(position, int(steps[t]), epochs * program.steps_per_epoch):
        state = compiled.train(state, hp, dataset, end - position)
        done_steps += end - position
        position = end
        if end < steps[t]:  # A call ended between recordings: a state if one is due.
          jax.block_until_ready(state.step)
          stop, save, _ = _agreed(stop_asked(), due(time.perf_counter()), epochs)
          if stop or save:
            writer.write_state(position, state)
            last_checkpoint = time.perf_counter()
          if stop:
            raise Stopped(_stopped(plan_, c, position))
      evaluation = compiled.evaluate(state, probes)
      if t not in recorded:  # Present after a crash between record and state writes.
        writer.write_record(t, state, evaluation)
      jax.block_until_ready(evaluation)  # (The record's write has already waited for it.)
      now = time.perf_counter()
      pace = (now - interval_started) / interval_steps if interval_steps else None
      stop, save, epochs = _agreed(
          stop_asked() and t < len(steps) - 1, due(now),
          _epochs_per_chunk(pace, program.steps_per_epoch) if pace else epochs)
      if stop or save or t == len(steps) - 1:
        writer.write_state(position, state)
        last_checkpoint = now
      if stop:
        raise Stopped(_stopped(plan_, c, position))
      if now - last_log >= plan_.log_every_seconds or t == len(steps) - 1:
        last_log = now
        rate = cohort.size * done_steps / max(now - started, 1e-9)
        remaining = cohort.size * (steps[-1] - steps[t]) / max(rate, 1e-9)
        _say(f'cohort {c + 1}/{len(plan_.cohorts)} {cohort.describe()}: {cohort.size} members x '
             f'{steps[t]}/{steps[-1]} steps, {rate:.0f} model-steps/s, ETA {remaining:.0f} s')
  finally:
    writer.close()  # Waits for the last writes: they are part of the training time.
  train_seconds = time.perf_counter() - started
  final = dict(diverged_at=devices.to_host(state.diverged_at)[:cohort.size],
               **{k: devices.to_host(getattr(evaluation, k))[:cohort.size]
                  for k in ('train_accuracy', 'test_accuracy')})
  return _summary(c, cohort, steps, final, compile_seconds=compiled.compile_seconds,
                  train_seconds=train_seconds, done_steps=done_steps,
                  resumed_from_step=resumed_from)


def _stopped(plan_: _Plan, c: int, position: int) -> str:
  return (f'stopped on SIGTERM at step {position} of cohort {c + 1}/{len(plan_.cohorts)} '
          f'({plan_.cohorts[c].describe()}), its state saved: rerun the same command to resume.')


def _epochs_per_chunk(seconds_per_step: float, steps_per_epoch: int) -> int:
  """Epochs per ``train`` call between recordings: 1, or as many as ``MIN_CHUNK_SECONDS``
  take at the last interval's pace (each call and check costs a few milliseconds)."""
  return max(1, int(MIN_CHUNK_SECONDS / max(seconds_per_step * steps_per_epoch, 1e-9)))


def _chunk_ends(position: int, target: int, chunk: int) -> list[int]:
  """Where the ``train`` calls from step ``position`` to ``target`` end: at multiples of
  ``chunk`` (a whole number of epochs), and at ``target``.

  ``_chunk_ends(5, 50, 22) == [22, 44, 50]``. Chunks never cross those boundaries, so a
  state can be saved, or a stop honoured, between recordings epochs apart; the step count of
  a call is traced, so no length compiles again.
  """
  ends = list(range((position // chunk + 1) * chunk, target, chunk))
  return ends + [target] if target > position else []


def _summary(c: int, cohort: sweep_lib.Cohort, steps: np.ndarray, final: dict[str, np.ndarray],
             compile_seconds: float, train_seconds: float, done_steps: int,
             resumed_from_step: int | None) -> CohortSummary:
  """A cohort's summary from its final record (diverged_at and accuracies per member)."""
  alive = final['diverged_at'] < 0
  mean = lambda k: float(np.nanmean(final[k])) if alive.any() else float('nan')
  return CohortSummary(
      index=c, description=cohort.describe(), members=cohort.size, steps=int(steps[-1]),
      compile_seconds=compile_seconds, train_seconds=train_seconds,
      model_steps_per_second=cohort.size * done_steps / max(train_seconds, 1e-9),
      train_accuracy=mean('train_accuracy'), test_accuracy=mean('test_accuracy'),
      diverged=int((~alive).sum()), resumed_from_step=resumed_from_step)


def _use_compilation_cache(directory: str | None) -> None:
  """``devices.use_compilation_cache``; a default folder that cannot be created only warns."""
  try:
    devices.use_compilation_cache(directory)
  except OSError as e:
    problem = (f'config.train.compilation_cache_dir={directory!r} cannot be created ({e}); '
               "accepted: a writable directory, or '' for no compilation cache.")
    if directory != devices.DEFAULT_COMPILATION_CACHE_DIR:
      raise sweep_lib.ConfigError(problem) from e
    warnings.warn(f'Training without a compilation cache: {problem}', stacklevel=3)


def train_and_record(config: ml_collections.ConfigDict, workdir: str, *,
                     overwrite: bool = False) -> TrainSummary:
  """Trains every member of a sweep in lockstep cohorts and records trajectories.

  Args:
    config: a sweep config (see ``configs/quickstart.py``).
    workdir: where the trajectories store goes. If it already holds this sweep,
      training resumes; if it holds another, an error (unless ``overwrite``).
    overwrite: delete whatever ``workdir`` holds first (not while another run trains
      into it: a workdir is held by one run at a time).

  Returns:
    A ``TrainSummary``; ``print(summary)`` shows the per-cohort table.

  Raises:
    ConfigError: bad input, before anything is compiled or written (see ``plan``).
    Stopped: SIGTERM arrived; the state was saved at the end of the current training call
      (whole epochs) or the next recording.

  Example:
    >>> summary = train_and_record(quickstart.get_config('tiny'), '/tmp/run')
    >>> trajectories = load_trajectories('/tmp/run')
  """
  started = time.perf_counter()
  plan_ = plan(config)
  _use_compilation_cache(plan_.compilation_cache_dir)
  workdir = os.path.abspath(workdir)
  with _hold_workdir(workdir), _stop_on_sigterm() as stop_asked:
    _prepare_workdir(workdir, plan_.manifest(config), overwrite)
    _say(f'{len(plan_.members)} members in {len(plan_.cohorts)} cohorts, '
         f'{len(plan_.epochs_grid)} recording times, workdir {workdir}')
    mesh = devices.member_mesh()
    summaries = tuple(_train_cohort(plan_, c, workdir, mesh, stop_asked)
                      for c in range(len(plan_.cohorts)))
  return TrainSummary(workdir=workdir, cohorts=summaries,
                      wall_seconds=time.perf_counter() - started)


def default_config() -> ml_collections.ConfigDict:
  """A complete sweep config with every default and an empty sweep (one member).

  Sweep files start from it: ``config = default_config(); config.sweep.seed = (0, 1)``.
  """
  return ml_collections.ConfigDict(dict(
      hparams=sweep_lib.default_hparams(),
      sweep=ml_collections.ConfigDict(),  # hparam name -> sequence of values
      variants=(),  # sub-sweeps (dicts), each crossed with `sweep`; () = just `sweep`
      record=record_lib.default_record_config(),
      train=default_train_config(),
      data=default_data_config(),
  ))
