"""Config helpers: every default of a sweep, as ml_collections ConfigDicts.

Sweep files start from ``default_config()`` and override fields; this module imports only
``ml_collections``, so a config file never pulls in the trainer. The trainer reads a config once
into typed records (``ensembles.training.config.read_config``), with these defaults.
"""

import ml_collections

# Where the compilation cache goes by default (``config.train.compilation_cache_dir``).
DEFAULT_COMPILATION_CACHE_DIR = '~/.cache/ensembles/jax_compilation_cache'


def default_hparams() -> ml_collections.ConfigDict:
  """Every hyperparameter of a member, with its default (``config.hparams``)."""
  return ml_collections.ConfigDict(dict(
      dataset='digits',        # one of ensembles.training.data.DATASETS
      arch='mlp',              # one of ensembles.training.models.ARCHS
      width=64,                # units / channels / embedding dim (see models.ModelConfig)
      depth=2,                 # hidden layers / blocks (Wide-ResNet: total depth)
      norm=True,               # BatchNorm in mlp and cnn
      patch_size=2,            # vit and convmixer patch side
      num_heads=4,             # vit attention heads
      kernel_size=5,           # convmixer depthwise kernel
      optimizer='sgd',         # sgd, nesterov (SGD with Nesterov momentum), adam or adamw
      learning_rate=0.05,      # peak learning rate
      momentum=0.9,            # SGD momentum, or Adam's b1
      nesterov=False,          # with optimizer='sgd': same as optimizer='nesterov'
      batch_size=64,           # examples per step, per member
      weight_decay=0.0,        # L2 on kernels (decoupled for adamw)
      schedule='cosine',       # constant, cosine or warmup_cosine
      warmup_epochs=1.0,       # linear warmup length for 'warmup_cosine'
      epochs=10,               # training length
      augment=False,           # random crop (+ flip where meaningful), per member
      label_smoothing=0.0,     # optax.smooth_labels alpha
      init_scale=1.0,          # multiplies every initial kernel
      seed=0,                  # initialisation and data order
      init='default',          # default, random_labels or subset: where training starts
      init_epochs=5,           # pretraining length for init != 'default', in full-train-set epochs
      init_subset=0.1,         # init='subset': fraction of the train set pretrained on
  ))


def default_record_config() -> ml_collections.ConfigDict:
  """``config.record`` defaults: about 4/epoch early, then 1/epoch, then every few."""
  return ml_collections.ConfigDict(dict(
      dense_epochs=2.0,        # record dense_per_epoch times per epoch until this epoch
      dense_per_epoch=4,       # recordings per epoch in the dense phase
      every_epoch_until=10.0,  # then once per epoch until this epoch
      sparse_every=5.0,        # then every this many epochs (and at the end)
      dtype='float32',         # storage dtype of probabilities: float32 or float16
      train_probe_size=ml_collections.config_dict.placeholder(int),  # None: all of train
      test_probe_size=ml_collections.config_dict.placeholder(int),   # None: all of test
      probe_seed=0,            # seed of the stratified probe subsets
  ))


def default_train_config() -> ml_collections.ConfigDict:
  """``config.train`` defaults: knobs of the engine, not of the members."""
  return ml_collections.ConfigDict(dict(
      eval_batch_size=1024,    # probe examples per member evaluated at once
      member_block=0,          # members trained together per device; 0: by backend, arch, memory
      compute_dtype='float32',  # training passes: float32, or bfloat16 (mixed precision)
      log_every_seconds=10.0,  # progress line period
      checkpoint_every_seconds=60.0,  # resumable state this often (epoch end or recording)
      # JAX's persistent compilation cache ('' or None: none): reruns and resumes skip
      # compiling (a folder set in JAX's own config wins).
      compilation_cache_dir=DEFAULT_COMPILATION_CACHE_DIR,
  ))


def default_data_config() -> ml_collections.ConfigDict:
  """``config.data`` defaults."""
  return ml_collections.ConfigDict(dict(
      data_dir=ml_collections.config_dict.placeholder(str),    # None: $ENSEMBLES_DATA_DIR or
                                                               # ~/.cache/ensembles/...
      manual_dir=ml_collections.config_dict.placeholder(str),  # archives downloaded by hand
  ))


def default_config() -> ml_collections.ConfigDict:
  """A complete sweep config with every default and an empty sweep (one member).

  Sweep files start from it: ``config = default_config(); config.sweep.seed = (0, 1)``.
  """
  return ml_collections.ConfigDict(dict(
      hparams=default_hparams(),
      sweep=ml_collections.ConfigDict(),  # hparam name -> sequence of values
      variants=(),  # sub-sweeps (dicts), each crossed with `sweep`; () = just `sweep`
      record=default_record_config(),
      train=default_train_config(),
      data=default_data_config(),
  ))
