"""Datasets on the accelerator: TFDS loading, per-member batches, augmentation and probe sets.

Every dataset is a TFDS dataset in array_record format under a `data_dir`, read back with
`tfds.data_source` (random access, no TensorFlow). The embedded ones (`EMBEDDED_DATASETS`, see
`ensembles.training.datasets.builders` for their sources and fixed splits) are prepared there offline on
first use. The external ones (`EXTERNAL_DATASETS`) must be prepared already, or their archives
must sit in a manual directory (`ensembles.training.datasets.external`): nothing here downloads. To
use CIFAR-10 offline, fetch `cifar-10-binary.tar.gz` by hand, put it in
`<data_dir>/downloads/manual/cifar10/` (or pass `manual_dir=`), and load: the first load
prepares it without TensorFlow (once; timed in benchmarks/README.md), later loads just read
it.

The whole training set then lives on the device (`to_device`) as stored: uint8 images, float32
mnist1d signals. Inside the jitted, member-vmapped step each member gathers its own batch from
its own permutation, normalises and augments it::

  perm_N = epoch_permutation(member_key, epoch, info.num_train)
  x_BxS, y_B = gather_batch(ds.x_train, ds.y_train, perm_N, step_in_epoch, batch_size)
  x_BxS = augment(step_key, normalize(x_BxS, ds.mean, ds.std), augment_enabled, info)

so the host never feeds batches in the hot loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from ensembles.training.datasets import builders
from ensembles.training.datasets import external

EMBEDDED_DATASETS = ('digits', 'mnist5k', 'mnist1d')
EXTERNAL_DATASETS = ('cifar10', 'cifar100', 'mnist', 'fashion_mnist', 'svhn_cropped')
DATASETS = EMBEDDED_DATASETS + EXTERNAL_DATASETS

# Environment variable naming the TFDS data directory; `DEFAULT_DATA_DIR` when unset.
DATA_DIR_ENV = 'ENSEMBLES_DATA_DIR'
DEFAULT_DATA_DIR = '~/.cache/ensembles/tensorflow_datasets'
# uint8 inputs are divided by this to lie in [0, 1] before normalising; float inputs are not.
UINT8_MAX = 255
# Crop padding is the image side divided by this (floor): CIFAR's customary 4 px of 32, and by
# the same proportion 3 px for 28x28 MNIST and 1 px for 8x8 digits. 1-D data is not cropped.
CROP_PADDING_DIVISOR = 8
# Chance that `augment` mirrors an example, where flipping is meaningful.
FLIP_PROBABILITY = 0.5
# Whether a left-right mirror keeps the class: not for digits (a mirrored 2, 3 or 7 is another
# glyph or none) nor 1-D signals; yes for natural images and garments.
FLIP_KEEPS_CLASS = {
    'digits': False, 'mnist5k': False, 'mnist1d': False, 'cifar10': True, 'cifar100': True,
    'mnist': False, 'fashion_mnist': True, 'svhn_cropped': False,
}
# Floor on a channel's std so that a constant channel normalises to 0 instead of inf.
_MIN_STD = 1e-6
# Examples per chunk when accumulating the train statistics (bounds float64 temporaries).
_STATS_CHUNK = 4096
# Lock file (inside data_dir) serialising preparation of one dataset across processes.
_LOCK_NAME = '.{name}.prepare.lock'
# Rank of one image example (H, W, C); 1-D examples (L, C) have rank 2.
_IMAGE_RANK = 3


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a loaded dataset (hashable: usable as a jit static argument).

  Attributes:
    name: one of DATASETS.
    num_classes: number of classes; labels lie in [0, num_classes).
    input_shape: one example's shape: (8, 8, 1) digits, (28, 28, 1) MNIST-like, (32, 32, 3)
      CIFAR/SVHN, (40, 1) mnist1d.
    crop_padding: pixels of padding for random crops (side // CROP_PADDING_DIVISOR); 0 for 1-D.
    flip: whether `augment` mirrors examples left-right (FLIP_KEEPS_CLASS).
    num_train: train examples.
    num_test: test examples.
  """

  name: str
  num_classes: int
  input_shape: tuple[int, ...]
  crop_padding: int
  flip: bool
  num_train: int
  num_test: int


@flax.struct.dataclass
class Dataset:
  """A dataset's arrays, on the host (numpy, from `load_dataset`) or device (`to_device`).

  Attributes:
    info: static description (not a pytree leaf).
    x_train: (num_train, *input_shape) uint8 images (raw pixel values: 0-16 for digits, 0-255
      otherwise) or float32 mnist1d signals.
    y_train: (num_train,) int32 labels.
    x_test: (num_test, *input_shape), like x_train.
    y_test: (num_test,) int32 labels.
    mean: (channels,) float32 per-channel mean of the train inputs after the uint8 -> [0, 1]
      scaling of `normalize` (x / 255; mnist1d raw).
    std: (channels,) float32 per-channel std (population) of the same values.
  """

  info: DatasetInfo = flax.struct.field(pytree_node=False)
  x_train: jax.Array | np.ndarray
  y_train: jax.Array | np.ndarray
  x_test: jax.Array | np.ndarray
  y_test: jax.Array | np.ndarray
  mean: jax.Array | np.ndarray
  std: jax.Array | np.ndarray


def default_data_dir() -> str:
  """Returns $ENSEMBLES_DATA_DIR, else ~/.cache/ensembles/tensorflow_datasets (expanded)."""
  return os.path.expanduser(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def load_dataset(name: str, data_dir: str | None = None,
                 manual_dir: str | None = None) -> Dataset:
  """Loads a dataset's splits into host memory, through `tfds.data_source`.

  Prepares it first if needed (`prepare_dataset`). An external dataset's load is spent
  decoding its PNGs with PIL (TFDS decodes with OpenCV instead when it is installed); load
  times in benchmarks/README.md ("Dataset loading, and small kernels").

  Args:
    name: one of DATASETS.
    data_dir: TFDS data directory; None for `default_data_dir()`.
    manual_dir: where an external dataset's hand-downloaded files are, if it must be prepared;
      None for `<data_dir>/downloads/manual/<name>`.

  Returns:
    A Dataset of numpy arrays with its train statistics.

  Raises:
    ValueError: unknown name, or manual files that fail their checksums.
    external.NotPreparedError: an external dataset is neither prepared nor preparable offline.
    RuntimeError: the prepared folder is unreadable (damaged, or not array_record).
  """
  data_dir = prepare_dataset(name, data_dir, manual_dir)
  x_train, y_train, tfds_info = _read_split(name, 'train', data_dir)
  x_test, y_test, _ = _read_split(name, 'test', data_dir)
  _, label_key = tfds_info.supervised_keys
  input_shape = tuple(x_train.shape[1:])
  info = DatasetInfo(
      name=name, num_classes=tfds_info.features[label_key].num_classes,
      input_shape=input_shape,
      crop_padding=(input_shape[0] // CROP_PADDING_DIVISOR
                    if len(input_shape) == _IMAGE_RANK else 0),
      flip=FLIP_KEEPS_CLASS[name], num_train=len(y_train), num_test=len(y_test))
  mean_C, std_C = _channel_stats(x_train)
  return Dataset(info=info, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 mean=mean_C, std=std_C)


def prepare_dataset(name: str, data_dir: str | None = None,
                    manual_dir: str | None = None) -> str:
  """Prepares `name` into `data_dir` as array_record unless it is there already.

  Embedded datasets are built from their bundled sources; external ones from the files in
  manual_dir (`ensembles.training.datasets.external`), checked against TFDS's registered checksums.
  If an external dataset lacks files, this raises before writing anything. Concurrent callers
  are serialised by a lock file in data_dir, and TFDS writes into an `incomplete.*` folder that
  it renames only when done, so an interrupted run never leaves a folder that looks prepared.

  Args:
    name: one of DATASETS.
    data_dir: TFDS data directory; None for `default_data_dir()`.
    manual_dir: an external dataset's hand-downloaded files (`external.MANUAL_FILES`); None for
      `<data_dir>/downloads/manual/<name>`.

  Returns:
    The data_dir used (expanded).

  Raises:
    ValueError: unknown name, or manual files that fail their checksums.
    external.NotPreparedError: external files missing (nothing is written).
  """
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; accepted: {", ".join(DATASETS)}.')
  data_dir = os.path.expanduser(os.fspath(data_dir or default_data_dir()))
  if _is_prepared(name, data_dir):
    return data_dir
  if name in EXTERNAL_DATASETS:
    external.check_manual_files(name, data_dir, manual_dir)  # Fails before touching data_dir.
  os.makedirs(data_dir, exist_ok=True)
  with _prepare_lock(data_dir, name), tempfile.TemporaryDirectory() as download_dir:
    if _is_prepared(name, data_dir):  # Another process finished while we waited.
      return data_dir
    _remove_incomplete_dirs(os.path.join(data_dir, name))
    if name in EXTERNAL_DATASETS:
      external.prepare(name, data_dir, manual_dir, download_dir)
    else:
      builder = builders.EMBEDDED_BUILDERS[name](data_dir=data_dir, file_format='array_record')
      builder.download_and_prepare(
          download_dir=download_dir,
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return data_dir


def to_device(dataset: Dataset, sharding: jax.sharding.Sharding | None = None) -> Dataset:
  """Puts the dataset's arrays on device (`jax.device_put`).

  Args:
    dataset: host (or device) dataset.
    sharding: where to put every array. None: the default device when there is only one (no
      mesh, so jitted outputs keep plain single-device types and retrace nothing); with several
      devices, replicated over a 1-D mesh of all of them. A trainer with its own mesh should pass
      `NamedSharding(its_mesh, PartitionSpec())`, so the dataset and its state share one mesh.

  Returns:
    The dataset with jax arrays; `info` unchanged.
  """
  if sharding is None and jax.device_count() == 1:
    return jax.device_put(dataset)
  if sharding is None:
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('devices',))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.device_put(dataset, sharding)


def normalize(x: jax.Array, mean_C: jax.Array, std_C: jax.Array) -> jax.Array:
  """Returns float32 `(x_scaled - mean) / std`, x_scaled = x / 255 for uint8, x for floats.

  The statistics (`Dataset.mean`/`std`) are of the same scaled values, so the result does not
  depend on the scaling (digits, with pixel values 0-16, simply have small statistics).
  Jittable; broadcasts over the last (channel) axis.
  """
  return (jnp.asarray(x).astype(jnp.float32) * _unit_scale(x.dtype) - mean_C) / std_C


# Rank and index share one uint32 in ``_stable_argsort``: 16 bits each.
_FAST_PERMUTATION_MAX = 2**16


def epoch_permutation(key: jax.Array, epoch: jax.Array | int, num_examples: int) -> jax.Array:
  """Returns this member's int32 `(num_examples,)` data order for `epoch`.

  `jax.random.permutation(fold_in(key, epoch), num_examples)`, element for element: resuming
  needs no stored RNG. Jittable with a traced epoch (num_examples static) and vmappable over
  member keys.

  JAX shuffles by sorting (index, random key) pairs, in ``ceil(3 ln N / ln(2^32 - 1))``
  rounds of fresh keys. XLA's CPU sort of key-value pairs is slow, so for N <= 2^16 each
  round runs as ``_stable_argsort`` instead (same order, faster on CPU: benchmarks/README.md).
  """
  key_epoch = jax.random.fold_in(key, epoch)
  if num_examples > _FAST_PERMUTATION_MAX:
    return jax.random.permutation(key_epoch, num_examples).astype(jnp.int32)
  rounds = int(np.ceil(3 * np.log(max(1, num_examples)) / np.log(np.iinfo(np.uint32).max)))
  order_N = jnp.arange(num_examples, dtype=jnp.int32)
  for _ in range(rounds):  # As jax.random.permutation: a split, then 32 random bits per element.
    key_epoch, round_key = jax.random.split(key_epoch)
    order_N = jnp.take(order_N, _stable_argsort(
        jax.random.bits(round_key, (num_examples,), jnp.uint32)))
  return order_N



def _stable_argsort(keys_N: jax.Array) -> jax.Array:
  """The stable ascending order of uint32 keys (N <= 2^16), with one-operand sorts only.

  Each key's rank (the number of smaller keys; equal keys share it) goes into the high bits,
  its index into the low ones; sorting those packed values orders by key, ties by index.
  """
  n = keys_N.shape[0]
  bits = max(1, (n - 1).bit_length())
  rank_N = jnp.searchsorted(jnp.sort(keys_N), keys_N, side='left').astype(jnp.uint32)
  packed_N = jnp.sort((rank_N << bits) | jnp.arange(n, dtype=jnp.uint32))
  return (packed_N & ((1 << bits) - 1)).astype(jnp.int32)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per epoch, `num_examples // batch_size` (the last partial batch is dropped)."""
  if not 0 < batch_size <= num_examples:
    raise ValueError(f'batch_size {batch_size} must be in [1, num_examples = {num_examples}].')
  return num_examples // batch_size


def gather_batch(x_NxS: jax.Array, y_N: jax.Array, perm_N: jax.Array,
                 step_in_epoch: jax.Array | int, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """Gathers batch `step_in_epoch` of an epoch's permutation, on device.

  Takes `perm_N[step * B : (step + 1) * B]` (a dynamic slice, so the step may be traced;
  batch_size is static) and indexes the arrays with it. Valid steps are
  `0 .. steps_per_epoch(N, B) - 1`; a larger traced step is clamped to the last full batch.
  Vmap over members with `in_axes=(None, None, 0, None, None)`.

  Returns:
    (x_BxS, y_B) in the stored dtypes.
  """
  idx_B = jax.lax.dynamic_slice_in_dim(perm_N, step_in_epoch * batch_size, batch_size)
  return jnp.take(x_NxS, idx_B, axis=0), jnp.take(y_N, idx_B, axis=0)


def augment(key: jax.Array, x_BxS: jax.Array, enabled: jax.Array | bool, info: DatasetInfo,
            pad_value: jax.Array | float = 0.0) -> jax.Array:
  """Random crop with padding and optional left-right flip, per example; x where not enabled.

  Images `x_BxHxWxC` are padded by `info.crop_padding` pixels of `pad_value` on each side and
  cropped back at a uniformly random offset, i.e. shifted by (dy, dx) in [-p, p]^2; then, if
  `info.flip`, mirrored with probability FLIP_PROBABILITY. On normalised inputs the default
  pad_value 0 is the train mean; pass `normalize(jnp.zeros((), jnp.uint8), mean, std)` to pad
  with black as torchvision does. 1-D data (crop_padding 0, no flip) is returned as is.

  Args:
    key: this member's key for this step (e.g. `fold_in(member_key, step)`).
    x_BxS: float32 batch, normally already normalised.
    enabled: traced bool scalar (a per-member hyperparameter under vmap).
    info: static dataset info.
    pad_value: scalar or (C,) value of the padded border.

  Returns:
    The augmented batch where enabled, otherwise `x_BxS` exactly.
  """
  if x_BxS.shape[1:] != info.input_shape:
    raise ValueError(f'augment: batch shape {x_BxS.shape} does not end in {info.name} input '
                     f'shape {info.input_shape}.')
  if not info.crop_padding and not info.flip:
    return x_BxS
  crop_key, flip_key = jax.random.split(key)
  out_BxS = x_BxS
  if info.crop_padding:
    out_BxS = _random_crop(crop_key, out_BxS, info.crop_padding, pad_value)
  if info.flip:
    flip_B = jax.random.bernoulli(flip_key, FLIP_PROBABILITY, (x_BxS.shape[0],))
    out_BxS = jnp.where(flip_B[:, None, None, None], out_BxS[:, :, ::-1, :], out_BxS)
  return jnp.where(enabled, out_BxS, x_BxS)


def probe_indices(labels_N: np.ndarray, size: int | None, seed: int) -> np.ndarray:
  """Sorted indices of a fixed stratified subset, on which predictions are recorded.

  Class counts are within 1 of `size * n_c / N` (`builders.stratified_indices`); the same
  (labels, size, seed) always give the same indices.

  Args:
    labels_N: the split's labels.
    size: subset size; None or >= N for all examples.
    seed: seed of the draw.

  Raises:
    ValueError: size <= 0 or fewer than the number of classes present.
  """
  labels_N = np.asarray(labels_N)
  num_classes = len(np.unique(labels_N))
  if size is None or size >= len(labels_N):
    return np.arange(len(labels_N), dtype=np.int64)
  if size <= 0 or size < num_classes:
    raise ValueError(
        f'probe size {size} is too small: it must be at least the {num_classes} classes present '
        f'(one example each), or None / >= {len(labels_N)} for all examples.')
  return builders.stratified_indices(labels_N, size, seed)


# -- helpers -------------------------------------------------------------------------------------


def _unit_scale(dtype) -> float:
  if dtype == np.uint8:
    return 1.0 / UINT8_MAX
  if np.issubdtype(dtype, np.floating):
    return 1.0
  raise TypeError(f'Inputs must be uint8 images or float signals, got dtype {dtype}.')


def _channel_stats(x_NxS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (last axis) mean and population std of the scaled train inputs."""
  channels = x_NxS.shape[-1]
  total_C, total_sq_C = np.zeros(channels), np.zeros(channels)
  for start in range(0, len(x_NxS), _STATS_CHUNK):
    chunk_MxC = x_NxS[start:start + _STATS_CHUNK].reshape(-1, channels) * _unit_scale(x_NxS.dtype)
    total_C += chunk_MxC.sum(axis=0)
    total_sq_C += np.square(chunk_MxC).sum(axis=0)
  count = x_NxS.size // channels
  mean_C = total_C / count
  std_C = np.sqrt(np.maximum(total_sq_C / count - np.square(mean_C), 0.0))
  return mean_C.astype(np.float32), np.maximum(std_C, _MIN_STD).astype(np.float32)


def _random_crop(key: jax.Array, x_BxHxWxC: jax.Array, padding: int,
                 pad_value: jax.Array | float) -> jax.Array:
  batch, height, width, channels = x_BxHxWxC.shape
  padded_shape = (batch, height + 2 * padding, width + 2 * padding, channels)
  canvas = jnp.broadcast_to(jnp.asarray(pad_value, x_BxHxWxC.dtype), padded_shape)
  padded = canvas.at[:, padding:padding + height, padding:padding + width, :].set(x_BxHxWxC)
  offsets_Bx2 = jax.random.randint(key, (batch, 2), 0, 2 * padding + 1)
  crop = lambda image, offset: jax.lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, channels))
  return jax.vmap(crop)(padded, offsets_Bx2)


def _is_prepared(name: str, data_dir: str) -> bool:
  if not os.path.isdir(os.path.join(data_dir, name)):
    return False
  return tfds.builder(name, data_dir=data_dir).is_prepared()


def _read_split(name: str, split: str, data_dir: str):
  """Reads one split through tfds.data_source; returns (x, y int32, tfds DatasetInfo)."""
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                              try_gcs=False)
    examples = source.__getitems__(range(len(source)))
  except (RuntimeError, OSError, ValueError) as e:  # array_record raises RuntimeError.
    dataset_dir = os.path.join(data_dir, name)
    raise RuntimeError(
        f"Cannot read split {split!r} of {name!r} from {dataset_dir} through tfds.data_source "
        f'({type(e).__name__}: {e}). It must be a complete TFDS dataset in array_record format; '
        f'if it is damaged or in tfrecord format, delete {dataset_dir} and load again '
        f'(external datasets then need their manual files).') from e
  input_key, label_key = source.dataset_info.supervised_keys
  x_NxS = np.stack([example[input_key] for example in examples])
  y_N = np.asarray([example[label_key] for example in examples], dtype=np.int32)
  return x_NxS, y_N, source.dataset_info


@contextlib.contextmanager
def _prepare_lock(data_dir: str, name: str) -> Iterator[None]:
  with open(os.path.join(data_dir, _LOCK_NAME.format(name=name)), 'w') as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def _remove_incomplete_dirs(dataset_dir: str) -> None:
  """Deletes `incomplete.*` folders left by killed preparations (callers hold the lock)."""
  if os.path.isdir(dataset_dir):
    for entry in os.listdir(dataset_dir):
      if entry.startswith('incomplete.'):
        shutil.rmtree(os.path.join(dataset_dir, entry), ignore_errors=True)
