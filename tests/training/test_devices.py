"""Tests of ensembles.training.devices: the persistent compilation cache of
``config.train.compilation_cache_dir`` and the host tag naming it, and the member mesh (padding,
shardings, placing arrays and reading them back)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import ensembles
from ensembles.configs import common as config_common
from ensembles.training import devices

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Two runs of the same tiny sweep in one fresh process (no session cache inherited), the second
# into a new workdir: JAX's own counters of persistent-cache hits, the cache folder, and the
# trajectories. Every compile is cached (min time 0), so the count does not depend on speed.
_CHILD = r'''
import json, os, sys
import jax
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
from jax import monitoring
import ensembles
import numpy as np
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
cache, data_dir, workdir = sys.argv[1:4]
out = {}
for run in ('first', 'second'):
  config = ensembles.default_config()
  config.data.data_dir = data_dir
  config.hparams.update(dict(width=8, depth=1, epochs=1, batch_size=64))
  config.record.train_probe_size = 50
  config.record.test_probe_size = 50
  config.train.log_every_seconds = 1e9
  config.train.compilation_cache_dir = cache
  config.sweep.seed = (0, 1)
  del events[:]
  ensembles.train_and_record(config, os.path.join(workdir, run))
  out[run] = dict(hits=events.count('/jax/compilation_cache/cache_hits'),
                  probs=ensembles.load_trajectories(os.path.join(workdir, run)).probs().tolist())
out['cache_dir'] = jax.config.jax_compilation_cache_dir
print(json.dumps(out))
'''


def test_a_rerun_loads_its_programs_from_the_cache(data_dir, tmp_path):
  cache = os.path.join(tmp_path, 'cache')
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  done = subprocess.run(
      [sys.executable, '-c', _CHILD, cache, data_dir, str(tmp_path / 'runs')],
      capture_output=True, text=True, timeout=600, cwd=_ROOT, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert out['cache_dir'] == os.path.join(cache, devices.host_tag())
  assert os.listdir(out['cache_dir'])
  assert out['first']['hits'] == 0
  assert out['second']['hits'] >= 3  # init, train and evaluate of the one cohort at least.
  assert out['first']['probs'] == out['second']['probs']  # Loaded programs, same numbers.


@pytest.fixture
def no_cache_chosen():
  """JAX's cache folder unset for one test (the session's is restored after)."""
  chosen = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', None)
  yield
  jax.config.update('jax_compilation_cache_dir', chosen)


def test_an_unusable_cache_folder_fails_before_anything_is_written(small_config, tmp_path,
                                                                    no_cache_chosen):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  config = small_config()
  config.train.compilation_cache_dir = str(blocker / 'cache')
  workdir = tmp_path / 'run'
  with pytest.raises(ensembles.ConfigError,
                     match=r"config.train.compilation_cache_dir=.* cannot be created .*"
                           r"accepted: a writable directory, or ''"):
    ensembles.train_and_record(config, str(workdir))
  assert not workdir.exists()
  assert jax.config.jax_compilation_cache_dir is None


def test_an_unusable_default_cache_folder_only_warns(small_config, tmp_path, monkeypatch,
                                                      no_cache_chosen):
  home = tmp_path / 'home'
  home.write_text('')  # A file where the home folder should be: ~/.cache cannot be created.
  monkeypatch.setenv('HOME', str(home))
  config = small_config()
  assert config.train.compilation_cache_dir == config_common.DEFAULT_COMPILATION_CACHE_DIR
  with pytest.warns(UserWarning, match='Training without a compilation cache: '
                                       r'config.train.compilation_cache_dir=.* cannot be created'):
    ensembles.train_and_record(config, str(tmp_path / 'run'))
  assert ensembles.load_trajectories(str(tmp_path / 'run')).probs().shape[0] == 1
  assert jax.config.jax_compilation_cache_dir is None


def test_a_cache_folder_chosen_in_jax_wins(tmp_path, no_cache_chosen):
  assert devices.use_compilation_cache('') is None  # '' turns nothing on.
  assert jax.config.jax_compilation_cache_dir is None
  jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'mine'))
  assert devices.use_compilation_cache(str(tmp_path / 'other')) == str(tmp_path / 'mine')
  assert not (tmp_path / 'other').exists()


def test_host_tag_names_the_processor_kind(monkeypatch):
  cpuinfo = {'model name': 'Some CPU', 'flags': 'fpu sse2 avx2'}
  monkeypatch.setattr(devices, '_cpuinfo', lambda field: cpuinfo.get(field, ''))
  tag = devices.host_tag()
  assert tag == devices.host_tag() and len(tag.rsplit('-', 1)[1]) == 12
  cpuinfo['flags'] += ' avx512f'  # Same model name, another instruction set: another folder.
  assert devices.host_tag() != tag
  cpuinfo.update({'model name': 'Other CPU', 'flags': 'fpu sse2 avx2'})
  assert devices.host_tag() != tag


def test_cpuinfo_fields_are_read_by_name():
  if not os.path.exists('/proc/cpuinfo'):
    pytest.skip('no /proc/cpuinfo here')
  with open('/proc/cpuinfo') as f:
    expected = next(line.split(':', 1)[1].strip() for line in f if line.startswith('flags'))
  assert devices._cpuinfo('flags') == expected and devices._cpuinfo('no such field') == ''


@pytest.fixture
def two_devices():
  if len(jax.devices()) < 2:
    pytest.skip('needs 2 devices (the tests expose one per CPU core)')
  return jax.devices()[:2]


def test_padded_size_is_the_next_multiple_of_the_mesh(two_devices):
  one, two = devices.member_mesh(two_devices[:1]), devices.member_mesh(two_devices)
  assert [devices.padded_size(n, one) for n in (0, 1, 2, 3, 7)] == [0, 1, 2, 3, 7]
  assert [devices.padded_size(n, two) for n in (0, 1, 2, 3, 4, 5, 8)] == [0, 2, 2, 4, 4, 6, 8]


def test_member_shardings_split_the_member_axis_and_replicate_scalars(two_devices):
  mesh = devices.member_mesh(two_devices)
  tree = dict(step=jnp.int32(3), w=jax.ShapeDtypeStruct((4, 3), jnp.float32),
              nested=(np.zeros(4), np.zeros((4, 2, 5))))
  shardings = devices.member_shardings(tree, mesh)
  assert shardings['step'].spec == PartitionSpec()
  for s in (shardings['w'], *shardings['nested']):
    assert s.spec == PartitionSpec(devices.MEMBER_AXIS) and s.mesh == mesh
  assert devices.replicated(mesh).spec == PartitionSpec()


def test_put_and_to_host_round_trip_on_the_cpu_devices(two_devices):
  mesh = devices.member_mesh(two_devices)
  host = dict(step=np.int32(7), w=np.arange(24, dtype=np.float32).reshape(4, 3, 2),
              alive=np.array([True, False, True, True]))
  placed = devices.put(host, devices.member_shardings(host, mesh))
  for k, x in placed.items():
    assert isinstance(x, jax.Array) and x.sharding.mesh == mesh, k
    np.testing.assert_array_equal(devices.to_host(x), host[k])
    assert devices.to_host(x).dtype == host[k].dtype
  # Members 0-1 on the first device, 2-3 on the second; the scalar on both.
  shards = {s.device: np.asarray(s.data) for s in placed['w'].addressable_shards}
  np.testing.assert_array_equal(shards[two_devices[0]], host['w'][:2])
  np.testing.assert_array_equal(shards[two_devices[1]], host['w'][2:])
  assert all(int(s.data) == 7 for s in placed['step'].addressable_shards)
  assert len(placed['step'].addressable_shards) == 2
  # One sharding for a whole tree: replicated on every device.
  replicated = devices.put(host, devices.replicated(mesh))
  for k, x in replicated.items():
    assert len(x.addressable_shards) == 2
    for s in x.addressable_shards:
      np.testing.assert_array_equal(np.asarray(s.data), host[k])
