r"""Training throughput: ensembles' trainer against one-at-a-time JAX and two PyTorch ensembles.

  python -m benchmarks.train                # the full table (about 25 min on 2 idle CPU cores)
  python -m benchmarks.train --quick        # smoke sizes, under a minute
  python -m benchmarks.train --conv         # conv formulations under vmap (cnn/resnet/convmixer)
  python -m benchmarks.train --members 16,256 --workloads mlp-digits   # a subset

Run from the repository root, with the package installed (``pip install -e .[bench]``).

Every measurement runs in a fresh subprocess: build, compile (timed), one step, then a
calibration that doubles its step count until a call takes a quarter of a chunk (it also warms
up), then ``--repeats`` timed chunks of about ``CHUNK_SECONDS``; the median is reported. A
row whose single step takes over ``MAX_SECONDS_PER_STEP`` reports that step alone. Peak memory
is the process's peak resident set (VmHWM, reset after compiling) over the warm-up and the
timed chunks: parameters, optimizer state, activations and the dataset, on top of the runtime.
Each child also measures the machine's float32 matmul peak just before it runs, and its
percentage uses that number (ratios within one run: the machine is shared and noisy).

Methods (rows):
  ensembles          the real trainer: ``ensembles.training.program.CohortProgram`` (vmap over
                     members inside a ``fori_loop`` over steps), members from a sweep of seeds,
                     placed and compiled by ``ensembles.training.placement``, data from
                     ``ensembles.training.data.load_dataset``; everything it does per step counts
                     (batch gather, cosine schedule, label smoothing, the finite checks).
  jax-one-at-a-time  the same network trained alone with jit + ``lax.scan`` (SGD momentum, its
                     own batches); E models take E times as long, so its model-steps/s do not
                     depend on E (measured once per workload, shown on every row).
  torch-func-vmap    ``torch.func.stack_module_state`` + ``vmap(grad(functional_call))``, SGD
                     momentum on the stacked tensors. BatchNorm without running statistics
                     (torch.func cannot update buffers in place under vmap).
  torch-bmm          hand-written batched ensemble: ``torch.baddbmm``/``bmm`` over the member
                     axis (the cnn through ``F.unfold`` + bmm), BatchNorm by hand, torch.optim
                     SGD (foreach).
  torch-grouped      cnn only: members stacked on channels, ``conv2d(groups=E)`` and per-channel
                     ``F.batch_norm`` (the usual hand-written PyTorch conv ensemble).
  ensembles-<n>dev   (--device_counts n,...) the trainer with its member axis sharded over n
                     forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``);
                     the plain 'ensembles' rows use the trainer's default, one device per core.

GFLOP/s = model-steps/s x batch x 3 x ``Network.flops_per_example()`` (a train step is about
three forward passes). Compile time is ``CohortProgram.compile`` (init, train and evaluate,
ahead of time) for the trainer, the init and the two scan lengths for jax-one-at-a-time.
The recording share comes from ``train_and_record`` with the default recording schedule and
epochs: 1 - (the same steps trained without recording) / (training wall time with recording,
the last writes included), split into the evaluations alone and the rest (the writes), and
again with one setting changed per row and at the paper's proportions
(``RECORDING_VARIANTS``). Where torch is missing its rows are skipped with a note.

Results go to stdout and to ``benchmarks/results/train_<host-kind>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

from benchmarks import common


@dataclasses.dataclass(frozen=True)
class Workload:
  """One model on one dataset (the hparams the trainer's sweep gets)."""

  dataset: str
  arch: str
  width: int
  depth: int
  batch_size: int
  kernel_size: int = 5  # convmixer only
  patch_size: int = 2  # convmixer only


# The workloads: the digits MLP 64-64-64 of NOTES.md, and an All-CNN on mnist5k small
# enough to train 256 members in a few GB (a 1,024-member cnn would need ~16 GB of activations).
WORKLOADS = {
  'mlp-digits': Workload('digits', 'mlp', width=64, depth=3, batch_size=64),
  'cnn-mnist5k': Workload('mnist5k', 'cnn', width=8, depth=1, batch_size=64),
}
MEMBERS = (1, 16, 64, 256, 1024)
# Largest ensemble per workload in the full run (memory and time on a 2-core, 23 GB machine).
MAX_MEMBERS = {'mlp-digits': 1024, 'cnn-mnist5k': 256}
# Members of the recording-share run per workload (default recording schedule, 10 epochs).
RECORDING_MEMBERS = {'mlp-digits': 256, 'cnn-mnist5k': 4}
PAPER_SCHEDULE = 'paper schedule: epochs=200, cifar10_paper grid, 719 train probes'
# The recording share again with one setting a user can change (the first workload only),
# and at the paper's proportions: config overrides of each row, by label.
RECORDING_VARIANTS = {
  'defaults': {},
  'record.dtype=float16': dict(record=dict(dtype='float16')),
  'record.train_probe_size=359': dict(record=dict(train_probe_size=359)),
  'hparams.epochs=50': dict(epochs=50),
  # ensembles/configs/cifar10_paper.py's training length and recording grid (a test checks
  # they still agree), with half of digits' 1,438 train examples as probes: the paper's every
  # other one.
  PAPER_SCHEDULE: dict(epochs=200, record=dict(dense_epochs=5, every_epoch_until=25,
                                               sparse_every=10, train_probe_size=719)),
}
# --quick: every method and code path at toy sizes (both on digits: small compiles).
QUICK_WORKLOADS = {
  'mlp-digits': Workload('digits', 'mlp', width=16, depth=1, batch_size=32),
  'cnn-digits': Workload('digits', 'cnn', width=4, depth=1, batch_size=16),
}
QUICK_MEMBERS = (2,)
# Side of the matmul that measures the peak in --quick (a smoke: the number is not reported).
QUICK_PEAK_MATMUL_SIZE = 512
# Children run at once in --quick (overlapping compiles; its timings mean nothing anyway).
QUICK_JOBS = 2
QUICK_RECORDING_MEMBERS = {'mlp-digits': 2}

# --conv: the conv families on digits (the quickstart's shapes), per formulation.
CONV_WORKLOADS = {
  'cnn-digits': Workload('digits', 'cnn', width=16, depth=2, batch_size=64),
  'resnet-digits': Workload('digits', 'resnet', width=1, depth=10, batch_size=64),
  'convmixer-digits': Workload(
    'digits', 'convmixer', width=32, depth=2, batch_size=64, kernel_size=5, patch_size=2
  ),
}
CONV_MEMBERS = (4, 16, 64)
CONV_FORMULATIONS = ('lax', 'im2col', 'member_loop')

METHODS = ('ensembles', 'jax-one-at-a-time', 'torch-func-vmap', 'torch-bmm', 'torch-grouped')
TORCH_METHODS = ('torch-func-vmap', 'torch-bmm', 'torch-grouped')
# Methods measured once per workload (their model-steps/s do not depend on E).
PER_MODEL_METHODS = ('jax-one-at-a-time',)
# Peers implemented per architecture.
TORCH_ARCHS = {'torch-func-vmap': ('mlp', 'cnn'), 'torch-bmm': ('mlp', 'cnn'),
               'torch-grouped': ('cnn',)}

# SGD hyperparameters of every method (the trainer's defaults: momentum 0.9).
LEARNING_RATE = 0.05
MOMENTUM = 0.9
# PyTorch BatchNorm momentum equal to the models' BATCH_NORM_MOMENTUM 0.9 (1 - 0.9).
TORCH_BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5
# Seconds one timed chunk should take (full / quick), and timed chunks per measurement.
CHUNK_SECONDS = 2.0
QUICK_CHUNK_SECONDS = 0.2
REPEATS = 3
# A child that has not finished after this long is reported as timed out.
CHILD_TIMEOUT_S = 900
QUICK_CHILD_TIMEOUT_S = 60
# Compile times across E count as "independent of E" within this ratio (noise on a shared CPU).
COMPILE_SPREAD = 1.5
# Stop after the warm-up step when a single step takes longer than this (then it is the row).
MAX_SECONDS_PER_STEP = 30.0
# Steps per compiled lax.scan of the one-at-a-time baseline.
SCAN_CHUNK = 100
# Probe examples per member evaluated at once (the trainer's default).
EVAL_BATCH_SIZE = 1024
# Probe examples of the throughput runs (compiled for evaluate, never evaluated there).
PROBE_SIZE = 256


# ---------------------------------------------------------------------------------------------
# Children: one measurement each.


def sweep_config(workload: Workload, members: int):
  """A one-cohort sweep: ``members`` seeds of ``workload`` at the benchmarks' SGD settings."""
  from ensembles.configs import common as config_common

  config = config_common.default_config()
  h = config.hparams
  h.dataset, h.arch, h.width, h.depth = (
    workload.dataset, workload.arch, workload.width, workload.depth)
  h.kernel_size, h.patch_size = workload.kernel_size, workload.patch_size
  h.batch_size, h.learning_rate, h.momentum = workload.batch_size, LEARNING_RATE, MOMENTUM
  config.sweep.seed = tuple(range(members))
  config.train.compilation_cache_dir = ''  # Compile times are measured.
  return config


def _trainer(spec: dict):
  """The real trainer's compiled cohort for this workload and E (``common.trainer_cohort``).

  Returns:
    (program, compiled cohort, placed inputs).
  """
  from ensembles.training import data as data_lib

  workload = Workload(**spec['workload'])
  dataset = data_lib.load_dataset(workload.dataset, data_dir=spec['data_dir'])
  return common.trainer_cohort(
    sweep_config(workload, spec['members']), dataset, EVAL_BATCH_SIZE,
    min(PROBE_SIZE, dataset.info.num_test), spec.get('formulation'))


def _child_ensembles(spec: dict) -> dict:
  import jax

  program, compiled, placed = _trainer(spec)
  _, result = common.trainer_timing(compiled, placed.hp, placed.dataset, spec)
  result.update(compile_s=compiled.compile_seconds, devices=jax.device_count(),
                flops_per_example=program.network.flops_per_example())
  return result


def _child_one_at_a_time(spec: dict) -> dict:
  """One model alone: jit + lax.scan over steps, SGD momentum, its own random batches."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from ensembles.training import data as data_lib
  from ensembles.training import models as models_lib

  workload = Workload(**spec['workload'])
  dataset = data_lib.to_device(data_lib.load_dataset(workload.dataset, data_dir=spec['data_dir']))
  info = dataset.info
  network = models_lib.build_network(
    models_lib.ModelConfig(workload.arch, workload.width, workload.depth,
                           kernel_size=workload.kernel_size, patch_size=workload.patch_size),
    info.input_shape, info.num_classes)
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)

  def step(carry, idx_B):
    params, model_state, opt_state = carry
    x_BxS = data_lib.normalize(jnp.take(dataset.x_train, idx_B, axis=0), dataset.mean,
                               dataset.std)
    y_B = jnp.take(dataset.y_train, idx_B, axis=0)

    def loss_fn(p):
      logits_BxC, new_state = network.apply(p, model_state, x_BxS, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B).mean(), new_state

    (_, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_state, opt_state), None

  train = jax.jit(lambda carry, idx_TxB: jax.lax.scan(step, carry, idx_TxB)[0])
  # Random batches drawn once, on device, reused by every chunk: no host work between chunks.
  rng = np.random.default_rng(0)
  idx_TxB = jnp.asarray(rng.integers(0, info.num_train, (SCAN_CHUNK, workload.batch_size)),
                        jnp.int32)
  started = time.perf_counter()
  params, model_state = jax.jit(network.init)(jax.random.key(0))
  carry = (params, model_state, tx.init(params))
  # A scan's length is static: one program of SCAN_CHUNK steps, one of 1 step for the rest.
  chunk = train.lower(carry, idx_TxB).compile()
  single = train.lower(carry, idx_TxB[:1]).compile()
  compile_s = time.perf_counter() - started
  holder = [carry]

  def run_steps(n):
    for _ in range(n // SCAN_CHUNK):
      holder[0] = chunk(holder[0], idx_TxB)
    for _ in range(n % SCAN_CHUNK):
      holder[0] = single(holder[0], idx_TxB[:1])
    jax.block_until_ready(holder[0])

  result = common.calibrated_timing(run_steps, {**spec, 'members': 1})
  result.update(compile_s=compile_s, flops_per_example=network.flops_per_example())
  return result


def _child_torch(spec: dict) -> dict:
  import jax.numpy as jnp
  import numpy as np
  import torch

  from benchmarks import train_torch
  from ensembles.training import data as data_lib

  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  workload = Workload(**spec['workload'])
  dataset = data_lib.load_dataset(workload.dataset, data_dir=spec['data_dir'])
  info = dataset.info
  x_NxS = np.asarray(data_lib.normalize(jnp.asarray(dataset.x_train), dataset.mean, dataset.std))
  x_N = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_NxS, -1, 1)))  # NCHW
  y_N = torch.from_numpy(np.asarray(dataset.y_train, np.int64))
  trainer = train_torch.make_trainer(
    spec['method'], workload.arch, width=workload.width, depth=workload.depth,
    members=spec['members'], input_shape=tuple(x_N.shape[1:]), num_classes=info.num_classes,
    learning_rate=LEARNING_RATE, momentum=MOMENTUM, bn_momentum=TORCH_BN_MOMENTUM,
    bn_epsilon=BN_EPSILON)
  generator = torch.Generator().manual_seed(0)

  def run_steps(n):
    for _ in range(n):
      idx_ExB = torch.randint(0, info.num_train, (spec['members'], workload.batch_size),
                              generator=generator)
      trainer.step(x_N[idx_ExB], y_N[idx_ExB])

  result = common.calibrated_timing(run_steps, spec)
  result.update(compile_s=None, finite=trainer.finite())
  return result


def _child_recording(spec: dict) -> dict:
  """``train_and_record`` (one cohort) against its steps trained alone and its evaluations alone.

  The same compiled program replays the run's training calls without evaluating or writing,
  then evaluates the probes once per recording; what the full run took beyond both is the
  writes (records, the final state) and the loop around them.
  """
  import jax

  from ensembles import store
  from ensembles.training import devices
  from ensembles.training import experiment
  from ensembles.training.recording import recording_steps

  workload = Workload(**spec['workload'])
  config = sweep_config(workload, spec['members'])
  config.data.data_dir = spec['data_dir']
  if spec.get('epochs'):
    config.hparams.epochs = spec['epochs']
  config.record.update(spec.get('record', {}))
  with tempfile.TemporaryDirectory() as workdir:
    summary = experiment.train_and_record(config, workdir, overwrite=True)
    records = os.path.join(store.cohort_dir(workdir, 0), 'records')
    written = sum(os.path.getsize(os.path.join(root, name))
                  for root, _, names in os.walk(records) for name in names)
  (cohort,) = summary.cohorts
  plan = experiment.plan(config)
  steps = recording_steps(plan.epochs_grid, plan.programs[0].steps_per_epoch)
  compiled, (hp, dataset, probes) = plan.compile_cohort(0, devices.member_mesh())
  state = compiled.init(hp)
  jax.block_until_ready(state)
  started = time.perf_counter()
  previous = 0
  for step in steps:
    if step > previous:
      state = compiled.train(state, hp, dataset, int(step - previous))
      previous = int(step)
  jax.block_until_ready(state)
  pure_s = time.perf_counter() - started
  evaluation = compiled.evaluate(state, probes)  # Warm-up.
  jax.block_until_ready(evaluation)
  started = time.perf_counter()
  for _ in steps:
    evaluation = compiled.evaluate(state, probes)
    jax.block_until_ready(evaluation)
  evaluate_s = time.perf_counter() - started
  return dict(recordings=len(steps), steps=int(steps[-1]), record_train_s=cohort.train_seconds,
              pure_train_s=pure_s, evaluate_s=evaluate_s, written_bytes=written,
              probes=sum(len(plan.probes[split]['indices']) for split in store.SPLITS),
              share=1 - pure_s / cohort.train_seconds,
              compile_s=cohort.compile_seconds)


def child_main(spec: dict) -> None:
  from ensembles.training import devices

  devices.use_cpu_cores()  # Before JAX starts, as the launchers do: one device per CPU core.
  common.without_compilation_cache()
  size = QUICK_PEAK_MATMUL_SIZE if spec.get('quick') else common.PEAK_MATMUL_SIZE
  result = dict(matmul_peak_gflops=common.jax_matmul_peak_gflops(size))
  kind = spec['method']
  if kind == 'recording':
    result.update(_child_recording(spec))
  elif kind == 'ensembles':
    result.update(_child_ensembles(spec))
  elif kind == 'jax-one-at-a-time':
    result.update(_child_one_at_a_time(spec))
  else:
    result.update(_child_torch(spec))
  common.emit_result(result)


# ---------------------------------------------------------------------------------------------
# Parent: plan the children, collect, print and write the tables.


def _torch_available() -> bool:
  import importlib.util

  return importlib.util.find_spec('torch') is not None


def measure(method, workload, members, args, **extra) -> dict:
  """Runs one method on one workload with E = ``members`` in a fresh child process.

  ``extra`` goes into the child's spec; ``devices=n`` forces n host devices.
  """
  spec = dict(method=method, workload=dataclasses.asdict(workload), members=members,
              data_dir=args.data_dir, quick=args.quick, chunk_seconds=args.chunk_seconds,
              repeats=args.repeats, max_seconds_per_step=args.max_seconds_per_step, **extra)
  env = {}
  if extra.get('devices'):
    env['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                        f" --xla_force_host_platform_device_count={extra['devices']}")
  started = time.perf_counter()
  result = common.run_child(['-m', 'benchmarks.train', '--child', json.dumps(spec)],
                            args.child_timeout, env)
  label = method + ''.join(f'/{k}={v}' for k, v in extra.items() if v)
  if 'error' in result:
    print(f'  {workload.arch} {label} E={members}: {result["error"]}', file=sys.stderr,
          flush=True)
  else:
    print(f'  {workload.arch}/{workload.dataset} {label} E={members}: '
          f'{result.get("steps_per_s", 0):.0f} model-steps/s '
          f'({time.perf_counter() - started:.0f} s)', file=sys.stderr, flush=True)
  return result


def _fmt(value, spec: str = '.0f', missing: str = '-') -> str:
  return missing if value is None else format(value, spec)


def _throughput_cells(result: dict, workload: Workload) -> list[str]:
  if 'error' in result:
    return [f"error: {result['error'][:60]}"] + ['-'] * 5
  rate = result['steps_per_s']
  flops = result.get('flops_per_example')
  gflops = rate * workload.batch_size * 3 * flops / 1e9 if flops else None
  peak = result['matmul_peak_gflops']
  return [
    _fmt(rate) + (f" ({result['note']})" if result.get('note') else ''),
    _fmt(gflops, '.1f'),
    _fmt(None if gflops is None else 100 * gflops / peak, '.0f') + ('%' if gflops else ''),
    _fmt(peak),
    _fmt(result.get('compile_s'), '.1f'),
    _fmt(result.get('peak_rss_bytes', 0) / 2**20),
  ]


def _run_jobs(jobs, args) -> dict:
  """Runs ``{key: (method, workload, members, extra)}`` children, ``args.jobs`` at a time."""
  import concurrent.futures

  with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
    futures = {key: pool.submit(measure, method, workload, members, args, **extra)
               for key, (method, workload, members, extra) in jobs.items()}
    return {key: future.result() for key, future in futures.items()}


def _run_throughput(args, workloads, members_list, extra_jobs) -> tuple[str, dict, dict]:
  """Runs the throughput children and ``extra_jobs`` (in the same pool).

  Returns:
    (markdown table with notes, results by (workload, E, method), results of extra_jobs).
  """
  headers = ['workload', 'E', 'method', 'model-steps/s', 'GFLOP/s', '% of matmul peak',
             'matmul peak GFLOP/s', 'compile s', 'peak RSS MiB']
  notes, jobs = [], {}
  has_torch = _torch_available()
  if not has_torch:
    notes.append('torch is not installed (`pip install -e .[bench]`): its rows are skipped.')
  for name, workload in workloads.items():
    for members in members_list:
      if members > args.max_members.get(name, max(members_list)):
        notes.append(f'{name}: E={members} skipped (above its limit '
                     f'{args.max_members[name]}, memory and time on this machine).')
        continue
      for method in args.methods:
        if method in TORCH_METHODS and (not has_torch or workload.arch not in TORCH_ARCHS[method]):
          continue
        if method in PER_MODEL_METHODS:
          jobs.setdefault((name, 1, method), (method, workload, 1, {}))
        else:
          jobs[(name, members, method)] = (method, workload, members, {})
      for count in args.device_counts:
        jobs[(name, members, f'ensembles-{count}dev')] = (
          'ensembles', workload, members, dict(devices=count))
  results = _run_jobs({**extra_jobs, **jobs}, args)  # The long recording runs first.
  extra = {key: results.pop(key) for key in extra_jobs}
  rows = []
  for name, workload in workloads.items():
    flops = next((r['flops_per_example'] for (n, _, _), r in results.items()
                  if n == name and 'flops_per_example' in r), None)
    for members in members_list:
      if members > args.max_members.get(name, max(members_list)):
        continue
      for method in (*METHODS, *(f'ensembles-{c}dev' for c in args.device_counts)):
        per_model = method in PER_MODEL_METHODS
        result = results.get((name, 1 if per_model else members, method))
        if result is None:
          continue
        results[(name, members, method)] = result
        if flops and 'flops_per_example' not in result:
          result = {**result, 'flops_per_example': flops}
        label = method + (' (per model, any E)' if per_model else '')
        rows.append([name, members, label, *_throughput_cells(result, workload)])
  table = common.markdown_table(headers, rows)
  return table + ''.join(f'\n\n- {n}' for n in notes), results, extra


def _goals(results, workloads, members_list) -> str:
  """The issue's goals, checked on this run's numbers (ratios only)."""
  lines = []
  for name in workloads:
    rate = lambda m, method='ensembles': results.get((name, m, method), {}).get('steps_per_s')  # noqa: E731
    big = 256 if 256 in members_list else max(members_list)
    ours = rate(big)
    peers = {method: rate(big, method) for method in METHODS[1:] if rate(big, method)}
    if ours and peers:
      best = max(peers, key=peers.get)
      ratio = ours / peers[best]
      lines.append(f'- {name}, E={big}: trainer / best peer ({best}) = {ratio:.3f} '
                   f'(goal >= 2): {"met" if ratio >= 2 else "NOT met"}')
    result = results.get((name, big, 'ensembles'), {})
    if result.get('flops_per_example'):
      w = workloads[name]
      share = (result['steps_per_s'] * w.batch_size * 3 * result['flops_per_example'] / 1e9
               / result['matmul_peak_gflops'])
      lines.append(f'- {name}, E={big}: {100 * share:.1f}% of the matmul peak (goal >= 50%): '
                   f'{"met" if share >= 0.5 else "NOT met"}')
    spread = [rate(m) for m in members_list if m >= 16 and rate(m)]
    if len(spread) >= 2:
      low, high = min(spread), max(spread)
      mid = (low + high) / 2
      lines.append(f'- {name}: model-steps/s for E >= 16 range {low:.0f}-{high:.0f} '
                   f'(+-{100 * (high - low) / 2 / mid:.0f}% around the middle; goal +-20%): '
                   f'{"met" if (high - low) / 2 <= 0.2 * mid else "NOT met"}')
    compiles = [results.get((name, m, 'ensembles'), {}).get('compile_s') for m in members_list]
    compiles = [c for c in compiles if c]
    if len(compiles) >= 2:
      flat = max(compiles) <= COMPILE_SPREAD * min(compiles)
      lines.append(f'- {name}: compile {min(compiles):.1f}-{max(compiles):.1f} s across E '
                   f'(goal: independent of E, here within {COMPILE_SPREAD:g}x): '
                   f'{"met" if flat else "NOT met"}')
  return '\n'.join(lines)


def _recording_jobs(args, workloads, recording_members) -> dict:
  """Recording children by (workload, variant label): every variant for the first workload."""
  jobs = {}
  for i, (name, members) in enumerate(
      (n, m) for n, m in recording_members.items() if n in workloads):
    variants = RECORDING_VARIANTS if i == 0 and not args.quick else {'defaults': {}}
    for label, overrides in variants.items():
      extra = {'epochs': args.recording_epochs, **overrides}
      jobs[('recording', name, label)] = ('recording', workloads[name], members, extra)
  return jobs


def _recording_table(results, recording_members) -> str:
  headers = ['workload', 'E', 'settings', 'recordings', 'steps', 'probes', 'MB written',
             'train s with recording', 'train s without', 'evaluations s', 'the rest s',
             'recording share of wall time', 'goal <= 10%']
  rows = []
  for (_, name, label), result in results.items():
    members = recording_members[name]
    if 'error' in result:
      rows.append([name, members, label, f"error: {result['error'][:60]}"] + ['-'] * 9)
      continue
    rest = result['record_train_s'] - result['pure_train_s'] - result['evaluate_s']
    rows.append([name, members, label, result['recordings'], result['steps'], result['probes'],
                 f"{result['written_bytes'] / 1e6:.0f}", f"{result['record_train_s']:.1f}",
                 f"{result['pure_train_s']:.1f}", f"{result['evaluate_s']:.1f}", f'{rest:.1f}',
                 f"{100 * result['share']:.0f}%", 'met' if result['share'] <= 0.1 else 'NOT met'])
  return common.markdown_table(headers, rows)


RECORDING_NOTE = (
  'Evaluations: the probes evaluated once per recording, alone. The rest: the Orbax writes '
  '(records, the final state; asynchronous, so they take cores from training) and the loop '
  'around them. Settings other than the defaults change one config value each, except the '
  "paper's schedule: ensembles/configs/cifar10_paper.py's training length and recording grid, "
  "and half of the train set as probes (the paper's every other example).")


def _run_conv(args) -> str:
  headers = ['workload', 'E', *[f'{f} model-steps/s' for f in CONV_FORMULATIONS],
             'member_loop / lax', 'member_loop / im2col', 'compile s (lax/im2col/loop)']
  jobs = {(name, members, f): ('ensembles', workload, members, dict(formulation=f))
          for name, workload in CONV_WORKLOADS.items()
          if not args.workloads or name in args.workloads
          for members in args.conv_members for f in CONV_FORMULATIONS}
  results = _run_jobs(jobs, args)
  rows = []
  for name, members in dict.fromkeys((n, m) for n, m, _ in jobs):
    got = {f: results[(name, members, f)] for f in CONV_FORMULATIONS}
    rate = {f: r.get('steps_per_s') for f, r in got.items()}
    cells = [_fmt(rate[f]) + (f" ({got[f]['note']})" if got[f].get('note') else '')
             if rate[f] else got[f].get('error', '?')[:40] for f in CONV_FORMULATIONS]
    ratio = lambda a, b: (f'{rate[a] / rate[b]:.1f}x' if rate[a] and rate[b] else '-')  # noqa: E731
    compiles = '/'.join(_fmt(got[f].get('compile_s'), '.1f') for f in CONV_FORMULATIONS)
    rows.append([name, members, *cells, ratio('member_loop', 'lax'),
                 ratio('member_loop', 'im2col'), compiles])
  return common.markdown_table(headers, rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='smoke sizes (under a minute)')
  parser.add_argument('--conv', action='store_true',
                      help='compare conv formulations under vmap instead of the main table')
  parser.add_argument('--device_counts', type=common.int_list, default=(),
                      help='add trainer rows with the members sharded over this many forced '
                           'host devices each (e.g. 1,4); the default rows use one per core')
  parser.add_argument('--members', type=common.int_list, default=None,
                      help=f'comma-separated ensemble sizes (default {MEMBERS})')
  parser.add_argument('--conv_members', type=common.int_list, default=CONV_MEMBERS)
  parser.add_argument('--workloads', type=lambda s: tuple(s.split(',')), default=None)
  parser.add_argument('--methods', type=lambda s: tuple(s.split(',')), default=METHODS)
  parser.add_argument('--data_dir', default=None,
                      help='TFDS data dir (default: '
                           'ensembles.training.data.default_data_dir())')
  parser.add_argument('--repeats', type=int, default=REPEATS)
  parser.add_argument('--jobs', type=int, default=None,
                      help='children run at once (default 1; --quick: 2, its numbers are a '
                           'smoke, not a measurement)')
  parser.add_argument('--no_recording', action='store_true', help='skip the recording share')
  parser.add_argument('--out', default=None,
                      help='markdown output (default benchmarks/results/train_<host>.md; '
                           "'-' for none)")
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child_main(json.loads(args.child))
    return
  unknown = sorted(set(args.methods) - set(METHODS))
  if unknown:
    parser.error(f'--methods {unknown}: accepted {", ".join(METHODS)}')
  quick = args.quick
  workloads = QUICK_WORKLOADS if quick else WORKLOADS
  if args.workloads:
    workloads = {k: v for k, v in workloads.items() if k in args.workloads}
  members_list = args.members or (QUICK_MEMBERS if quick else MEMBERS)
  args.chunk_seconds = QUICK_CHUNK_SECONDS if quick else CHUNK_SECONDS
  args.repeats = 1 if quick else args.repeats
  args.jobs = args.jobs or (QUICK_JOBS if quick else 1)
  args.child_timeout = QUICK_CHILD_TIMEOUT_S if quick else CHILD_TIMEOUT_S
  args.max_seconds_per_step = MAX_SECONDS_PER_STEP
  args.max_members = {} if quick else MAX_MEMBERS
  args.recording_epochs = 1 if quick else None
  from ensembles.training import data as data_lib

  # Absolute: the children run in the repository root.
  args.data_dir = os.path.abspath(args.data_dir or data_lib.default_data_dir())
  for workload in {w.dataset for w in workloads.values()}:
    data_lib.prepare_dataset(workload, args.data_dir)  # Once, before the children race.

  title = '# Training throughput' + (' (--quick smoke sizes)' if quick else '')
  sections = [title, '\n'.join(common.environment_lines())]
  described = '; '.join(f'{k}: {w.arch} width {w.width} depth {w.depth}, batch {w.batch_size}'
                        for k, w in (CONV_WORKLOADS if args.conv else workloads).items())
  sections.append(f'Workloads: {described}. SGD momentum {MOMENTUM}, learning rate '
                  f'{LEARNING_RATE}; median of {args.repeats} timed chunks of about '
                  f'{args.chunk_seconds:g} s per row.')
  if args.conv:
    sections.append('## Conv formulations under vmap (ensembles trainer)\n\n' + _run_conv(args))
  else:
    recording = {} if args.no_recording else (
      QUICK_RECORDING_MEMBERS if quick else RECORDING_MEMBERS)
    table, results, recorded = _run_throughput(
      args, workloads, members_list, _recording_jobs(args, workloads, recording))
    sections.append('## Throughput\n\n' + table)
    goals = _goals(results, workloads, members_list)
    if goals:
      sections.append('## Goals (this run)\n\n' + goals)
    if recorded:
      sections.append('## Recording cost (default recording schedule'
                      + (', 1 epoch' if quick else ', default 10 epochs') + ')\n\n'
                      + _recording_table(recorded, recording) + '\n\n' + RECORDING_NOTE)
  text = '\n\n'.join(sections) + '\n'
  print(text)
  out = args.out
  if out is None:
    suffix = '_conv' if args.conv else ('_quick' if quick else '')
    out = os.path.join(common.RESULTS_DIR, f'train_{common.host_kind()}{suffix}.md')
  common.write_results(text, out)


if __name__ == '__main__':
  main()
