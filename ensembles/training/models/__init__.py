"""Small-image variants of the paper's network families, as pure (init, apply) functions.

Public API:
  ARCHS: the registered architecture names ('mlp', 'cnn', 'resnet', 'vit', 'convmixer').
  ModelConfig: hashable architecture options (validated on construction).
  Network: ``init(key, init_scale)``, ``apply(params, model_state, x_BxS, train)``,
    ``flops_per_example()``, ``with_conv_formulation(name)``.
  CONV_FORMULATIONS: ways to compute convolutions ('lax', 'im2col', 'member_loop'); networks
    use 'auto' (by backend, fast under ``jax.vmap`` over members; see ``models.conv``).
  build_network(config, input_shape, num_classes) -> Network.

Example:
  >>> network = build_network(ModelConfig('mlp', width=16, depth=2), (8, 8, 1), 10)
  >>> params, state = network.init(jax.random.key(0))
  >>> x_BxS = jnp.zeros((32, 8, 8, 1), jnp.float32)
  >>> logits_BxC, state = network.apply(params, state, x_BxS, train=True)
  >>> logits_BxC.shape
  (32, 10)
"""

from ensembles.training.models.conv import FORMULATIONS as CONV_FORMULATIONS
from ensembles.training.models.network import ARCHS, ModelConfig, ModelState, Network, Params, build_network

__all__ = [
  'ARCHS',
  'CONV_FORMULATIONS',
  'ModelConfig',
  'ModelState',
  'Network',
  'Params',
  'build_network',
]
