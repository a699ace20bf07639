"""Devices and the member mesh: the member axis of every cohort is sharded over all devices.

On a CPU-only machine XLA runs the small ops of these networks on about one core per device,
so ``use_cpu_cores`` exposes the cores as devices; the launchers and notebooks call it once,
before the JAX backend starts (measured in benchmarks/results/scale_cpu-2cores.md). A device
count chosen by the user (``XLA_FLAGS``, ``JAX_NUM_CPU_DEVICES`` or ``jax.config``) always
wins. Importing this module changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import platform

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBER_AXIS = 'members'
# Host devices per CPU core when the user chose none (see the module docstring).
CPU_DEVICES_PER_CORE = 1
_USER_CHOICE = ('xla_force_host_platform_device_count',)


def _cpuinfo(field: str) -> str:
  """The first value of ``field`` in /proc/cpuinfo; '' where there is none (or no such file)."""
  try:
    with open('/proc/cpuinfo') as f:
      return next((line.split(':', 1)[1].strip() for line in f
                   if line.split(':', 1)[0].strip() == field), '')
  except OSError:
    return ''


def cpu_name() -> str:
  """The processor's model name, for reports."""
  return _cpuinfo('model name') or platform.processor() or platform.machine() or 'unknown CPU'


def host_tag() -> str:
  """A short name of this host's processor kind: its model and instruction-set flags, hashed.

  Compiled CPU programs use the instruction set of the processor they were compiled on, and a
  home folder may be shared by machines of several kinds; on CPU, JAX's cache key names the
  backend ('cpu' and its version), not the processor.
  """
  digest = hashlib.sha256(f'{cpu_name()}|{_cpuinfo("flags")}'.encode()).hexdigest()[:12]
  return f'{platform.machine() or "host"}-{digest}'


def use_compilation_cache(directory: str) -> str | None:
  """Turns on JAX's persistent compilation cache in ``directory``/``host_tag()``.

  A rerun, a resume after preemption, or a sweep that differs only in per-member values (seeds,
  learning rates, ...) then loads its compiled programs instead of compiling them again. A
  cache folder already chosen (``jax_compilation_cache_dir``, by the user or an earlier call)
  is kept; ``directory`` '' turns nothing on.

  Returns:
    The cache folder in use, or None.

  Raises:
    OSError: ``directory`` cannot be created.
  """
  current = jax.config.jax_compilation_cache_dir
  if current or not directory:
    return current or None
  path = os.path.join(os.path.expanduser(directory), host_tag())
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  return path


def use_cpu_cores() -> int | None:
  """Exposes the CPU cores as JAX devices, unless the user chose or JAX already started.

  Returns:
    The device count set, or None where nothing was changed.
  """
  if any(flag in os.environ.get('XLA_FLAGS', '') for flag in _USER_CHOICE):
    return None
  if 'JAX_NUM_CPU_DEVICES' in os.environ or jax.config.jax_num_cpu_devices != -1:
    return None
  count = CPU_DEVICES_PER_CORE * (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                                  else os.cpu_count() or 1)
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # The backend already started: its devices stay.
    return None
  return count


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Starts JAX's multi-controller runtime (one process per host) before any computation.

  With no arguments ``jax.distributed.initialize`` detects SLURM, TPU pods and Open MPI;
  elsewhere give all three (named as jax.distributed's own arguments).
  """
  given = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in given) and not all(v is not None for v in given):
    raise ValueError('--coordinator_address, --num_processes and --process_id go together: '
                     f'got {given}.')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def put(tree, shardings):
  """Places host arrays (the same on every process) as global arrays with ``shardings``.

  Works on one process and across hosts alike: each process fills only its own shards.
  """
  def one(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: one(x, shardings), tree)
  return jax.tree.map(one, tree, shardings)


def to_host(x) -> np.ndarray:
  """A global array as one NumPy array on every process."""
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def member_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis ``MEMBER_AXIS``."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (MEMBER_AXIS,))


def padded_size(num_members: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh size that holds ``num_members``."""
  return -(-num_members // mesh.size) * mesh.size


def member_shardings(tree, mesh: Mesh):
  """Shardings for a pytree whose leaves have the member axis first (scalars replicated)."""
  return jax.tree.map(
      lambda x: NamedSharding(mesh,
                              PartitionSpec(MEMBER_AXIS) if len(x.shape) else PartitionSpec()),
      tree)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def memory_limit_bytes(mesh: Mesh) -> int | None:
  """Bytes one device of ``mesh`` can hold: the smallest ``bytes_limit`` over the mesh's
  devices, on every process; None where a backend does not report one (CPU)."""
  local = [(d.memory_stats() or {}).get('bytes_limit') for d in mesh.devices.flat
           if d.process_index == jax.process_index()]
  limit = min(local) if local and all(local) else 0
  if jax.process_count() > 1:  # Every process must fit the same programs.
    limit = int(np.min(multihost_utils.process_allgather(np.int64(limit))))
  return limit or None
