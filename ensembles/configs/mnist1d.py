r"""MNIST-1D (generated locally, 40-sample signals): MLPs and 1-D CNNs.

Run:
  python -m ensembles.launch.run --config=ensembles/configs/mnist1d.py --workdir=workdirs/mnist1d
  python -m ensembles.launch.run --config=ensembles/configs/mnist1d.py:tiny --workdir=/tmp/mnist1d_tiny
"""

from ensembles.configs import common


def get_config(arg: str | None = None):
  config = common.default_config()
  h = config.hparams
  h.dataset = 'mnist1d'
  h.epochs = 30
  h.batch_size = 100
  config.variants = (dict(arch='mlp', width=(64, 256), depth=2),
                     dict(arch='cnn', width=(8, 32), depth=2))
  config.sweep.optimizer = ('sgd', 'adam')
  config.sweep.learning_rate = (0.003, 0.03)
  config.sweep.weight_decay = (0.0, 5e-4)
  config.sweep.seed = (0, 1, 2, 3, 4)
  if arg == 'tiny':
    h.epochs = 2
    config.variants = (dict(arch='mlp', width=32, depth=1), dict(arch='cnn', width=4, depth=1))
    config.sweep.optimizer = ('sgd',)
    config.sweep.learning_rate = (0.03,)
    config.sweep.weight_decay = (0.0,)
    config.sweep.seed = (0,)
  elif arg:
    raise ValueError(f'ensembles/configs/mnist1d.py: unknown argument {arg!r}; accepted: tiny.')
  return config
