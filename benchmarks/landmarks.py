r"""The landmark map (``analysis.embed_trajectories``) on stores written to disk: rate, scale, fit.

  python -m benchmarks.landmarks              # 10^5, 10^6 points, L = 4,000; fit at 20,000 (45 min)
  python -m benchmarks.landmarks --quick      # toy sizes, a smoke test (~1 min)
  python -m benchmarks.landmarks --points 100000 --fit_landmarks 0   # one size, no fit part
  python -m benchmarks.landmarks --points 0 --fit_landmarks 20000    # the L = 20,000 fit only
  python -m benchmarks.landmarks --keep       # keep the stores; later --reuse maps them again
  python -m benchmarks.landmarks --render     # tables from the runs saved in --workdir

Run from the repository root, with the package installed (``pip install -e .``). Stores and maps
go under --workdir (default /tmp/bench_landmarks/, not the repository) and are deleted after
each size unless --keep; a 10^6-point store is ~4 GB (float16).

For each size in --points, one child writes a synthetic sweep through the real store writer
(``store.CohortWriter``, float16; --members members in cohorts of --cohort_size, points /
members recording times, N train probes, C classes; trajectories below), then a fresh child opens
it (``load_trajectories``) and maps it (``embed_trajectories(k, landmarks=L, outdir=...)``).
The map child times its phases by wrapping the library's functions (nothing in ``ensembles`` is
changed; the wrappers cost microseconds):

- ``open``: ``load_trajectories`` (the manifest and every record's small arrays);
- ``landmark fit``: reading the landmarks' probabilities, their Gram, the eigensolver,
  the geodesic's distances, saving the fit;
- ``projection``: ``_project_all``, every block read, its (block x L) distances, placement,
  progress and Parquet part, timed block by block through ``on_block``; then the parts read back.

The projection against the kernel (``rate_rows``): a kernel call's time moves by up to 2x
between neighbouring calls on a shared machine, so the ratio is built from times taken at the
same moment. Each block's distance call is timed inside the projection ("kernel inside"); the
map pads every block to the largest (``DistancesTo``), so a smaller block's call is scaled by
what it would cost unpadded: the kernel ``distances.bhattacharyya(p_BxNxC, q_LxNxC)`` alone at
its size over alone at the largest size, timed back to back after the map on blocks read from
the store and the landmarks' probabilities. ``kernel / projection`` is then the projection's
rate as a share of the kernel's. As a check, the kernel also runs alone after every k-th block
(about KERNEL_SAMPLES times per map, or --kernel_every), inside the ``on_block`` callback and
not counted in the projection's time; each such run over the distance call of the block it
followed should be ~1 for full blocks. The first block of each size (compilation, and the
landmarks' read and transfer) is left out. Rates are point-landmark-sample triples per second.
Within the projection, time is split by wrapped function: the store reads (the landmarks' again
apart), the distance calls (and inside them the host's padding of the chunks and their
transfer to the devices), the placement, progress, and building and writing the Parquet part.
Peak memory is the map child's ``ru_maxrss`` (``os.wait4``).

Synthetic trajectories: per member, logits move from a random start (scale START_SCALE) to
TARGET_LOGIT on the label, through a detour shared by the members of one architecture plus a
member's own (DETOUR_SCALE, MEMBER_DETOUR), at a speed set by the learning rate, with small
per-record noise; probabilities are their softmax. Members differ by architecture (per cohort),
learning rate and seed, so the map has structure. The test probes (TEST_SAMPLES, not mapped)
are few, to keep the store small.

--fit_landmarks L (0: skip) times the landmark fit alone at that L on N samples in a child:
the Gram (``distances.bhattacharyya``), then ``embedding.inpca(D, k, method)``, each with its
peak resident memory above the memory just before it (input loaded).

The results end with estimates for the paper's scale on one H100 and on 64-chip TPU pods
(``estimate_section``): assumed hardware figures combined with rates measured in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np

from benchmarks import common

# Sizes of the default run: points mapped, members, cohort size, landmarks, probes, classes.
POINTS = (100_000, 1_000_000)
MEMBERS = 2000
COHORT_SIZE = 250
LANDMARKS = 4000
SAMPLES = 200
CLASSES = 10
# InPCA components.
K = 10
# Landmarks of the fit-only part (0 skips it) and its eigensolver.
FIT_LANDMARKS = 20_000
FIT_METHOD = 'auto'
# The --quick smoke sizes.
QUICK = dict(points=(2_000,), members=40, cohort_size=10, landmarks=300, samples=24,
             fit_landmarks=600)
# The kernel runs alone after every k-th block, k odd (a cohort's block count is even here, so
# every block size gets sampled), about KERNEL_SAMPLES times per map (--kernel_every 0) or every
# --kernel_every-th block; and REPEATS times per block size after the map.
KERNEL_SAMPLES = 12
REPEATS = 3
WORKDIR = '/tmp/bench_landmarks'
# Children that have not finished after this long are reported as timed out.
CHILD_TIMEOUT_S = 3 * 3600

# Synthetic trajectories (see the module docstring). Logit scales:
START_SCALE = 0.5     # random start: near-uniform predictions
TARGET_LOGIT = 5.0    # the label's logit at the end of training
DETOUR_SCALE = 2.0    # the architecture's waypoint, reached mid-training
MEMBER_DETOUR = 0.5   # a member's own share of the detour
RECORD_NOISE = 0.1    # fresh noise of each recorded point
ARCHS = ('mlp', 'cnn')
LEARNING_RATES = (0.01, 0.03, 0.1, 0.3)
# Training speed: progress s = 1 - (1 - t / T)^(1 + SPEED * learning_rate).
SPEED = 10.0
# Test probes per record (written, never mapped).
TEST_SAMPLES = 16
SEED = 0
STORAGE_DTYPE = 'float16'


# ---------------------------------------------------------------------------------------------
# Synthetic sweep, written through the store writer.


def sweep_members(num_members: int, cohort_size: int) -> list[dict]:
  """Hparams: architecture per cohort, learning rate cycling within it, a seed per member."""
  return [dict(arch=ARCHS[(e // cohort_size) % len(ARCHS)],
               learning_rate=LEARNING_RATES[e % len(LEARNING_RATES)], seed=e)
          for e in range(num_members)]


class _Cohort:
  """One cohort's fixed random parts; ``probs(t)`` gives its (members, N + N_test, C) record."""

  def __init__(self, index: int, members: list[dict], labels_N: np.ndarray, num_classes: int,
               num_times: int):
    rng = np.random.default_rng([SEED, index])
    num, n = len(members), len(labels_N)
    waypoint_NxC = np.random.default_rng([SEED, ARCHS.index(members[0]['arch']), 10**6]
                                         ).standard_normal((n, num_classes), np.float32)
    self._start = START_SCALE * rng.standard_normal((num, n, num_classes), np.float32)
    self._detour = DETOUR_SCALE * (waypoint_NxC + MEMBER_DETOUR * rng.standard_normal(
        (num, n, num_classes), np.float32))
    self._target_NxC = TARGET_LOGIT * np.eye(num_classes, dtype=np.float32)[labels_N]
    self._power_E = 1.0 + SPEED * np.array([hp['learning_rate'] for hp in members], np.float32)
    self._index, self._num_times = index, num_times

  def probs(self, t: int) -> np.ndarray:
    u = t / max(1, self._num_times - 1)
    s = (1.0 - (1.0 - u) ** self._power_E)[:, None, None]
    noise = np.random.default_rng([SEED, self._index, t]).standard_normal(
        self._start.shape, np.float32)
    logits = ((1 - s) * self._start + s * self._target_NxC + 4 * s * (1 - s) * self._detour
              + RECORD_NOISE * noise)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def write_sweep(workdir: str, num_members: int, num_times: int, cohort_size: int,
                num_samples: int, num_classes: int) -> dict:
  """Writes the synthetic sweep as a store; returns seconds and bytes on disk."""
  from ensembles import store

  started = time.perf_counter()
  rng = np.random.default_rng(SEED)
  labels_N = rng.integers(0, num_classes, num_samples + TEST_SAMPLES)
  members = sweep_members(num_members, cohort_size)
  cohorts = [dict(index=c, members=list(range(first, min(first + cohort_size, num_members))))
             for c, first in enumerate(range(0, num_members, cohort_size))]
  split = {'train': slice(0, num_samples), 'test': slice(num_samples, None)}
  probes = {f'{s}_{kind}': values for s, rows in split.items() for kind, values in (
      ('labels', labels_N[rows].tolist()), ('indices', list(range(len(labels_N[rows])))))}
  store.write_manifest(workdir, dict(members=members, epochs=np.linspace(0, 1, num_times).tolist(),
                                     num_classes=num_classes, probes=probes, cohorts=cohorts))
  for cohort in cohorts:
    rows = cohort['members']
    gen = _Cohort(cohort['index'], [members[e] for e in rows], labels_N, num_classes, num_times)
    writer = store.CohortWriter(store.cohort_dir(workdir, cohort['index']), STORAGE_DTYPE,
                                len(rows))
    for t in range(num_times):
      probs_ExNxC = gen.probs(t)
      record = dict(step=np.int64(100 * t), diverged_at=np.full(len(rows), -1, np.int64))
      for name, cut in split.items():
        p = probs_ExNxC[:, cut]
        hit_ExN = np.take_along_axis(p, labels_N[cut][None, :, None], axis=-1)[..., 0]
        record[f'{name}_probs'] = p
        record[f'{name}_loss'] = -np.log(hit_ExN).mean(axis=1).astype(np.float32)
        record[f'{name}_accuracy'] = (p.argmax(-1) == labels_N[cut]).mean(axis=1).astype(
            np.float32)
      writer.write_record(t, record)
    writer.close()
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(workdir) for f in fs)
  return dict(seconds=time.perf_counter() - started, bytes=size)


# ---------------------------------------------------------------------------------------------
# The map child: phases and the kernel alone, interleaved.


class _Clock:
  """Seconds per label, summed over calls of wrapped functions while ``active``."""

  def __init__(self):
    self.seconds: dict[str, float] = defaultdict(float)
    self.calls: dict[str, int] = defaultdict(int)
    self.active = True
    self.phase = ''

  @contextlib.contextmanager
  def span(self, label: str):
    started = time.perf_counter()
    try:
      yield
    finally:
      if self.active:
        self.seconds[label] += time.perf_counter() - started
        self.calls[label] += 1

  def wrap(self, owner, name: str, label) -> None:
    """Replaces ``owner.name`` by a timed call; ``label(*args)`` names the time (or a str)."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
      with self.span(label(*args) if callable(label) else label):
        return original(*args, **kwargs)

    setattr(owner, name, timed)


def map_child(store_dir: str, outdir: str, k: int, num_landmarks: int, kernel_every: int,
              repeats: int) -> dict:
  """Opens and maps a store, timing phases, blocks and the kernel alone; returns the numbers."""
  import jax

  from ensembles import store
  from ensembles.analysis import distances, embedding, geometry, landmarks, mapping
  from ensembles.store import reader
  from ensembles.training import devices as devices_lib

  devices_lib.use_cpu_cores()  # As the analyze launcher does.
  clock = _Clock()
  started = time.perf_counter()
  traj = store.load_trajectories(store_dir)
  opened = time.perf_counter() - started

  # Inside the kernel call: the chunks' host padding (the landmarks' apart; bytes counted too),
  # their transfer to the devices.
  current, padded_bytes = {}, defaultdict(int)
  padded_chunk = distances._padded_chunk  # pylint: disable=protected-access

  def counted_chunk(p, *args):
    label = f'{clock.phase}: distances > pad ' + ('landmarks' if p is current.get('q')
                                                  else 'block')
    with clock.span(label):
      chunk = padded_chunk(p, *args)
    if clock.active:
      padded_bytes[label] += chunk.nbytes
    return chunk

  distances._padded_chunk = counted_chunk  # pylint: disable=protected-access
  clock.wrap(distances, '_replicate', lambda *a: f'{clock.phase}: distances > to devices')
  kernel = distances.bhattacharyya

  def timed_kernel(p, q=None, **kwargs):
    current['q'] = q
    with clock.span(f'{clock.phase}: distances'):
      return jax.block_until_ready(kernel(p, q, **kwargs))

  distances.bhattacharyya = timed_kernel
  if hasattr(distances, 'DistancesTo'):
    # The map keeps the landmarks on the devices (DistancesTo(q, block)) and calls it per block.
    resident = distances.DistancesTo
    init, call = resident.__init__, resident.__call__

    def timed_init(self, q, *args, **kwargs):
      current['q'] = q
      with clock.span(f'{clock.phase}: landmarks to the devices (DistancesTo, once)'):
        init(self, q, *args, **kwargs)

    def timed_call(self, p):
      with clock.span(f'{clock.phase}: distances'):
        return jax.block_until_ready(call(self, p))

    resident.__init__, resident.__call__ = timed_init, timed_call

  def read_label(traj_, split, members, times):
    del traj_, split
    again = clock.phase == 'projection' and all(
        np.array_equal(x, mark[key]) for x, key in ((members, 'members_L'), (times, 'times_L')))
    return f'{clock.phase}: read' + (' landmarks (again)' if again else '')

  clock.wrap(reader.Trajectories, 'read_points', read_label)
  clock.wrap(embedding, 'inpca', lambda *a, **kw: f'{clock.phase}: eigensolver')
  clock.wrap(mapping, '_check_finite', lambda *a: f'{clock.phase}: check finite')
  clock.wrap(geometry, 'progress', lambda *a: f'{clock.phase}: progress')
  columns = mapping._Columns  # pylint: disable=protected-access
  clock.wrap(columns, 'table', lambda *a: f'{clock.phase}: parquet table')
  clock.wrap(mapping, '_atomic', lambda *a: f'{clock.phase}: write file')
  place = mapping._place  # pylint: disable=protected-access
  mapping._place = lambda *a: jax.block_until_ready(place(*a))  # pylint: disable=protected-access
  clock.wrap(mapping, '_place', lambda *a: f'{clock.phase}: place')
  fit_landmarks = landmarks.fit_landmarks

  def fit(*args, **kwargs):
    try:
      return fit_landmarks(*args, **kwargs)
    finally:
      clock.phase = 'geodesic'

  landmarks.fit_landmarks = fit
  blocks, block_kernel, kernel_runs, inputs, mark = [], [], [], {}, {}

  def kernel_alone(size: int) -> float:
    clock.active = False
    try:
      t0 = time.perf_counter()
      jax.block_until_ready(kernel(inputs[size], inputs['landmarks']))
      return time.perf_counter() - t0
    finally:
      clock.active = True

  def on_block(done: int, todo: int) -> None:
    del todo
    now = time.perf_counter()
    points = done - mark['done']
    blocks.append((points, now - mark['time']))
    in_kernel = clock.seconds['projection: distances']
    block_kernel.append(in_kernel - mark['in_kernel'])
    mark.update(done=done, in_kernel=in_kernel)
    if points and len(blocks) % mark['every'] == 0:
      kernel_runs.append((points, kernel_alone(points), len(blocks) - 1))
    mark['time'] = time.perf_counter()

  project_all = mapping._project_all  # pylint: disable=protected-access
  read_coords = mapping._read_coords  # pylint: disable=protected-access

  def timed_project_all(traj_, reader_, plan, split, fit_, landmarks_L, *rest):
    # The kernel-alone inputs, read before the projection's clock starts (and not timed): the
    # landmarks, and one block of each size in the plan.
    num_times = len(traj_.epochs)
    mark.update(fit_end=time.perf_counter(), members_L=landmarks_L // num_times,
                times_L=landmarks_L % num_times)
    clock.active = False
    mark['every'] = kernel_every or (max(1, len(plan) // KERNEL_SAMPLES) | 1)
    inputs['landmarks'] = reader_.read_points(split, mark['members_L'], mark['times_L'])
    for members_B, times_B in plan:
      size = len(members_B) * len(times_B)
      if size not in inputs:
        inputs[size] = reader_.read_points(split, np.repeat(members_B, len(times_B)),
                                           np.tile(times_B, len(members_B)))
    for size in inputs:
      if size != 'landmarks':
        kernel_alone(size)  # Compiles, so that no timed kernel-alone run does.
    clock.active = True
    clock.phase = 'projection'
    mark.update(time=time.perf_counter(), done=0, start=time.perf_counter(), in_kernel=0.0)
    return project_all(traj_, reader_, plan, split, fit_, landmarks_L, *rest)

  def timed_read_coords(*args):
    mark['projected'] = time.perf_counter()
    clock.phase = 'read back'
    return read_coords(*args)

  mapping._project_all = timed_project_all  # pylint: disable=protected-access
  mapping._read_coords = timed_read_coords  # pylint: disable=protected-access
  clock.phase = 'fit'

  started = time.perf_counter()
  emb = mapping.embed_trajectories(traj, k=k, landmarks=num_landmarks, outdir=outdir,
                                   on_block=on_block)
  ended = time.perf_counter()
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  kernel_seconds = sum(s for _, s, _ in kernel_runs)
  # The kernel on block_size(L) points too (the largest block), after the map.
  full = mapping.block_size(num_landmarks)
  if full not in inputs:
    pool = np.concatenate([v for key, v in inputs.items() if key != 'landmarks'])
    inputs[full] = np.resize(pool, (full, *pool.shape[1:]))
    kernel_alone(full)  # compiles
  after = {size: [kernel_alone(size) for _ in range(repeats)]
           for size in inputs if size != 'landmarks'}
  n, c = inputs['landmarks'].shape[1:]
  return dict(
      points=len(traj.members) * len(traj.epochs), members=len(traj.members),
      times=len(traj.epochs), landmarks=num_landmarks, samples=n, classes=c,
      devices=len(jax.devices()), open_s=opened, embed_s=ended - started,
      fit_end_s=mark['fit_end'] - started, inputs_s=mark['start'] - mark['fit_end'],
      projection_s=mark['projected'] - mark['start'],
      kernel_in_projection_s=kernel_seconds, read_back_s=ended - mark['projected'],
      blocks=blocks, block_kernel=block_kernel, kernel_runs=kernel_runs, every=mark['every'],
      kernel_after=after,
      block_size=full, phase_seconds=dict(clock.seconds), phase_calls=dict(clock.calls),
      padded_bytes=dict(padded_bytes), resident=hasattr(distances, 'DistancesTo'),
      peak_rss_self=peak_rss, es=[float(x) for x in emb.explained_stress[:3]],
      placed=int(emb.placed.sum()))


def record_child(workdir: str, num_samples: int, repeats: int) -> dict:
  """Restore time of one record at the paper's shape (PAPER's cohort, N probes, C classes).

  Writes a one-cohort store of ``repeats`` recording times, then reads each time's points
  (``read_points``, the map's block read: one whole record) once.
  """
  from ensembles import store

  size, c = PAPER['cohort_size'], PAPER['classes']
  written = write_sweep(workdir, size, repeats, size, num_samples, c)
  traj = store.load_trajectories(workdir)
  seconds = []
  for t in range(repeats):
    started = time.perf_counter()
    traj.read_points('train', np.arange(size), np.full(size, t))
    seconds.append(time.perf_counter() - started)
  shutil.rmtree(workdir, ignore_errors=True)
  return dict(record_bytes=size * num_samples * c * 2, seconds=seconds,
              write_s=written['seconds'])


def fit_child(num_landmarks: int, num_samples: int, num_classes: int, k: int,
              method: str) -> dict:
  """The landmark fit alone on L synthetic points: Gram and eigensolver, time and memory."""
  import gc

  from ensembles.analysis import distances, eigen, embedding
  from ensembles.training import devices as devices_lib

  devices_lib.use_cpu_cores()
  labels_N = np.random.default_rng(SEED).integers(0, num_classes, num_samples)
  times = max(2, num_landmarks // MEMBERS)
  members = sweep_members(-(-num_landmarks // times), COHORT_SIZE)
  parts = [_Cohort(c, members[first:first + COHORT_SIZE], labels_N, num_classes, times)
           for c, first in enumerate(range(0, len(members), COHORT_SIZE))]
  probs_LxNxC = np.concatenate([np.stack([g.probs(t) for t in range(times)], 1).reshape(
      -1, num_samples, num_classes) for g in parts])[:num_landmarks]
  out = dict(landmarks=num_landmarks, samples=num_samples, methods=list(eigen.METHODS),
             method=method, resolved=eigen.resolve_method(
                 method, num_landmarks, full_eigh_max_points=embedding.FULL_EIGH_MAX_POINTS),
             input_bytes=probs_LxNxC.nbytes)
  distances.bhattacharyya(probs_LxNxC[:8], probs_LxNxC[:8]).block_until_ready()  # JAX starts
  gc.collect()
  common.reset_peak_rss()
  before = common.rss_bytes('VmRSS')
  started = time.perf_counter()
  d_LxL = np.asarray(distances.bhattacharyya(probs_LxNxC))
  out.update(gram_s=time.perf_counter() - started, gram_peak=common.rss_bytes('VmHWM') - before)
  del probs_LxNxC
  gc.collect()
  common.reset_peak_rss()
  before = common.rss_bytes('VmRSS')
  solver = {}
  top_by_magnitude = eigen.top_by_magnitude

  def timed_solver(*args, **kwargs):
    t0 = time.perf_counter()
    try:
      return top_by_magnitude(*args, **kwargs)
    finally:
      solver['s'] = time.perf_counter() - t0

  eigen.top_by_magnitude = timed_solver
  started = time.perf_counter()
  fit = embedding.inpca(d_LxL, k=k, method=method)
  out.update(eigen_s=time.perf_counter() - started, solver_s=solver['s'],
             eigen_peak=common.rss_bytes('VmHWM') - before,
             es=[float(x) for x in fit.explained_stress[:3]],
             eigenvalues=[float(x) for x in fit.eigenvalues[:3]])
  return out


# ---------------------------------------------------------------------------------------------
# On paper: the paper's scale on one H100 and on 64-chip TPU pods, from assumed hardware rates
# and the rates measured here. Everything in this section is an estimate.

# The paper's scale (issue 18): points mapped, landmarks, probes, classes; recording times and
# members per cohort (they set the blocks and the records' size).
PAPER = dict(points=10**7, landmarks=20_000, samples=25_000, classes=10, times=500,
             cohort_size=250)
# Work of one point-landmark-sample triple in the kernel as written: the per-sample
# (B x C) @ (C x B') matmul (2 C flops per coefficient), clip, product, and a log and an add
# per SAMPLES_PER_LOG samples (~6 more flops, a log counted as ~20).
EXTRA_FLOPS_PER_TRIPLE = 6
# Memory traffic of one triple when each sample's (B x B') coefficients go through device
# memory (XLA writes a matmul's output, the fusion reads it back): 4 + 4 bytes, plus the running
# product's and the sum's read and write once per 6 samples.
BYTES_PER_TRIPLE = 8 + 8 / 6
# TPU MXUs contract over 128-deep slices: C = 10 uses 10/128 of each pass, and float32 accuracy
# ('highest' precision) takes 6 bfloat16 passes.
MXU_DEPTH = 128
FLOAT32_PASSES = 6
# Largest share of a device's memory the resident landmarks may take (the rest: the tiles'
# sums, a block's chunks, the runtime).
RESIDENT_SHARE = 0.75
# Assumed cost of one chunk's dispatch as written: the wait for the previous chunk, two host
# arrays placed on the device, one jitted call (a guess for a GPU; measure it there).
DISPATCH_S = 100e-6
# Assumed hardware (vendor figures; nothing here was measured on them): dense FP32 FLOP/s
# (CUDA cores; the TPU's bfloat16 MXU rate), memory bandwidth, host-to-device bandwidth per
# host (PCIe Gen5 x16 in practice ~25 GB/s, TPU hosts assumed the same), chips per host,
# device memory.
HARDWARE = (
    dict(name='1 x H100 SXM', flops=67e12, hbm=3.35e12, h2d=25e9, chips=1, per_host=1,
         memory=80e9, mxu=False),
    dict(name='TPU v5e, 64 chips', flops=197e12, hbm=819e9, h2d=25e9, chips=64, per_host=4,
         memory=16 * 2**30, mxu=True),
    dict(name='TPU v4, 64 chips', flops=275e12, hbm=1.2e12, h2d=25e9, chips=64, per_host=4,
         memory=32 * 2**30, mxu=True),
)


def _duration(seconds: float) -> str:
  if seconds < 120:
    return f'{seconds:.0f} s'
  if seconds < 2 * 3600:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def estimate_section(measured: dict) -> str:
  """Markdown: the paper's scale on the HARDWARE, from the assumptions above and ``measured``.

  ``measured`` holds rates from this run (this CPU): ``pad_Bps`` (the host's padding of the
  landmarks' chunks, bytes/s), ``read_Bps`` (store reads of blocks, float16 bytes/s),
  ``record_Bps`` (optional: one record of the paper's shape restored, float16 bytes/s),
  ``solver_s`` and ``centre_s`` (the L = 20,000 eigensolver and the rest of ``inpca``),
  ``kernel_rate`` (the CPU kernel's triples/s).
  """
  from ensembles.analysis import distances, mapping

  p, l, n, c, t, cohort = (PAPER[x] for x in ('points', 'landmarks', 'samples', 'classes',
                                               'times', 'cohort_size'))
  # The block plan (Trajectories.block_plan) at this shape; the map pads every block to the
  # largest one (DistancesTo).
  per_block = max(1, min(t, mapping.block_size(l) // cohort))
  block = min(cohort, mapping.block_size(l) // per_block) * per_block
  blocks = (p // t // cohort) * -(-t // per_block)
  chunk_size = distances._chunk_size  # pylint: disable=protected-access
  chunk = chunk_size(n, block + l, c, distances.SAMPLES_PER_LOG)
  chunks = blocks * -(-n // chunk)
  landmark_bytes = l * n * c * 4
  triples, gram_triples = blocks * block * l * n, l * l * n / 2
  record_bytes = cohort * n * c * 2
  read_Bps = measured.get('record_Bps', measured['read_Bps'])
  lines = [
      f'Scale: {p:.0e} points ({p // t:,} members x {t} times, cohorts of {cohort}), L = {l:,}, '
      f'N = {n:,}, C = {c}: {p * l * n:.1e} projection triples ({triples:.1e} with the blocks '
      f'padded to the largest, {block} points: block_size(L) = {mapping.block_size(l)} is '
      f'{per_block} recording times of a cohort; {blocks:,} blocks), {gram_triples:.1e} Gram '
      f'triples (upper tiles). Chunks of {chunk} samples (CHUNK_BYTES at this block and L): '
      f'{chunks:.1e} chunk dispatches, each after a wait for the previous one; at an assumed '
      f'{DISPATCH_S * 1e6:.0f} us each that is {_duration(chunks * DISPATCH_S)} on one device. '
      f'The landmarks are {landmark_bytes / 1e9:.0f} GB (float32), the blocks '
      f'{p * n * c * 4 / 1e12:.0f} TB (float32, {p * n * c * 2 / 1e12:.0f} TB float16 in the '
      'store).',
      '',
  ]
  rows = []
  for hw in HARDWARE:
    hbm_rate = hw['hbm'] / BYTES_PER_TRIPLE
    if hw['mxu']:
      compute_rate = hw['flops'] / (2 * MXU_DEPTH * FLOAT32_PASSES)
    else:
      compute_rate = hw['flops'] / (2 * c + EXTRA_FLOPS_PER_TRIPLE)
    rate = min(hbm_rate, compute_rate) * hw['chips']
    fused = compute_rate * hw['chips']
    hosts = -(-hw['chips'] // hw['per_host'])
    rows.append([
        hw['name'], f'{rate:.2g}', _duration(triples / rate),
        _duration(triples / fused) if fused > rate else '(same)',
        _duration(gram_triples / rate),
        f'{landmark_bytes / 1e9:.0f} GB per chip of {hw["memory"] / 1e9:.0f}' + (
            '' if landmark_bytes < RESIDENT_SHARE * hw['memory'] else ' (does not fit)'),
        f'{landmark_bytes / hw["chips"] / 1e9:.2g} GB',
        _duration(hw['per_host'] * landmark_bytes / hw['h2d']),
        _duration(p * n * c * 4 / hosts / hw['h2d']),
        _duration(p * n * c * 2 / hosts / read_Bps),
        _duration(chunks / hw['chips'] * DISPATCH_S)])
  lines.append(common.markdown_table(
      ['hardware', 'kernel triples/s', 'projection', 'fused kernel', 'Gram',
       'landmarks on the devices, as written (replicated)', 'sharded per chip',
       'landmarks to the devices (per host, once)', 'blocks to the devices (per host)',
       'store read (per host, at the rate measured here)', 'chunk dispatches (per chip)'],
      rows))
  read_rates = [f'{measured["read_Bps"] / 1e6:.0f} MB/s in the maps\' block reads (1 MB records)']
  if 'record_Bps' in measured:
    read_rates.insert(0, f'{measured["record_Bps"] / 1e6:.0f} MB/s for one record of the '
                         'paper\'s shape (used above)')
  resend = blocks * landmark_bytes
  lines += [
      '',
      f'Kernel rate: the lower of device memory ({BYTES_PER_TRIPLE:.1f} bytes per triple) and '
      f'compute ({2 * c + EXTRA_FLOPS_PER_TRIPLE} FP32 flops per triple on the H100; on a TPU, '
      f'MXU passes of depth {MXU_DEPTH}, {FLOAT32_PASSES} of them for float32 accuracy). "fused '
      'kernel": compute-bound, the coefficients never stored. Before the map kept the landmarks '
      f'on the devices (DistancesTo), they were padded and sent for every block: '
      f'{resend / 1e12:.0f} TB per device, {_duration(resend / HARDWARE[0]["h2d"])} on one H100 '
      f'plus {_duration(resend / measured["pad_Bps"])} of host padding at the rate measured '
      'here. The landmark fit\'s eigensolver is L x L whatever N: on this CPU ARPACK took '
      f'{measured["solver_s"]:.0f} s and the rest of inpca (float64 checks, copies, centring) '
      f'{measured["centre_s"]:.0f} s at L = {l:,}; the CPU Gram at this N would take '
      f'{_duration(gram_triples / measured["kernel_rate"])} at the rate measured here. Landmark '
      f'reads: each landmark restores its whole record ({record_bytes / 1e6:.0f} MB), up to '
      f'{min(l, p // cohort) * record_bytes / 1e12:.1f} TB '
      f'({_duration(min(l, p // cohort) * record_bytes / read_Bps)} here), twice (fit, '
      'projection), on every process. Store reads measured here (Orbax restore and float16 to '
      f'float32 on this CPU): {"; ".join(read_rates)}.',
  ]
  return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------
# Parent: children, tables.


def _child(argv: list[str], log: str) -> tuple[dict, int]:
  """Runs ``python -m benchmarks.landmarks --child ...``; returns (its result, its ru_maxrss)."""
  result_path = log + '.json'
  with open(log, 'w') as out:
    proc = subprocess.Popen([sys.executable, '-m', 'benchmarks.landmarks', *argv, '--result',
                             result_path], stdout=out, stderr=subprocess.STDOUT,
                            cwd=common.REPO_ROOT)
    started = time.monotonic()
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if time.monotonic() - started > CHILD_TIMEOUT_S:
        proc.kill()
        pid, status, usage = os.wait4(proc.pid, 0)
        break
      time.sleep(0.5)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode or not os.path.exists(result_path):
    with open(log) as f:
      tail = ' / '.join(f.read().strip().splitlines()[-3:])
    return dict(error=f'exit {proc.returncode}: {tail}'), usage.ru_maxrss * 1024
  with open(result_path) as f:
    return json.load(f), usage.ru_maxrss * 1024


def _triples(points: int, r: dict) -> float:
  return points * r['landmarks'] * r['samples']


def _steady(r: dict) -> dict[int, list[tuple[int, float, float]]]:
  """Block size -> (index, seconds, kernel seconds inside) of its blocks but the first."""
  seen, steady = set(), defaultdict(list)
  inside = r.get('block_kernel') or [float('nan')] * len(r['blocks'])
  for i, ((points, seconds), kernel_s) in enumerate(zip(r['blocks'], inside)):
    if points and points in seen:
      steady[points].append((i, seconds, kernel_s))
    seen.add(points)
  return steady


def _paired_runs(r: dict) -> list[tuple[int, float, int]]:
  """The kernel-alone runs as (block size, seconds, index of the block they followed)."""
  runs = r['kernel_runs']
  if runs and len(runs[0]) == 3:
    return [tuple(x) for x in runs]
  # Runs saved without their block: they followed every ``every``-th block entry.
  every = r.get('every') or (max(1, sum(1 for p, _ in r['blocks'] if p) // KERNEL_SAMPLES) | 1)
  after = [i for i, (points, _) in enumerate(r['blocks']) if points and (i + 1) % every == 0]
  return [(size, seconds, i) for (size, seconds), i in zip(runs, after)]


def rate_rows(r: dict) -> tuple[list[list[str]], dict]:
  """Per block size: the projection per block against the kernel's own cost for that block.

  The load of a shared machine moves a kernel call's time by 2x between neighbouring calls, so
  the ratio is built from times taken at the same moment: the distance call inside each block
  ("kernel inside"), scaled by what the block would cost unpadded (the map pads every block to
  the largest; "kernel alone" back to back after the map, this size over the padded size: 1 for
  full blocks). The interleaved kernel-alone runs, each over the distance call of the block it
  followed, check that the call inside the projection runs as fast as alone.

  Returns:
    (rows, totals over all steady blocks: ``kernel`` the kernel's own cost over the
    projection's time (the projection's rate as a share of the kernel's), ``inside`` the
    distance calls' share of the projection's time, ``rate`` the projection's triples/s).
  """
  steady = _steady(r)
  inside_of = {i: k for runs in steady.values() for i, _, k in runs}
  paired = defaultdict(list)
  for size, seconds, i in _paired_runs(r):
    if i in inside_of:
      paired[size].append(seconds / inside_of[i])
  after = {int(size): statistics.median(runs) for size, runs in r['kernel_after'].items()}
  padded = max(steady) if r.get('resident', True) else None
  rows, totals = [], defaultdict(float)
  for size in sorted(set(steady) | set(after), reverse=True):
    blocks = steady.get(size, [])
    row = [f'{size:,}', str(len(blocks)) if blocks else '-']
    if blocks:
      scale = after[size] / after[padded] if padded else 1.0
      p_s = statistics.median(s for _, s, _ in blocks)
      in_s = statistics.median(k for _, _, k in blocks)
      spent = sum(s for _, s, _ in blocks)
      totals['time'] += spent
      totals['inside'] += sum(k for _, _, k in blocks)
      totals['kernel'] += scale * sum(k for _, _, k in blocks)
      totals['triples'] += _triples(size, r) * len(blocks)
      row += [f'{p_s:.2f}', f'{_triples(size, r) / p_s:.3g}', f'{in_s:.2f}', f'{in_s / p_s:.0%}',
              f'{scale:.2f}', f'{scale * in_s / p_s:.0%}',
              f'{statistics.median(paired[size]):.2f} ({len(paired[size])})'
              if paired[size] else '-']
    else:
      row += ['-'] * 7
    rows.append(row + [f'{after[size]:.2f}' if size in after else '-',
                       f'{_triples(size, r) / after[size]:.3g}' if size in after else '-'])
  return rows, dict(kernel=totals['kernel'] / totals['time'],
                    inside=totals['inside'] / totals['time'],
                    rate=totals['triples'] / totals['time'])


def breakdown_rows(r: dict) -> list[list[str]]:
  """Where the projection's time went, per wrapped function (kernel-alone runs excluded)."""
  total = r['projection_s'] - r['kernel_in_projection_s']
  phase = {k[len('projection: '):]: v for k, v in r['phase_seconds'].items()
           if k.startswith('projection: ')}
  calls = {k[len('projection: '):]: v for k, v in r['phase_calls'].items()}
  rows = []
  for name, seconds in sorted(phase.items(), key=lambda kv: (kv[0].split(' > ')[0] != 'distances',
                                                              kv[0].split(' > ')[0], -kv[1])):
    rows.append([name.replace(' > ', ': '), f'{seconds:.1f}', f'{seconds / total:.1%}',
                 str(calls.get(name, ''))])
  counted = sum(v for k, v in phase.items() if ' > ' not in k)
  rows.append(['other (loop, callbacks, bookkeeping)', f'{total - counted:.1f}',
               f'{(total - counted) / total:.1%}', ''])
  blocks = sum(1 for points, _ in r['blocks'] if points)
  rows.append(['projection total', f'{total:.1f}', '100%', f'{blocks} blocks'])
  return rows


def end_to_end_row(r: dict, write: dict, rss: int) -> list[str]:
  ps = r['phase_seconds']
  proj = r['projection_s'] - r['kernel_in_projection_s']
  wall = r['open_s'] + r['embed_s'] - r['kernel_in_projection_s'] - r['inputs_s']
  return [f'{r["points"]:,}', f'{r["members"]:,} x {r["times"]}',
          f'{write["bytes"] / 1e9:.2f}',
          f'{write["seconds"]:.0f}' + (' (kept store)' if write.get('reused') else ''),
          f'{r["open_s"]:.1f}',
          f'{ps.get("fit: read", 0):.1f}', f'{ps.get("fit: distances", 0):.1f}',
          f'{ps.get("fit: eigensolver", 0):.1f}', f'{r["fit_end_s"]:.1f}', f'{proj:.1f}',
          f'{r["read_back_s"]:.1f}', f'{wall:.1f}', f'{wall / r["points"] * 1e6:.0f}',
          f'{rss / 2**30:.2f}']


def _measured_rates(r: dict) -> dict:
  """This run's rates that the estimates use (see ``estimate_section``)."""
  ps = r['phase_seconds']
  n, c = r['samples'], r['classes']
  alone = {int(size): statistics.median(runs) for size, runs in r['kernel_after'].items()}
  size = max(_steady(r))
  # The host's padding rate: of the landmarks where they were padded per block (before
  # DistancesTo), else of the blocks.
  label = next(name for name in ('projection: distances > pad landmarks',
                                 'projection: distances > pad block') if name in ps)
  return dict(
      pad_Bps=r['padded_bytes'][label] / ps[label],
      read_Bps=r['points'] * n * c * 2 / ps['projection: read'],
      kernel_rate=size * r['landmarks'] * n / alone[size])


E2E_HEADERS = ['points', 'members x times', 'store GB', 'write s', 'open s', 'read L s',
               'Gram s', 'eigen s', 'fit total s', 'projection s', 'read back s', 'total s',
               'us/point', 'peak RSS GiB']
RATE_HEADERS = ['block points', 'steady blocks', 'projection s', 'projection triples/s',
                'kernel inside s', 'inside / projection', 'unpadded / padded',
                'kernel / projection', 'interleaved alone / inside (runs)', 'kernel alone s',
                'kernel alone triples/s']


def _load() -> str:
  return ', '.join(f'{x:.1f}' for x in os.getloadavg())


def _save(record: dict, path: str) -> dict:
  with open(path, 'w') as f:
    json.dump(record, f)
  return record


def run_size(args, points: int, common_argv: list[str]) -> dict:
  """Writes the store of ``points`` points, maps it in a fresh child, deletes both.

  Returns (and saves as ``<workdir>/run-<points>.json``, for --render) the write's and the
  map's results, the map child's ru_maxrss and the load around the map.
  """
  times = points // args.members
  path = os.path.join(args.workdir, f'store-{points}')
  shutil.rmtree(path + '-map', ignore_errors=True)
  written = path + '-write.log.json'
  if args.reuse and os.path.exists(os.path.join(path, 'sweep.json')) and os.path.exists(written):
    with open(written) as f:
      write = dict(json.load(f), reused=True)
  else:
    shutil.rmtree(path, ignore_errors=True)
    print(f'{points:,} points: writing {args.members} x {times} ...', file=sys.stderr,
          flush=True)
    write, _ = _child(['--child', 'write', '--store', path, '--times', str(times),
                       *common_argv], path + '-write.log')
  record = dict(points=points, write=write, load_start=_load())
  if 'error' not in write:
    print(f'  written in {write["seconds"]:.0f} s ({write["bytes"] / 1e9:.2f} GB); mapping '
          f'(load {record["load_start"]}) ...', file=sys.stderr, flush=True)
    record['map'], record['rss'] = _child(
        ['--child', 'map', '--store', path, '--landmarks', str(args.landmarks), '--k',
         str(args.k), '--kernel_every', str(args.kernel_every), '--repeats', str(args.repeats),
         *common_argv], path + '-map.log')
    record['load_end'] = _load()
  if not args.keep:
    for old in (path, path + '-map'):
      shutil.rmtree(old, ignore_errors=True)
  return _save(record, os.path.join(args.workdir, f'run-{points}.json'))


def run_fit(args, common_argv: list[str]) -> dict:
  """The fit-only child; returns (and saves as ``<workdir>/fit-<L>.json``) its results."""
  print(f'landmark fit at L = {args.fit_landmarks:,} ...', file=sys.stderr, flush=True)
  record = dict(load_start=_load())
  record['fit'], record['rss'] = _child(
      ['--child', 'fit', '--fit_landmarks', str(args.fit_landmarks), '--k', str(args.k),
       '--fit_method', args.fit_method, *common_argv],
      os.path.join(args.workdir, f'fit-{args.fit_landmarks}.log'))
  record['load_end'] = _load()
  # One record's restore at the paper's record shape (the --quick samples with --quick).
  samples = args.samples if args.quick else PAPER['samples']
  record['record'], _ = _child(['--child', 'record', '--store', os.path.join(
      args.workdir, 'record-store'), '--samples', str(samples), '--repeats', str(args.repeats)],
      os.path.join(args.workdir, 'record.log'))
  return _save(record, os.path.join(args.workdir, f'fit-{args.fit_landmarks}.json'))


def size_section(record: dict) -> tuple[str, list[str] | None, str, dict]:
  """(markdown section, end-to-end row, summary line, measured rates) of one size's run."""
  points = record['points']
  if 'error' in record['write'] or 'error' in record.get('map', {}):
    why = record['write'].get('error') or record['map']['error']
    return f'{points:,} points: failed: {why}', None, f'{points:,} points: failed', {}
  r, rss = record['map'], record['rss']
  rows, ratio = rate_rows(r)
  row = end_to_end_row(r, record['write'], rss)
  summary = (f'{points:,} points: projection at {ratio["kernel"]:.0%} of the kernel\'s rate '
             f'(distance calls {ratio["inside"]:.0%} of its time; {ratio["rate"]:.3g} '
             f'triples/s steady); {row[11]} s end to end; peak RSS {rss / 2**30:.2f} GiB')
  text = (
      f'### {points:,} points ({r["members"]:,} members x {r["times"]} times, '
      f'L = {r["landmarks"]:,}, N = {r["samples"]}, C = {r["classes"]}, {r["devices"]} '
      f'devices; load {record["load_start"]} at the start of the map, {record["load_end"]} at '
      'its end)\n\n'
      f'The projection against the kernel, by block size (block_size(L) = {r["block_size"]:,}; '
      'steady blocks: the first of each size left out; medians per block). "kernel inside": '
      'the distance call within the projection; "unpadded / padded": the kernel alone at this '
      'size over the kernel alone at the largest (the map pads every block to it), back to back '
      'after the map; "kernel / projection": the two combined, the projection\'s rate as a '
      'share of the kernel\'s; "interleaved alone / inside": distances.bhattacharyya(block, '
      'landmarks) alone right after a block, over that block\'s distance call (median):\n\n' +
      common.markdown_table(RATE_HEADERS, rows) +
      f'\n\nOver all steady blocks the projection runs at **{ratio["kernel"]:.0%}** of the '
      f'kernel\'s rate (its distance calls, padding included, take {ratio["inside"]:.0%} of its '
      'time).\n\nWhere the projection\'s time went:\n\n' +
      common.markdown_table(['part', 'seconds', 'share', 'calls'], breakdown_rows(r)) +
      '\n\nFit and geodesic phases (s): ' + ', '.join(
          f'{k} {v:.1f}' for k, v in sorted(r['phase_seconds'].items())
          if not k.startswith('projection')) +
      f'. ES_1..3 = {", ".join(f"{x:.3f}" for x in r["es"])}.')
  return text, row, summary, _measured_rates(r)


def fit_section(record: dict, k: int) -> tuple[str, str, dict]:
  """(markdown section, summary line, measured rates) of the fit-only run."""
  f, rss = record['fit'], record['rss']
  if 'error' in f:
    return f'Landmark fit alone: failed: {f["error"]}', 'fit: failed', {}
  text = (
      f'### Landmark fit alone, L = {f["landmarks"]:,}, N = {f["samples"]} (load '
      f'{record["load_start"]} at the start, {record["load_end"]} at the end)\n\n' +
      common.markdown_table(
          ['part', 'seconds', 'peak MiB above input', 'notes'],
          [['Gram (distances.bhattacharyya, compile included)', f'{f["gram_s"]:.1f}',
            f'{f["gram_peak"] / 2**20:.0f}',
            f'{f["landmarks"] ** 2 * f["samples"] / f["gram_s"]:.3g} pair-samples/s (full '
            f'matrix); input {f["input_bytes"] / 2**20:.0f} MiB'],
           [f'inpca(method={f["method"]!r} -> {f["resolved"]!r}, k={k})',
            f'{f["eigen_s"]:.1f}', f'{f["eigen_peak"] / 2**20:.0f}',
            f'of which the solver (eigen.top_by_magnitude) {f["solver_s"]:.1f} s, the rest '
            f'checks, float64 copies, double centring; ES_1..3 '
            f'{", ".join(f"{x:.3f}" for x in f["es"])}'],
           ['child peak RSS', '', f'{rss / 2**20:.0f}', 'ru_maxrss of the whole child']]) +
      f'\n\nEigensolvers available (eigen.METHODS): {", ".join(f["methods"])}.')
  summary = (f'fit L = {f["landmarks"]:,}: Gram {f["gram_s"]:.1f} s '
             f'(+{f["gram_peak"] / 2**30:.1f} GiB), {f["resolved"]} {f["eigen_s"]:.1f} s '
             f'(+{f["eigen_peak"] / 2**30:.1f} GiB)')
  measured = (dict(solver_s=f['solver_s'], centre_s=f['eigen_s'] - f['solver_s'])
              if f['landmarks'] == PAPER['landmarks'] else {})
  rec = record.get('record', {})
  if 'seconds' in rec:
    seconds = statistics.median(rec['seconds'])
    text += (f'\n\nOne record at the paper\'s shape ({PAPER["cohort_size"]} members x '
             f'{rec["record_bytes"] // (PAPER["cohort_size"] * PAPER["classes"] * 2):,} probes x '
             f'{PAPER["classes"]}, float16, {rec["record_bytes"] / 1e6:.0f} MB) restores through '
             f'read_points in {seconds:.2f} s (median of {len(rec["seconds"])}: '
             f'{", ".join(f"{s:.2f}" for s in rec["seconds"])}), '
             f'{rec["record_bytes"] / seconds / 1e6:.0f} MB/s of float16.')
    measured['record_Bps'] = rec['record_bytes'] / seconds
  return text, summary, measured


def render(environment: list[str], runs: list[dict], fit: dict | None, k: int) -> str:
  """The results file: end-to-end table, one section per size, the fit, the estimates."""
  sections, summary, e2e_rows, measured = [], [], [], {}
  for record in runs:
    text, row, line, rates = size_section(record)
    sections.append(text)
    summary.append(line)
    measured.update(rates)
    if row:
      e2e_rows.append(row)
  if fit:
    text, line, rates = fit_section(fit, k)
    sections.append(text)
    summary.append(line)
    measured.update(rates)
  return ('# Landmark map\n\n' + '\n'.join(environment) + '\n\n' +
          ('## End to end\n\n' + common.markdown_table(E2E_HEADERS, e2e_rows) + '\n\n'
           '`total s` = open + embed_trajectories, less the kernel-alone runs interleaved in the '
           'projection (and the reads of their inputs); `fit total s`: from the start of '
           'embed_trajectories to the projection.\n\n' if e2e_rows else '') +
          '\n\n'.join(sections) + '\n\n' +
          ('## On paper (estimates)\n\n' + estimate_section(measured) + '\n\n'
           if {'pad_Bps', 'solver_s'} <= set(measured) else '') +
          '## Summary\n\n' + '\n'.join(f'- {line}' for line in summary))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help=f'smoke sizes {QUICK}')
  parser.add_argument('--points', type=common.int_list, default=POINTS,
                      help='comma-separated point counts to map end to end (0: none)')
  parser.add_argument('--members', type=int, default=MEMBERS)
  parser.add_argument('--cohort_size', type=int, default=COHORT_SIZE)
  parser.add_argument('--landmarks', type=int, default=LANDMARKS)
  parser.add_argument('--samples', type=int, default=SAMPLES, help='train probes N')
  parser.add_argument('--classes', type=int, default=CLASSES)
  parser.add_argument('--k', type=int, default=K)
  parser.add_argument('--fit_landmarks', type=int, default=FIT_LANDMARKS,
                      help='L of the fit-only part (0: skip)')
  parser.add_argument('--fit_method', default=FIT_METHOD)
  parser.add_argument('--kernel_every', type=int, default=0,
                      help=f'run the kernel alone after every k-th block (0: ~{KERNEL_SAMPLES} '
                           'times per map)')
  parser.add_argument('--repeats', type=int, default=REPEATS)
  parser.add_argument('--workdir', default=WORKDIR, help='stores and maps (deleted unless --keep)')
  parser.add_argument('--keep', action='store_true', help='keep the stores and maps')
  parser.add_argument('--reuse', action='store_true',
                      help='map a store of the same size kept in --workdir by an earlier run '
                           '(--keep) instead of writing it again (the same flags are assumed)')
  parser.add_argument('--render', action='store_true',
                      help='run nothing: write the results from the runs saved in --workdir '
                           '(run-<points>.json, fit-<L>.json) for --points and --fit_landmarks')
  parser.add_argument('--results', default=None,
                      help="markdown output (default benchmarks/results/landmarks_<host>.md, "
                           "with --quick none; '-' for none)")
  parser.add_argument('--child', choices=('write', 'map', 'fit', 'record'),
                      help=argparse.SUPPRESS)
  parser.add_argument('--store', help=argparse.SUPPRESS)
  parser.add_argument('--times', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--result', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.quick:
    args.members, args.cohort_size, args.landmarks = (QUICK['members'], QUICK['cohort_size'],
                                                      QUICK['landmarks'])
    args.samples, args.fit_landmarks = QUICK['samples'], QUICK['fit_landmarks']
    if args.points == POINTS:
      args.points = QUICK['points']
  if args.child:
    if args.child == 'write':
      result = write_sweep(args.store, args.members, args.times, args.cohort_size, args.samples,
                           args.classes)
    elif args.child == 'map':
      result = map_child(args.store, args.store + '-map', args.k, args.landmarks,
                         args.kernel_every, args.repeats)
    elif args.child == 'record':
      result = record_child(args.store, args.samples, args.repeats)
    else:
      result = fit_child(args.fit_landmarks, args.samples, args.classes, args.k, args.fit_method)
    with open(args.result, 'w') as f:
      json.dump(result, f)
    return

  environment = common.environment_lines()
  os.makedirs(args.workdir, exist_ok=True)
  sizes = [points for points in args.points if points]
  common_argv = ['--members', str(args.members), '--cohort_size', str(args.cohort_size),
                 '--samples', str(args.samples), '--classes', str(args.classes)]
  if args.render:
    names = [f'run-{points}.json' for points in sizes] + (
        [f'fit-{args.fit_landmarks}.json'] if args.fit_landmarks else [])
    saved = {}
    for name in names:
      with open(os.path.join(args.workdir, name)) as f:
        saved[name] = json.load(f)
    runs = [saved[f'run-{points}.json'] for points in sizes]
    fit = saved.get(f'fit-{args.fit_landmarks}.json')
    ended = max(os.path.getmtime(os.path.join(args.workdir, name)) for name in names)
    environment[0] = '- date: ' + datetime.datetime.fromtimestamp(
        ended, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC') + ' (the last saved run ended)'
    environment = [line for line in environment if 'load average' not in line]
    environment.append(f'- rendered from the runs saved in {args.workdir}; their loads below')
  else:
    runs = []
    for points in sizes:
      runs.append(run_size(args, points, common_argv))
      print('  ' + size_section(runs[-1])[2], file=sys.stderr, flush=True)
    fit = run_fit(args, common_argv) if args.fit_landmarks else None
    if fit:
      print('  ' + fit_section(fit, args.k)[1], file=sys.stderr, flush=True)
  if not args.render:
    environment.append(f'- load average (1, 5, 15 min) at the end: {_load()}')
  text = render(environment, runs, fit, args.k)
  print(text)
  path = args.results or (None if args.quick else os.path.join(
      common.RESULTS_DIR, f'landmarks_{common.host_kind()}.md'))
  common.write_results(text, path)


if __name__ == '__main__':
  main()
