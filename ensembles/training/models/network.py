"""Model configuration, the architecture registry, and the pure (init, apply) network wrapper.

A ``Network`` is built once from a hashable ``ModelConfig``; after that a model is nothing but its
``params`` and ``model_state`` pytrees, so members of an ensemble are stacked pytrees and

  params_E, state_E = jax.vmap(network.init)(keys_E, init_scales_E)
  logits_ExBxC, state_E = jax.vmap(network.apply, in_axes=(0, 0, None, None))(
    params_E, state_E, x_BxS, True)

trains every member on the same batch with its own BatchNorm statistics.
"""

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np

from ensembles.training.models import architectures
from ensembles.training.models import conv as conv_lib

Params = Mapping[str, Any]
ModelState = Mapping[str, Any]  # {} or {'batch_stats': ...}

# Wide-ResNet depths are 6n + 4: 3 groups x n blocks x 2 convs, plus 4 (the WRN convention).
_WRN_DEPTH_OFFSET = 4
_WRN_DEPTH_PER_BLOCK = 6
# Smallest blocks per group (WRN-10-k).
_WRN_MIN_BLOCKS_PER_GROUP = 1
# Parameter names ``init_scale`` leaves alone even when 2-D (MultiHeadDotProductAttention's
# per-head biases): biases and norm scales.
_UNSCALED_PARAM_NAMES = frozenset({'bias', 'scale'})
# Seed of the throwaway key used to trace shapes for ``flops_per_example`` (values never used).
_SHAPE_TRACE_SEED = 0

# Per-example input ranks an architecture may accept (see ``_ArchSpec.input_ranks``).
_IMAGE_RANK = 3  # (H, W, F)
_SIGNAL_RANK = 2  # (L, F)
_RANK_NAMES = {_IMAGE_RANK: '(H, W, F) images', _SIGNAL_RANK: '(L, F) signals'}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything that fixes a network's program shape. Hashable; validated on construction.

  Meaning of ``width`` and ``depth`` per ``arch``:
    * mlp: width = hidden units per layer; depth = hidden layers (>= 1).
    * cnn: width = channels of the first block (block b has width * 2**b); depth = All-CNN
      downsampling blocks (>= 1), each two 3x3 convs then a stride-2 3x3 conv.
    * resnet: width = widen factor k (channels 16k, 32k, 64k); depth = total WRN depth 6n + 4
      (10, 16, 22, ...).
    * vit: width = embedding dim (divisible by ``num_heads``); depth = transformer blocks (>= 1).
    * convmixer: width = channels; depth = mixer blocks (>= 1).
  Options an architecture does not use are ignored (but still validated and hashed).

  Attributes:
    arch: one of ``ARCHS``.
    width: see above (>= 1).
    depth: see above.
    norm: BatchNorm in mlp / cnn. Ignored elsewhere: resnet and convmixer always use
      BatchNorm, vit always LayerNorm.
    patch_size: vit / convmixer patch side; must divide the image height and width. The
      default 2 is the paper's ConvMixer patch and divides 8, 28 and 32.
    num_heads: vit attention heads; must divide ``width``.
    kernel_size: convmixer depthwise kernel side (the paper's 5).
  """

  arch: str
  width: int
  depth: int
  norm: bool = True
  patch_size: int = 2
  num_heads: int = 4
  kernel_size: int = 5

  def __post_init__(self):
    if self.arch not in ARCHS:
      raise ValueError(
        f'ModelConfig.arch={self.arch!r} is not a known architecture; '
        f"valid: {', '.join(ARCHS)}"
      )
    if not isinstance(self.norm, (bool, np.bool_)):
      raise ValueError(f'ModelConfig.norm={self.norm!r} must be a bool')
    object.__setattr__(self, 'norm', bool(self.norm))
    for name in ('width', 'depth', 'patch_size', 'num_heads', 'kernel_size'):
      value = _positive_int(f'ModelConfig.{name}', getattr(self, name))
      object.__setattr__(self, name, value)
    if self.arch == 'resnet':
      blocks, remainder = divmod(self.depth - _WRN_DEPTH_OFFSET, _WRN_DEPTH_PER_BLOCK)
      if remainder or blocks < _WRN_MIN_BLOCKS_PER_GROUP:
        raise ValueError(
          f'ModelConfig.depth={self.depth} is not a Wide-ResNet depth; accepted: '
          f'{_WRN_DEPTH_PER_BLOCK}n + {_WRN_DEPTH_OFFSET} with n >= '
          f'{_WRN_MIN_BLOCKS_PER_GROUP} (10, 16, 22, 28, ...)'
        )
    if self.arch == 'vit' and self.width % self.num_heads:
      raise ValueError(
        f'ModelConfig.num_heads={self.num_heads} does not divide the vit embedding dim '
        f'ModelConfig.width={self.width}; accepted: a divisor of width'
      )


@dataclasses.dataclass(frozen=True)
class Network:
  """A Flax module with its input shape: pure ``init`` and ``apply`` functions of pytrees.

  Hashable, so it can be closed over in (or be a static argument of) ``jax.jit``.

  Attributes:
    module: the Flax module; called as ``module(x_BxS, train)``.
    input_shape: per-example input shape, e.g. (8, 8, 1) or (40, 1).
    num_classes: logits per example.
  """

  module: nn.Module
  input_shape: tuple[int, ...]
  num_classes: int

  def init(
    self, key: jax.Array, init_scale: float | jax.Array = 1.0
  ) -> tuple[Params, ModelState]:
    """Draws fresh parameters; traceable, so it vmaps over keys and scales.

    Args:
      key: PRNG key of this member.
      init_scale: multiplies every weight array with ndim >= 2: dense, conv and attention
        kernels and the ViT position embedding; not biases (attention biases are 2-D) nor
        norm scales. May be a traced scalar, e.g. one per member under ``jax.vmap``.

    Returns:
      ``(params, model_state)``; ``model_state`` is ``{'batch_stats': ...}`` (running mean 0,
      variance 1) for networks with BatchNorm, else ``{}``.
    """
    x_1xS = jnp.zeros((1, *self.input_shape), jnp.float32)
    variables = dict(self.module.init(key, x_1xS, train=False))
    params = variables.pop('params')
    params = jax.tree_util.tree_map_with_path(
      lambda path, w: _scale_kernel(path, w, init_scale), params
    )
    return params, variables

  def apply(
    self, params: Params, model_state: ModelState, x_BxS: jax.Array, train: bool
  ) -> tuple[jax.Array, ModelState]:
    """Runs the forward pass; deterministic (no dropout, no RNG).

    Args:
      params: from ``init`` (or training).
      model_state: from ``init`` or a previous train-mode ``apply``.
      x_BxS: float32, already normalised inputs of shape (B, *input_shape).
      train: static Python bool. True normalises with batch statistics and returns the
        updated running statistics; False uses the running statistics (so each example's
        logits are independent of the rest of the batch) and returns ``model_state``.

    Returns:
      ``(logits_BxC, new_model_state)``.

    Raises:
      ValueError: if ``x_BxS`` does not have shape (B, *input_shape).
      TypeError: if ``train`` is not a Python bool (e.g. a traced value).
    """
    if not isinstance(train, (bool, np.bool_)):
      raise TypeError(
        f'Network.apply: train={train!r} must be a static Python bool, not a traced value'
      )
    if tuple(x_BxS.shape[1:]) != self.input_shape or x_BxS.ndim != len(self.input_shape) + 1:
      raise ValueError(
        f'Network.apply: x_BxS has shape {tuple(x_BxS.shape)}; expected '
        f'(batch, *{self.input_shape}) for this network'
      )
    variables = {'params': params, **model_state}
    if train:
      logits_BxC, new_state = self.module.apply(
        variables, x_BxS, train=True, mutable=list(model_state)
      )
      return logits_BxC, dict(new_state)
    return self.module.apply(variables, x_BxS, train=False), model_state

  def with_conv_formulation(self, formulation: str) -> 'Network':
    """The same network (same parameters, same arithmetic) computing its convolutions another way.

    Args:
      formulation: 'auto' (by backend, the default of ``build_network``) or one of
        ``conv.FORMULATIONS`` ('lax', 'im2col', 'member_loop'); see ``ensembles.training.models.conv``.

    Returns:
      A new ``Network``; networks without convolutions (mlp, vit) come back unchanged.

    Raises:
      ValueError: for an unknown formulation.
    """
    conv_lib.Convolution(formulation)  # Validates the name.
    if 'conv_formulation' not in {f.name for f in dataclasses.fields(self.module)}:
      return self
    return dataclasses.replace(self, module=self.module.clone(conv_formulation=formulation))

  def flops_per_example(self) -> int:
    """Forward-pass FLOPs of one example: 2 x multiply-adds of every matmul and convolution.

    Counted exactly from the eval-mode jaxpr traced with every convolution as one
    ``conv_general_dilated`` (formulation 'lax', whatever this network uses: the arithmetic is
    the same), counting ``dot_general`` and ``conv_general_dilated`` only; elementwise work
    (activations, norms, softmax, biases, residual adds) is ignored, as is usual for reported
    FLOP counts. A training step costs about 3x this (forward plus
    backward). Cached per network.
    """
    return _forward_flops(self)


def build_network(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Network:
  """Builds the network of ``config`` for inputs of ``input_shape`` and checks they fit.

  Args:
    config: architecture and its options (already validated by ``ModelConfig``).
    input_shape: per-example shape: (H, W, F) images for every family, (L, F) signals for
      mlp and cnn (the mlp accepts any shape, flattened).
    num_classes: logits per example (>= 2).

  Returns:
    The ``Network``. Nothing is compiled.

  Raises:
    ValueError: naming the option that does not fit (input rank for the family, patch size
      that does not divide the image, non-positive sizes) and what is accepted.
  """
  if not isinstance(config, ModelConfig):
    raise ValueError(f'build_network: config={config!r} must be a ModelConfig')
  input_shape = tuple(
    _positive_int(f'input_shape[{axis}]', side) for axis, side in enumerate(input_shape)
  )
  num_classes = _positive_int('num_classes', num_classes)
  if num_classes < 2:
    raise ValueError(f'build_network: num_classes={num_classes}; accepted: >= 2')
  spec = _REGISTRY[config.arch]
  if not input_shape or not spec.accepts_rank(len(input_shape)):
    one_d = [arch for arch, other in _REGISTRY.items() if other.accepts_rank(_SIGNAL_RANK)]
    raise ValueError(
      f'build_network: input_shape={input_shape} does not fit arch={config.arch!r}; '
      f"accepted: {spec.describe_inputs()} (1-D (L, F) inputs work with: {', '.join(one_d)})"
    )
  module = spec.build(config, input_shape, num_classes)
  return Network(module=module, input_shape=input_shape, num_classes=num_classes)


def _positive_int(name: str, value: Any) -> int:
  """``value`` as an int if it is an integer >= 1, else a ValueError naming ``name``."""
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f'{name}={value!r} must be a positive integer, not a bool')
  try:
    integer = operator.index(value)
  except TypeError:
    raise ValueError(f'{name}={value!r} must be a positive integer') from None
  if integer < 1:
    raise ValueError(f'{name}={integer}; accepted: an integer >= 1')
  return integer


def _check_patch_size(config: ModelConfig, image_shape: tuple[int, ...]) -> None:
  height, width = image_shape[:2]
  if height % config.patch_size or width % config.patch_size:
    divisors = [p for p in range(1, min(height, width) + 1) if not height % p and not width % p]
    raise ValueError(
      f'ModelConfig.patch_size={config.patch_size} does not divide the {config.arch} input '
      f'{height}x{width}; accepted: {divisors}'
    )


def _build_mlp(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
  del input_shape
  return architectures.MLP(
    width=config.width, depth=config.depth, norm=config.norm, num_classes=num_classes
  )


def _build_cnn(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
  del input_shape
  return architectures.AllCNN(
    width=config.width, depth=config.depth, norm=config.norm, num_classes=num_classes
  )


def _build_resnet(
  config: ModelConfig, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
  del input_shape
  return architectures.WideResNet(
    widen_factor=config.width,
    blocks_per_group=(config.depth - _WRN_DEPTH_OFFSET) // _WRN_DEPTH_PER_BLOCK,
    num_classes=num_classes,
  )


def _build_vit(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
  _check_patch_size(config, input_shape)
  return architectures.ViT(
    dim=config.width,
    depth=config.depth,
    num_heads=config.num_heads,
    patch_size=config.patch_size,
    num_classes=num_classes,
  )


def _build_convmixer(
  config: ModelConfig, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
  _check_patch_size(config, input_shape)
  return architectures.ConvMixer(
    dim=config.width,
    depth=config.depth,
    kernel_size=config.kernel_size,
    patch_size=config.patch_size,
    num_classes=num_classes,
  )


_Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]


class _ArchSpec(NamedTuple):
  """A registered architecture: how to build it, and which input ranks it runs on."""

  build: _Builder
  input_ranks: tuple[int, ...] | None  # None: any rank (the input is flattened).

  def accepts_rank(self, rank: int) -> bool:
    return self.input_ranks is None or rank in self.input_ranks

  def describe_inputs(self) -> str:
    if self.input_ranks is None:
      return 'any shape (flattened)'
    return ' or '.join(_RANK_NAMES[rank] for rank in self.input_ranks)


_REGISTRY: dict[str, _ArchSpec] = {
  'mlp': _ArchSpec(_build_mlp, input_ranks=None),
  'cnn': _ArchSpec(_build_cnn, input_ranks=(_SIGNAL_RANK, _IMAGE_RANK)),
  'resnet': _ArchSpec(_build_resnet, input_ranks=(_IMAGE_RANK,)),
  'vit': _ArchSpec(_build_vit, input_ranks=(_IMAGE_RANK,)),
  'convmixer': _ArchSpec(_build_convmixer, input_ranks=(_IMAGE_RANK,)),
}

# Architecture names accepted by ``ModelConfig.arch``, in the registry's order.
ARCHS: tuple[str, ...] = tuple(_REGISTRY)


def _scale_kernel(
  path: tuple[Any, ...], w: jax.Array, init_scale: float | jax.Array
) -> jax.Array:
  """``w * init_scale`` for weight arrays (ndim >= 2, not named like a bias or norm scale)."""
  if w.ndim < 2 or getattr(path[-1], 'key', None) in _UNSCALED_PARAM_NAMES:
    return w
  return w * jnp.asarray(init_scale, w.dtype)


def _jaxpr_flops(jaxpr: jex_core.Jaxpr) -> int:
  """2 x multiply-adds of its dot_general / conv_general_dilated equations and sub-jaxprs'."""
  flops = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      lhs_shape = eqn.invars[0].aval.shape
      (lhs_contracting, _), _ = eqn.params['dimension_numbers']
      contracted = math.prod(lhs_shape[axis] for axis in lhs_contracting)
      flops += 2 * math.prod(eqn.outvars[0].aval.shape) * contracted
    elif name == 'conv_general_dilated':
      rhs_shape = eqn.invars[1].aval.shape
      out_features_axis = eqn.params['dimension_numbers'].rhs_spec[0]
      # Each output element sums in_features / groups x kernel-window products.
      macs_per_output = math.prod(rhs_shape) // rhs_shape[out_features_axis]
      flops += 2 * math.prod(eqn.outvars[0].aval.shape) * macs_per_output
    else:
      repeats = eqn.params['length'] if name == 'scan' else 1
      for sub_jaxpr in jex_core.jaxprs_in_params(eqn.params):
        flops += repeats * _jaxpr_flops(sub_jaxpr)
  return flops


@functools.lru_cache(maxsize=None)
def _forward_flops(network: Network) -> int:
  network = network.with_conv_formulation('lax')
  params, model_state = jax.eval_shape(network.init, jax.random.key(_SHAPE_TRACE_SEED))
  x_1xS = jax.ShapeDtypeStruct((1, *network.input_shape), jnp.float32)
  closed = jax.make_jaxpr(functools.partial(network.apply, train=False))(
    params, model_state, x_1xS
  )
  return _jaxpr_flops(closed.jaxpr)
