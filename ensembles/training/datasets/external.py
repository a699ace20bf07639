"""Prepares stock TFDS image datasets from archives downloaded by hand, without TensorFlow.

TFDS's own builders for these datasets read their downloads with `tf.io.gfile` and encode images
with `tf.image.encode_png`, so `tfds build cifar10` and `download_and_prepare` need TensorFlow.
This module prepares the same datasets without it: a subclass of the stock builder (same name,
version, features, example keys and ids) reads the archives from a manual directory with NumPy
and hands PIL images to the stock `tfds.features.Image`, which PNG-encodes them with PIL. The
result is an array_record dataset at `<data_dir>/<name>/<version>/`, read back by
`tfds.data_source` like one built by `tfds build <name> --file_format=array_record` on a machine
with TensorFlow (which also works: copy that folder into `data_dir`).

Nothing here touches the network: `check_manual_files` refuses to start unless every file is
present, and the builder reads the files itself instead of asking TFDS's download manager.
Files are checked against the sizes and SHA-256 checksums that TFDS registers for them.

Files (as distributed by the URLs TFDS registers; `MANUAL_FILES`):

* cifar10: `cifar-10-binary.tar.gz` (the binary version, not the Python pickles).
* cifar100: `cifar-100-binary.tar.gz`.
* mnist: `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
  `t10k-labels-idx1-ubyte.gz`.
* fashion_mnist: the four files of the same names from Zalando's fashion-mnist.
* svhn_cropped: `train_32x32.mat` and `test_32x32.mat`; TFDS's 1.3 GB `extra` split is not
  prepared (the dataset then has only `train` and `test`).

mnist and fashion_mnist share file names, so each dataset has its own manual directory; the
default is `<data_dir>/downloads/manual/<name>` (`default_manual_dir`).
"""

import gzip
import hashlib
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds

from ensembles.training.datasets import builders

MANUAL_FILES: dict[str, tuple[str, ...]] = {
    'cifar10': ('cifar-10-binary.tar.gz',),
    'cifar100': ('cifar-100-binary.tar.gz',),
    'mnist': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
              't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
    'fashion_mnist': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                      't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
    'svhn_cropped': ('train_32x32.mat', 'test_32x32.mat'),
}

# CIFAR binary records: label byte(s), then a 3x32x32 channel-major image.
_CIFAR_SIDE = 32
_CIFAR_CHANNELS = 3
# IDX magic numbers (big-endian int32) of MNIST-format image and label files.
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
# IDX header lengths in bytes: magic, count (, rows, cols) as int32.
_IDX_IMAGES_HEADER = 16
_IDX_LABELS_HEADER = 8
# SVHN .mat files label the digit 0 as 10.
_SVHN_ZERO_LABEL = 10
# Bytes hashed at a time when checking a file's SHA-256.
_HASH_CHUNK_BYTES = 1 << 20


class NotPreparedError(FileNotFoundError):
  """A dataset is not prepared in `data_dir` and cannot be prepared offline from what is there."""


class _Split(NamedTuple):
  """Decoded arrays of one split of an external dataset."""

  images_NxHxWxC: np.ndarray
  labels: dict[str, np.ndarray]   # feature name -> (N,) integer labels
  id_prefix: str | None           # the stock `id` feature is f'{prefix}{index:0{width}d}'
  id_width: int


class _Source(NamedTuple):
  """Everything a stock builder's generator needs, read from the manual files."""

  splits: dict[str, _Split]
  label_names: dict[str, list[str]]   # ClassLabel feature name -> class names, if shipped


def default_manual_dir(data_dir: str, name: str) -> str:
  """Where `name`'s hand-downloaded files are looked for when no manual_dir is given."""
  return os.path.join(data_dir, 'downloads', 'manual', name)


def check_manual_files(name: str, data_dir: str, manual_dir: str | None) -> dict[str, str]:
  """Returns {file name: path} of `name`'s manual files, or raises one NotPreparedError.

  Args:
    name: an external dataset (a key of MANUAL_FILES).
    data_dir: TFDS data directory in which `name` is not prepared.
    manual_dir: directory holding the files; None for `default_manual_dir(data_dir, name)`.

  Raises:
    NotPreparedError: naming the missing files, their URLs and sizes, and where to put them.
  """
  manual_dir = manual_dir or default_manual_dir(data_dir, name)
  paths = {fname: os.path.join(manual_dir, fname) for fname in MANUAL_FILES[name]}
  missing = [fname for fname, path in paths.items() if not os.path.isfile(path)]
  if not missing:
    return paths
  urls = {info.filename: (url, f'{int(info.size):,} bytes')
          for url, info in _url_infos(name).items()}
  wanted = '\n'.join(f'  {os.path.join(manual_dir, f)}  <- {urls[f][0]} ({urls[f][1]})'
                     for f in missing)
  raise NotPreparedError(
      f"Dataset '{name}' is not prepared in data_dir {data_dir!r} (no "
      f"{os.path.join(data_dir, name)}/<version>/dataset_info.json), and this offline loader "
      f'never downloads. Missing file(s) in manual_dir {manual_dir!r}:\n{wanted}\n'
      f'Download them by hand, place them there (or pass manual_dir=...), and load again: it '
      f'prepares {name} into {data_dir} without TensorFlow. Alternatively copy a folder made '
      f'by `tfds build {name} --file_format=array_record` (needs TensorFlow) into {data_dir}.')


def verify_checksums(name: str, paths: dict[str, str]) -> None:
  """Checks each manual file's size and SHA-256 against those TFDS registers for it.

  Raises:
    ValueError: naming the file, the expected and the actual size or checksum.
  """
  expected = {info.filename: info for info in _url_infos(name).values()}
  for fname, path in paths.items():
    size = os.path.getsize(path)
    sha256 = hashlib.sha256()
    with open(path, 'rb') as f:
      while chunk := f.read(_HASH_CHUNK_BYTES):
        sha256.update(chunk)
    want = expected[fname]
    if size != want.size or sha256.hexdigest() != want.checksum:
      raise ValueError(
          f'{path} is not the file TFDS registers for {name}: expected {int(want.size)} bytes with '
          f'SHA-256 {want.checksum}, got {size} bytes with SHA-256 {sha256.hexdigest()}. '
          f'Download it again (truncated or a different release?).')


def prepare(name: str, data_dir: str, manual_dir: str | None, download_dir: str,
            check_sums: bool = True) -> None:
  """Prepares `name` into `data_dir` as array_record from the files in manual_dir.

  TFDS writes into `<data_dir>/<name>/incomplete.*` and renames it to `<version>/` at the end,
  so an interrupted run leaves no folder that looks prepared.

  Args:
    name: an external dataset (a key of MANUAL_FILES).
    data_dir: TFDS data directory to write into.
    manual_dir: directory holding MANUAL_FILES[name]; None for the default.
    download_dir: scratch directory for TFDS's download manager (nothing is downloaded).
    check_sums: verify sizes and SHA-256 first (tests with synthetic archives turn it off).
  """
  paths = check_manual_files(name, data_dir, manual_dir)
  if check_sums:
    verify_checksums(name, paths)
  builder = _manual_builder_cls(name, paths)(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
      download_dir=download_dir,
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def _url_infos(name: str) -> dict:
  return tfds.builder_cls(name).url_infos or {}


def _manual_builder_cls(name: str, paths: dict[str, str]) -> type:
  """A subclass of the stock builder whose generator reads `paths` with NumPy, not TensorFlow."""
  stock = tfds.builder_cls(name)
  read = _READERS[name]

  class ManualBuilder(builders.OfflinePreparation, stock, skip_registration=True):
    """The stock builder, fed from manual files; prepares with one line of its own."""

    PREPARED_FROM = f'from {", ".join(sorted(paths.values()))}, offline'

    pkg_dir_path = stock._get_pkg_dir_path()  # pylint: disable=protected-access

    def _split_generators(self, dl_manager):
      del dl_manager  # Never used: it would try the network for anything missing.
      source = read(paths)
      for feature, names in source.label_names.items():
        self.info.features[feature].names = names
      return {split: self._generate_examples(arrays) for split, arrays in source.splits.items()}

    def _generate_examples(self, arrays: _Split) -> Iterator[tuple[int, dict]]:
      from PIL import Image  # pylint: disable=g-import-not-at-top

      for i, image_HxWxC in enumerate(arrays.images_NxHxWxC):
        example = {key: int(labels_N[i]) for key, labels_N in arrays.labels.items()}
        # A PIL image is PNG-encoded by tfds.features.Image with PIL (a NumPy array would need
        # tf.image.encode_png). Grayscale becomes mode 'L'; decoding restores (H, W, 1).
        example['image'] = Image.fromarray(
            image_HxWxC[..., 0] if image_HxWxC.shape[-1] == 1 else image_HxWxC)
        if arrays.id_prefix is not None:
          example['id'] = f'{arrays.id_prefix}{i:0{arrays.id_width}d}'
        yield i, example

  ManualBuilder.name = stock.name
  ManualBuilder.__name__ = ManualBuilder.__qualname__ = f'Manual{stock.__name__}'
  return ManualBuilder


# -- readers: manual files -> _Source -----------------------------------------------------------


class _CifarLayout(NamedTuple):
  prefix: str                         # folder inside the archive
  train_files: tuple[str, ...]
  test_files: tuple[str, ...]
  label_keys: tuple[str, ...]         # features of the leading label bytes, in record order
  label_files: tuple[str, ...]        # class-name files, one per label key


_CIFAR10 = _CifarLayout(
    'cifar-10-batches-bin/', tuple(f'data_batch_{i}.bin' for i in range(1, 6)),
    ('test_batch.bin',), ('label',), ('batches.meta.txt',))
_CIFAR100 = _CifarLayout(
    'cifar-100-binary/', ('train.bin',), ('test.bin',), ('coarse_label', 'label'),
    ('coarse_label_names.txt', 'fine_label_names.txt'))
# Width of the stock `id` index (`train_00042` for CIFAR, `train_000042` for SVHN).
_CIFAR_ID_WIDTH = 5
_SVHN_ID_WIDTH = 6


def _cifar_reader(layout: _CifarLayout) -> Callable[[dict[str, str]], _Source]:
  def read(paths: dict[str, str]) -> _Source:
    (archive,) = paths.values()
    wanted = [layout.prefix + f for f in (*layout.train_files, *layout.test_files,
                                          *layout.label_files)]
    members = _read_tar_members(archive, wanted)
    record_bytes = len(layout.label_keys) + _CIFAR_CHANNELS * _CIFAR_SIDE ** 2

    def split(files: Sequence[str], prefix: str) -> _Split:
      data = b''.join(members[layout.prefix + f] for f in files)
      records_NxR = np.frombuffer(data, np.uint8).reshape(-1, record_bytes)
      labels = {key: records_NxR[:, k] for k, key in enumerate(layout.label_keys)}
      images_NxCxHxW = records_NxR[:, len(layout.label_keys):].reshape(
          -1, _CIFAR_CHANNELS, _CIFAR_SIDE, _CIFAR_SIDE)
      return _Split(images_NxCxHxW.transpose(0, 2, 3, 1), labels, prefix, _CIFAR_ID_WIDTH)

    names = {key: [n for n in members[layout.prefix + f].decode().split('\n') if n.strip()]
             for key, f in zip(layout.label_keys, layout.label_files)}
    return _Source({'train': split(layout.train_files, 'train_'),
                    'test': split(layout.test_files, 'test_')}, names)
  return read


def _read_tar_members(archive: str, names: Sequence[str]) -> dict[str, bytes]:
  members = {}
  with tarfile.open(archive, 'r:*') as tar:
    for member in tar:
      if member.name in names and member.isfile():
        members[member.name] = tar.extractfile(member).read()
  if missing := sorted(set(names) - set(members)):
    raise ValueError(f'{archive} lacks {missing}: is it the binary CIFAR release?')
  return members


def _read_idx(path: str, magic: int, header_bytes: int) -> np.ndarray:
  with gzip.open(path, 'rb') as f:
    data = f.read()
  header = np.frombuffer(data[:header_bytes], '>i4')
  if header[0] != magic:
    raise ValueError(f'{path}: IDX magic number {header[0]}, expected {magic}.')
  return np.frombuffer(data[header_bytes:], np.uint8).reshape(header[1], *header[2:])


def _read_mnist(paths: dict[str, str]) -> _Source:
  splits = {}
  for split, stem in (('train', 'train'), ('test', 't10k')):
    images = _read_idx(paths[f'{stem}-images-idx3-ubyte.gz'], _IDX_IMAGES_MAGIC,
                       _IDX_IMAGES_HEADER)[..., None]
    labels = _read_idx(paths[f'{stem}-labels-idx1-ubyte.gz'], _IDX_LABELS_MAGIC,
                       _IDX_LABELS_HEADER)
    if len(images) != len(labels):
      raise ValueError(f'{split}: {len(images)} images but {len(labels)} labels.')
    splits[split] = _Split(images, {'label': labels}, None, 0)
  return _Source(splits, {})


def _read_svhn(paths: dict[str, str]) -> _Source:
  from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top

  splits = {}
  for split in ('train', 'test'):
    mat = scipy_io.loadmat(paths[f'{split}_32x32.mat'])
    images_NxHxWxC = np.ascontiguousarray(np.moveaxis(mat['X'], -1, 0))
    labels_N = mat['y'].reshape(-1).astype(np.int64) % _SVHN_ZERO_LABEL
    splits[split] = _Split(images_NxHxWxC, {'label': labels_N}, f'{split}_', _SVHN_ID_WIDTH)
  return _Source(splits, {})


_READERS: dict[str, Callable[[dict[str, str]], _Source]] = {
    'cifar10': _cifar_reader(_CIFAR10),
    'cifar100': _cifar_reader(_CIFAR100),
    'mnist': _read_mnist,
    'fashion_mnist': _read_mnist,
    'svhn_cropped': _read_svhn,
}
