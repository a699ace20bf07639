r"""Training throughput and MFU at GPU sizes: 32x32x3 inputs, up to 1,024 members, cnn and resnet.

  bash benchmarks/gpu.sh                 # on a machine with an NVIDIA GPU (under 8 minutes)
  python -m benchmarks.gpu --dry-run     # the same code path at toy sizes on CPU (seconds)

Run from the repository root (``gpu.sh`` changes to it), with the package installed.

Offline by construction: the data are synthetic CIFAR-10-shaped arrays (50,000 train and
10,000 test uint8 images 32x32x3 drawn uniformly, random labels 0-9, seeded), not CIFAR-10.
Throughput does not depend on pixel values: the trainer has no data-dependent control flow
(the per-member finite checks are selects), so the numbers are those of CIFAR-10 at the same
shapes; the models learn nothing, which is not measured here.

Each row is a fresh subprocess (a GPU out-of-memory or a crash loses that row only, reported
as its error), with its own timeout, and rows stop being started when the total budget would be
exceeded (they are listed as skipped). Rows run most important first: the trainer's default
conv formulation at every E, then at one E bfloat16 training passes (``config.train.
compute_dtype``, mixed precision) and the 'lax' formulation (vmap of ``nn.Conv``, a grouped
convolution) for comparison. The table so far is printed after every row, and the
final one at the end, also when the run is interrupted (SIGTERM, Ctrl-C).

Per row: build the trainer (``CohortProgram``, members sharded over every device), compile
init, train and evaluate ahead of time (timed; ``placement.compile_cohort``, which halves the
member block until XLA's memory analysis fits the device, as the trainer does: every attempt
counts), then warm-up, calibration and ``REPEATS`` timed chunks of about ``CHUNK_SECONDS`` of
training (``common.calibrated_timing``); then ``evaluate`` on the probes (median of
``REPEATS``), the recording path's cost. Columns:

- model-steps/s: members x steps / s.
- TFLOP/s: model-steps/s x batch x 3 x ``Network.flops_per_example()`` (forward + backward
  is about 3 forward passes; elementwise work not counted).
- MFU: TFLOP/s over the matmul peak measured in the same child just before (a jitted square
  matmul, ``common.jax_matmul_peak_gflops``) in the row's compute dtype - for float32 the
  achievable peak at JAX's default float32 matmul precision, which the model's matmuls use.
- eval probe-ex/s: members x probe examples / s of ``evaluate`` (eval-mode forward passes).
- peak GiB: the device's peak bytes in use (``Device.memory_stats``, where it reports them).

Results go to stdout and to ``benchmarks/results/gpu_<device-kind>.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time

from benchmarks import common
# The trainer benchmark's workloads, sweep and SGD settings, here on synthetic CIFAR-shaped data.
from benchmarks.train import (
  LEARNING_RATE, MAX_SECONDS_PER_STEP, MOMENTUM, Workload, sweep_config)


F32, BF16 = 'float32', 'bfloat16'  # compute dtypes of the rows


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Sizes of one run of the script (GPU or --dry-run)."""

  workloads: dict[str, Workload]
  # (workload, E, conv formulation, compute dtype) in the order they run: 'auto' is the
  # trainer's default for the backend (im2col on GPU), 'lax' vmaps nn.Conv (a grouped
  # convolution); the dtype is ``config.train.compute_dtype``.
  rows: tuple[tuple[str, int, str, str], ...]
  num_train: int
  num_test: int
  probe_size: int  # probe examples per split (train and test)
  eval_batch_size: int  # probe examples per member evaluated at once
  peak_matmul_size: int
  chunk_seconds: float
  config_timeout_s: float
  budget_s: float


# All-CNN width 8 (channels 8, 16) and Wide-ResNet 10-1 (16, 32, 64), batch 64: the small end of
# the paper's architectures. XLA's memory analysis of the same train programs compiled for CPU
# (im2col, 16 members) gives ~65 MB (cnn) and ~166 MB (resnet) of buffers per member: the cnn
# fits 1,024 members in an 80 GB H100, the resnet 256.
GPU = Sizes(
  workloads={
    'cnn-cifar10': Workload('cifar10', 'cnn', width=8, depth=2, batch_size=64),
    'resnet-cifar10': Workload('cifar10', 'resnet', width=1, depth=10, batch_size=64),
  },
  # Most useful first; the resnet at 1,024 members last: CPU's memory analysis of the same
  # program puts it at ~170 GB (166 MB per member) in one block, so the trainer should train it
  # in smaller member blocks (several compiles) or report that even one member does not fit.
  rows=(('cnn-cifar10', 64, 'auto', F32), ('cnn-cifar10', 256, 'auto', F32),
        ('cnn-cifar10', 1024, 'auto', F32), ('resnet-cifar10', 64, 'auto', F32),
        ('resnet-cifar10', 256, 'auto', F32),
        ('cnn-cifar10', 256, 'auto', BF16), ('resnet-cifar10', 256, 'auto', BF16),
        ('cnn-cifar10', 256, 'lax', F32), ('resnet-cifar10', 256, 'lax', F32),
        ('resnet-cifar10', 1024, 'auto', F32)),
  # An eval batch of 64 holds about as much as a train step; the trainer's default 1,024
  # would take ~220 MB (cnn) / ~480 MB (resnet) per member for 256 examples alone.
  num_train=50_000, num_test=10_000, probe_size=2048, eval_batch_size=64,
  peak_matmul_size=8192,  # 1.1 TFLOP per call: long enough to time on an H100
  chunk_seconds=2.0,
  config_timeout_s=150.0,  # a row: start-up, compile, ~10 s of timing
  budget_s=450.0,  # all rows; gpu.sh stops everything at 480 s (8 minutes)
)
# --dry-run: every code path at toy sizes on CPU (the numbers mean nothing).
DRY_RUN = Sizes(
  workloads={
    'cnn-cifar10': Workload('cifar10', 'cnn', width=2, depth=1, batch_size=8),
    'resnet-cifar10': Workload('cifar10', 'resnet', width=1, depth=10, batch_size=4),
  },
  rows=(('cnn-cifar10', 2, 'auto', F32), ('resnet-cifar10', 2, 'auto', F32),
        ('cnn-cifar10', 2, 'auto', BF16), ('cnn-cifar10', 2, 'lax', F32)),
  num_train=64, num_test=32, probe_size=16, eval_batch_size=8,
  peak_matmul_size=256,
  chunk_seconds=0.1,
  config_timeout_s=120.0,
  budget_s=300.0,
)
CLASSES = 10
INPUT_SHAPE = (32, 32, 3)
DATA_SEED = 0
REPEATS = 3
# Rows are not started with less than this much of the budget left (start-up and compile).
MIN_ROW_SECONDS = 30.0
HEADERS = ['workload', 'E', 'conv', 'dtype', 'model-steps/s', 'TFLOP/s', 'MFU',
           'matmul peak TFLOP/s', 'compile s', 'eval probe-ex/s', 'peak GiB', 'status']


# ---------------------------------------------------------------------------------------------
# Child: one row.


def synthetic_dataset(num_train: int, num_test: int):
  """A CIFAR-10-shaped ``Dataset`` of seeded uniform uint8 images and random labels."""
  import numpy as np

  from ensembles.training import data as data_lib

  rng = np.random.default_rng(DATA_SEED)
  images = lambda n: rng.integers(0, 256, (n, *INPUT_SHAPE), dtype=np.uint8)  # noqa: E731
  labels = lambda n: rng.integers(0, CLASSES, n, dtype=np.int32)  # noqa: E731
  x_train = images(num_train)
  scaled = x_train.reshape(-1, INPUT_SHAPE[-1]) / np.float32(255)
  info = data_lib.DatasetInfo(
    name='cifar10', num_classes=CLASSES, input_shape=INPUT_SHAPE,
    crop_padding=INPUT_SHAPE[0] // data_lib.CROP_PADDING_DIVISOR,
    flip=data_lib.FLIP_KEEPS_CLASS['cifar10'], num_train=num_train, num_test=num_test)
  return data_lib.Dataset(info=info, x_train=x_train, y_train=labels(num_train),
                          x_test=images(num_test), y_test=labels(num_test),
                          mean=scaled.mean(0).astype(np.float32),
                          std=scaled.std(0).astype(np.float32))


def _child(spec: dict) -> dict:
  import jax

  from ensembles.training import devices

  devices.use_cpu_cores()  # Before JAX starts, as the launchers do (--dry-run: CPU devices).
  common.without_compilation_cache()
  result = dict(matmul_peak_gflops=common.jax_matmul_peak_gflops(spec['peak_matmul_size'],
                                                                 dtype=spec['dtype']),
                environment=common.environment_lines(), host_kind=common.host_kind(),
                devices=jax.device_count())
  workload = Workload(**spec['workload'])
  config = sweep_config(workload, spec['members'])
  config.train.compute_dtype = spec['dtype']
  formulation = None if spec['formulation'] == 'auto' else spec['formulation']
  program, compiled, (hp, dataset, probes) = common.trainer_cohort(
    config, synthetic_dataset(spec['num_train'], spec['num_test']), spec['eval_batch_size'],
    spec['probe_size'], formulation)
  state, timing = common.trainer_timing(compiled, hp, dataset, dict(
    members=spec['members'], chunk_seconds=spec['chunk_seconds'], repeats=REPEATS,
    max_seconds_per_step=MAX_SECONDS_PER_STEP))
  result.update(timing)
  evaluate = lambda: jax.block_until_ready(compiled.evaluate(state(), probes))  # noqa: E731
  evaluate()
  eval_s, _ = common.median_seconds(evaluate, REPEATS)
  stats = jax.devices()[0].memory_stats() or {}
  result.update(compile_s=compiled.compile_seconds,
                flops_per_example=program.network.flops_per_example(),
                eval_examples_per_s=spec['members'] * 2 * spec['probe_size'] / eval_s,
                peak_bytes=stats.get('peak_bytes_in_use'))
  return result


def child_main(spec: dict) -> None:
  try:
    result = _child(spec)
  except Exception as e:  # An OOM is a result (this row's), not a crash of the run.
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    oom = 'RESOURCE_EXHAUSTED' in str(e) or 'out of memory' in str(e).lower()
    result = dict(error=('out of memory: ' if oom else f'{type(e).__name__}: ') + message)
  common.emit_result(result)


# ---------------------------------------------------------------------------------------------
# Parent: plan rows, run them within the budget, print the table (never imports JAX: the GPU
# belongs to the children).


def _cells(row: tuple[str, int, str, str], result: dict | None,
           workload: Workload) -> list[object]:
  if result is None:
    return [*row] + ['-'] * 7 + ['skipped: time budget']
  if 'error' in result:
    return [*row] + ['-'] * 7 + [result['error'][:80]]
  rate = result['steps_per_s']
  tflops = rate * workload.batch_size * 3 * result['flops_per_example'] / 1e12
  peak = result['matmul_peak_gflops'] / 1e3
  peak_bytes = result.get('peak_bytes')
  return [*row, f'{rate:.0f}', f'{tflops:.2f}',
          f'{100 * tflops / peak:.1f}%', f'{peak:.1f}', f"{result['compile_s']:.1f}",
          f"{result['eval_examples_per_s']:.3g}",
          '-' if peak_bytes is None else f'{peak_bytes / 2**30:.1f}',
          'ok' + (f" ({result['note']})" if result.get('note') else '')]


def render(sizes: Sizes, results: dict, dry_run: bool, started_at: float) -> str:
  environment = next((r['environment'] for r in results.values() if r and 'environment' in r),
                     ['- environment: no row finished'])
  described = '; '.join(f'{k}: {w.arch} width {w.width} depth {w.depth}, batch {w.batch_size}'
                        for k, w in sizes.workloads.items())
  rows = [_cells(row, results.get(row), sizes.workloads[row[0]]) for row in sizes.rows]
  title = '# GPU training throughput' + (' (--dry-run: toy sizes, numbers mean nothing)'
                                         if dry_run else '')
  return '\n\n'.join([
    title, '\n'.join(environment),
    f'Synthetic CIFAR-10-shaped data ({sizes.num_train:,} train / {sizes.num_test:,} test '
    f'uint8 32x32x3, uniform pixels, random labels; no download). Workloads: {described}. '
    f'SGD momentum {MOMENTUM}, learning rate {LEARNING_RATE}; median of {REPEATS} chunks of '
    f'about {sizes.chunk_seconds:g} s; evaluate on {sizes.probe_size:,} + '
    f'{sizes.probe_size:,} probes. conv: auto = the trainer\'s default for the backend '
    f'(im2col on GPU), lax = vmap of nn.Conv (grouped convolution); dtype: the training '
    f'passes\' (bfloat16: mixed precision, float32 parameters; MFU against the bfloat16 '
    f'matmul peak). Wall time '
    f'{time.monotonic() - started_at:.0f} s.',
    common.markdown_table(HEADERS, rows)]) + '\n'


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dry-run', action='store_true',
                      help='toy sizes on CPU: checks the code path (seconds)')
  parser.add_argument('--budget_s', type=float, default=None,
                      help='total seconds for all rows (default 450; --dry-run 300)')
  parser.add_argument('--config_timeout_s', type=float, default=None,
                      help='seconds per row before it is killed (default 150)')
  parser.add_argument('--out', default=None,
                      help="markdown output (default benchmarks/results/gpu_<device>.md; "
                           "--dry-run: none); '-' for none")
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child_main(json.loads(args.child))
    return
  sizes = DRY_RUN if args.dry_run else GPU
  sizes = dataclasses.replace(sizes, budget_s=args.budget_s or sizes.budget_s,
                              config_timeout_s=args.config_timeout_s or sizes.config_timeout_s)
  # One child at a time owns the GPU: let it take most of the memory (JAX's default is 75%).
  env = {'JAX_PLATFORMS': 'cpu'} if args.dry_run else {'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.95'}
  started = time.monotonic()
  results: dict = {}

  def stop(signum, frame):
    raise KeyboardInterrupt(f'signal {signum}')

  signal.signal(signal.SIGTERM, stop)
  try:
    for row in sizes.rows:
      name, members, formulation, dtype = row
      label = f'{name} E={members} {formulation} {dtype}'
      left = sizes.budget_s - (time.monotonic() - started)
      if left < MIN_ROW_SECONDS:
        print(f'  {label}: skipped ({left:.0f} s of budget left)', file=sys.stderr, flush=True)
        continue
      spec = dict(workload=dataclasses.asdict(sizes.workloads[name]), members=members,
                  formulation=formulation, dtype=dtype, num_train=sizes.num_train,
                  num_test=sizes.num_test,
                  probe_size=sizes.probe_size, eval_batch_size=sizes.eval_batch_size,
                  peak_matmul_size=sizes.peak_matmul_size,
                  chunk_seconds=sizes.chunk_seconds)
      row_started = time.monotonic()
      result = common.run_child(
        ['-m', 'benchmarks.gpu', '--child', json.dumps(spec)],
        min(sizes.config_timeout_s, left), env)
      results[row] = result
      status = result.get('error') or f"{result['steps_per_s']:.0f} model-steps/s"
      print(f'  {label}: {status} '
            f'({time.monotonic() - row_started:.0f} s)', file=sys.stderr, flush=True)
  except KeyboardInterrupt as e:
    print(f'interrupted ({e}): the rows so far', file=sys.stderr, flush=True)
  text = render(sizes, results, args.dry_run, started)
  print(text, flush=True)
  out = args.out
  if out is None and not args.dry_run:
    kind = next((r['host_kind'] for r in results.values() if 'host_kind' in r), 'unknown')
    out = os.path.join(common.RESULTS_DIR, f'gpu_{kind}.md')
  common.write_results(text, out)


if __name__ == '__main__':
  main()
