r"""The paper's CIFAR-10 grid (Mao et al., PNAS 2024; see shared/SCIENCE.md): GPU + CIFAR-10.

Architectures: fully connected with BatchNorm, All-CNN, ConvMixer (dim 256, depth 8,
kernel 5, patch 2), ViT (patch 4, dim 512, depth 6, 8 heads), Wide-ResNet 10-4 and 16-4;
SGD, SGD-Nesterov (momentum 0.9) and Adam; batch size 200/500/1000 with learning rates
scaled to it; weight decay on/off; cosine schedule over 200 epochs; augmentation none or
random crop (pad 4) + horizontal flip; 10 seeds. The paper's probe set is the CIFAR-10
train set (every other sample) and the test set: here 25,000 stratified train examples and
the whole test set. (The paper's fully connected net narrows 1024-512-256-128; ours has a
constant width, 1024, over 4 hidden layers.)

CIFAR-10 must be prepared first (offline): place cifar-10-binary.tar.gz in
<data_dir>/downloads/manual/cifar10/ (see the README's Data section).

Run (one GPU or a pod; see the README for SLURM and TPU launchers):
  python -m ensembles.launch.run --config=ensembles/configs/cifar10_paper.py --workdir=/data/cifar10_paper
  python -m ensembles.launch.run --config=ensembles/configs/cifar10_paper.py:tiny --workdir=/tmp/cifar10_tiny
"""

from ensembles.configs import common

_BASE_BATCH = 200  # learning rates below are for this batch size, scaled linearly


def get_config(arg: str | None = None):
  config = common.default_config()
  h = config.hparams
  h.dataset = 'cifar10'
  h.epochs = 200
  h.schedule = 'cosine'
  h.momentum = 0.9
  config.record.train_probe_size = 25000
  config.record.dense_epochs = 5
  config.record.every_epoch_until = 25
  config.record.sparse_every = 10
  archs = (dict(arch='mlp', width=1024, depth=4, norm=True),
           dict(arch='cnn', width=96, depth=2),
           dict(arch='convmixer', width=256, depth=8, kernel_size=5, patch_size=2),
           dict(arch='vit', width=512, depth=6, num_heads=8, patch_size=4),
           dict(arch='resnet', width=4, depth=(10, 16)))
  optimizers = (dict(optimizer=('sgd', 'nesterov'), lr=0.05), dict(optimizer='adam', lr=1e-3))
  config.variants = tuple(
      dict(a, optimizer=o['optimizer'], batch_size=b, learning_rate=o['lr'] * b / _BASE_BATCH)
      for a in archs for o in optimizers for b in (200, 500, 1000))
  config.sweep.weight_decay = (0.0, 5e-4)
  config.sweep.augment = (False, True)
  config.sweep.seed = tuple(range(10))
  if arg == 'tiny':
    h.epochs = 1
    config.record.train_probe_size = 1000
    config.record.test_probe_size = 1000
    config.variants = (dict(arch='cnn', width=8, depth=1, optimizer='sgd', batch_size=200,
                            learning_rate=0.05),)
    config.sweep.weight_decay = (0.0,)
    config.sweep.seed = (0, 1)
  elif arg:
    raise ValueError(f'ensembles/configs/cifar10_paper.py: unknown argument {arg!r}; accepted: tiny.')
  return config
