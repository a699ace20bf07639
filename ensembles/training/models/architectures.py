"""Flax modules for the five network families of the paper, scaled down for small inputs.

Every module is called as ``module(x_BxS, train)`` where ``train`` is a static Python bool: True
normalises with batch statistics (and updates ``batch_stats``), False with the running averages.
No module uses dropout or any other randomness in its forward pass.

Shape letters in tensor names: B batch, S the per-example input shape, P the spatial axes (one for
(L, F) signals, two for (H, W, F) images), F features (channels), N tokens, D embedding dim,
C classes.

Choices shared by all families (deliberate departures from Flax defaults are marked):
  * Kernels use Flax's default initialisers (LeCun normal, zero biases); ``init_scale`` in
    ``network.Network.init`` rescales them afterwards.
  * A 1x1 convolution is written as ``nn.Dense`` over the feature axis: the same arithmetic, but
    under ``jax.vmap`` over members it becomes a batched matmul instead of a grouped convolution
    (slow on GPU, especially its backward pass).
  * Convolutions pad ``kernel // 2`` on each side (PyTorch style): size-preserving at stride 1,
    ``ceil(n / 2)`` outputs at stride 2, so even 8x8 inputs never collapse below 1x1.
  * Convolutions are ``nn.Conv`` (same parameters and initialisation) computed by
    ``conv.Convolution``: a formulation that stays fast under ``jax.vmap`` over members
    (``conv_formulation``, default 'auto': chosen by backend; see ``ensembles.training.models.conv``).
"""

import functools

import flax.linen as nn
import jax

from ensembles.training.models import conv as conv_lib

# BatchNorm running average: running = momentum * running + (1 - momentum) * batch. 0.9 is
# PyTorch's momentum=0.1 (Flax's default is 0.99); the paper's networks were PyTorch.
BATCH_NORM_MOMENTUM = 0.9
# BatchNorm variance epsilon (PyTorch and Flax default).
BATCH_NORM_EPSILON = 1e-5
# LayerNorm epsilon: PyTorch's default (Flax's default is 1e-6).
LAYER_NORM_EPSILON = 1e-5
# Exact erf GELU as torch.nn.GELU (Flax's default is the tanh approximation).
GELU_APPROXIMATE = False

# All-CNN: square kernel of every spatial convolution (All-CNN-C uses 3x3 throughout).
CNN_KERNEL_SIZE = 3
# All-CNN: stride-1 convolutions before the strided one in each block (All-CNN-C: 2).
CNN_CONVS_PER_BLOCK = 2
# All-CNN: channel multiplier from one block to the next (All-CNN-C: 96 -> 192).
CNN_CHANNEL_GROWTH = 2
# Stride of every downsampling convolution (All-CNN blocks, Wide-ResNet groups).
DOWNSAMPLE_STRIDE = 2

# Wide-ResNet: channels of the stem convolution (not multiplied by the widen factor k).
WRN_STEM_CHANNELS = 16
# Wide-ResNet: channels of the three groups, each multiplied by the widen factor k.
WRN_GROUP_CHANNELS = (16, 32, 64)
# Wide-ResNet: stride of the first block of each group (CIFAR WRN: 32x32 -> 32, 16, 8; an 8x8
# input goes 8, 4, 2, which still leaves a 2x2 map for the global average pool).
WRN_GROUP_STRIDES = (1, DOWNSAMPLE_STRIDE, DOWNSAMPLE_STRIDE)
# Wide-ResNet: kernel of the stem and of both convolutions of a basic block.
WRN_KERNEL_SIZE = 3

# ViT: hidden units of each transformer MLP, as a multiple of the embedding dim.
VIT_MLP_RATIO = 4
# ViT: standard deviation of the learned position embedding at initialisation (BERT/ViT).
VIT_POS_EMBEDDING_STDDEV = 0.02


def _gelu(h: jax.Array) -> jax.Array:
  return nn.gelu(h, approximate=GELU_APPROXIMATE)


def _batch_norm(train: bool) -> nn.BatchNorm:
  """A BatchNorm over the last axis: batch statistics if ``train``, running ones otherwise."""
  return nn.BatchNorm(
    use_running_average=not train, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON
  )


def _conv(
  features: int,
  kernel_size: int,
  spatial_ndim: int,
  *,
  stride: int = 1,
  feature_group_count: int = 1,
  use_bias: bool = True,
  formulation: str = conv_lib.AUTO,
) -> nn.Conv:
  """A square convolution over ``spatial_ndim`` axes padded ``kernel // 2`` (PyTorch style).

  ``formulation`` picks how it is computed (``conv.Convolution``), never what.
  """
  pad = (kernel_size // 2, (kernel_size - 1) // 2)
  return nn.Conv(
    features,
    kernel_size=(kernel_size,) * spatial_ndim,
    strides=(stride,) * spatial_ndim,
    padding=(pad,) * spatial_ndim,
    feature_group_count=feature_group_count,
    use_bias=use_bias,
    conv_general_dilated=conv_lib.Convolution(formulation),
  )


def _global_average_pool(h_BxPxF: jax.Array) -> jax.Array:
  """Means over every spatial axis: (B, *P, F) -> (B, F)."""
  return h_BxPxF.mean(axis=tuple(range(1, h_BxPxF.ndim - 1)))


def _patchify(x_BxHxWxF: jax.Array, patch_size: int) -> jax.Array:
  """Cuts non-overlapping patches: (B, H, W, F) -> (B, H/p, W/p, p*p*F), row-major patches."""
  b, h, w, f = x_BxHxWxF.shape
  p = patch_size
  x_BxHpxPxWpxPxF = x_BxHxWxF.reshape(b, h // p, p, w // p, p, f)
  x_BxHpxWpxPxPxF = x_BxHpxPxWpxPxF.transpose(0, 1, 3, 2, 4, 5)
  return x_BxHpxWpxPxPxF.reshape(b, h // p, w // p, p * p * f)


class MLP(nn.Module):
  """Fully connected network on the flattened input: [Dense(width) + BN? + ReLU] x depth + Dense.

  The paper's 3072-1024-512-256-128-10 network with BatchNorm, with a constant hidden width.

  Attributes:
    width: hidden units of every hidden layer.
    depth: number of hidden layers.
    norm: BatchNorm after each hidden Dense (whose bias is then dropped as redundant).
    num_classes: logits per example.
  """

  width: int
  depth: int
  norm: bool
  num_classes: int

  @nn.compact
  def __call__(self, x_BxS: jax.Array, train: bool) -> jax.Array:
    h_BxH = x_BxS.reshape(x_BxS.shape[0], -1)
    for _ in range(self.depth):
      h_BxH = nn.Dense(self.width, use_bias=not self.norm)(h_BxH)
      if self.norm:
        h_BxH = _batch_norm(train)(h_BxH)
      h_BxH = nn.relu(h_BxH)
    return nn.Dense(self.num_classes)(h_BxH)


class AllCNN(nn.Module):
  """All-CNN-C (Springenberg et al. 2015) with ``depth`` blocks, for images or 1-D signals.

  Block b: ``CNN_CONVS_PER_BLOCK`` 3x3 convs then a stride-2 3x3 conv (in place of pooling), all
  with ``width * CNN_CHANNEL_GROWTH**b`` channels. Head: one 3x3 conv and one 1x1 conv at the last
  width, a 1x1 conv to ``num_classes``, global average pool. Every conv but the last is followed
  by [BN +] ReLU. All-CNN-C itself is depth=2, width=96 (with dropout, omitted here).

  Attributes:
    width: channels of the first block.
    depth: number of downsampling blocks.
    norm: BatchNorm after each hidden conv (whose bias is then dropped as redundant).
    num_classes: logits per example.
    conv_formulation: how convolutions are computed (``conv.Convolution``).
  """

  width: int
  depth: int
  norm: bool
  num_classes: int
  conv_formulation: str = conv_lib.AUTO

  @nn.compact
  def __call__(self, x_BxPxF: jax.Array, train: bool) -> jax.Array:
    spatial_ndim = x_BxPxF.ndim - 2

    def norm_relu(h_BxPxF: jax.Array) -> jax.Array:
      if self.norm:
        h_BxPxF = _batch_norm(train)(h_BxPxF)
      return nn.relu(h_BxPxF)

    def conv_norm_relu(h_BxPxF: jax.Array, features: int, stride: int = 1) -> jax.Array:
      conv = _conv(
        features,
        CNN_KERNEL_SIZE,
        spatial_ndim,
        stride=stride,
        use_bias=not self.norm,
        formulation=self.conv_formulation,
      )
      return norm_relu(conv(h_BxPxF))

    h_BxPxF = x_BxPxF
    features = self.width
    for block in range(self.depth):
      features = self.width * CNN_CHANNEL_GROWTH**block
      for _ in range(CNN_CONVS_PER_BLOCK):
        h_BxPxF = conv_norm_relu(h_BxPxF, features)
      h_BxPxF = conv_norm_relu(h_BxPxF, features, stride=DOWNSAMPLE_STRIDE)
    h_BxPxF = conv_norm_relu(h_BxPxF, features)
    h_BxPxF = norm_relu(nn.Dense(features, use_bias=not self.norm)(h_BxPxF))
    logits_BxPxC = nn.Dense(self.num_classes)(h_BxPxF)
    return _global_average_pool(logits_BxPxC)


class _WideBasicBlock(nn.Module):
  """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

  The shortcut is the identity, or a strided 1x1 conv of the pre-activated input when the
  channels or the resolution change (as in the reference WRN implementation).
  """

  features: int
  stride: int
  conv_formulation: str = conv_lib.AUTO

  @nn.compact
  def __call__(self, h_BxHxWxF: jax.Array, train: bool) -> jax.Array:
    a_BxHxWxF = nn.relu(_batch_norm(train)(h_BxHxWxF))
    if self.stride == 1 and h_BxHxWxF.shape[-1] == self.features:
      shortcut_BxHxWxG = h_BxHxWxF
    else:
      strided_BxHxWxF = a_BxHxWxF[:, :: self.stride, :: self.stride, :]
      shortcut_BxHxWxG = nn.Dense(self.features, use_bias=False)(strided_BxHxWxF)
    conv = functools.partial(
      _conv, self.features, WRN_KERNEL_SIZE, 2, use_bias=False, formulation=self.conv_formulation
    )
    r_BxHxWxG = conv(stride=self.stride)(a_BxHxWxF)
    r_BxHxWxG = nn.relu(_batch_norm(train)(r_BxHxWxG))
    r_BxHxWxG = conv()(r_BxHxWxG)
    return shortcut_BxHxWxG + r_BxHxWxG


class WideResNet(nn.Module):
  """Wide-ResNet WRN-(6n+4)-k (Zagoruyko & Komodakis 2016), pre-activation, with BatchNorm.

  Stem 3x3 conv (``WRN_STEM_CHANNELS``), three groups of ``blocks_per_group`` basic blocks with
  ``WRN_GROUP_CHANNELS * k`` channels and strides ``WRN_GROUP_STRIDES``, then BN-ReLU, global
  average pool and a Dense classifier. The paper used WRN-10-4 and WRN-16-4.

  Attributes:
    widen_factor: k.
    blocks_per_group: n = (depth - 4) / 6.
    num_classes: logits per example.
    conv_formulation: how convolutions are computed (``conv.Convolution``).
  """

  widen_factor: int
  blocks_per_group: int
  num_classes: int
  conv_formulation: str = conv_lib.AUTO

  @nn.compact
  def __call__(self, x_BxHxWxF: jax.Array, train: bool) -> jax.Array:
    stem = _conv(
      WRN_STEM_CHANNELS, WRN_KERNEL_SIZE, 2, use_bias=False, formulation=self.conv_formulation
    )
    h_BxHxWxF = stem(x_BxHxWxF)
    for channels, stride in zip(WRN_GROUP_CHANNELS, WRN_GROUP_STRIDES, strict=True):
      for block in range(self.blocks_per_group):
        h_BxHxWxF = _WideBasicBlock(
          features=channels * self.widen_factor,
          stride=stride if block == 0 else 1,
          conv_formulation=self.conv_formulation,
        )(h_BxHxWxF, train)
    h_BxHxWxF = nn.relu(_batch_norm(train)(h_BxHxWxF))
    return nn.Dense(self.num_classes)(_global_average_pool(h_BxHxWxF))


class _EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU."""

  dim: int
  num_heads: int

  @nn.compact
  def __call__(self, h_BxNxD: jax.Array) -> jax.Array:
    y_BxNxD = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON)(h_BxNxD)
    y_BxNxD = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, qkv_features=self.dim)(
      y_BxNxD
    )
    h_BxNxD = h_BxNxD + y_BxNxD
    y_BxNxD = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON)(h_BxNxD)
    y_BxNxM = _gelu(nn.Dense(VIT_MLP_RATIO * self.dim)(y_BxNxD))
    return h_BxNxD + nn.Dense(self.dim)(y_BxNxM)


class ViT(nn.Module):
  """Vision Transformer: patch embedding, learned positions, pre-LN blocks, mean pool, head.

  Patches are embedded by a Dense on the flattened p x p x F patch (the arithmetic of a stride-p
  conv, but a plain matmul under vmap). A final LayerNorm, then the token mean (no class token,
  as big_vision's ``pool_type='gap'``) feeds a Dense head. The paper used patch 4, dim 512,
  depth 6, 8 heads.

  Attributes:
    dim: embedding dim D (divisible by ``num_heads``).
    depth: number of transformer blocks.
    num_heads: attention heads per block.
    patch_size: side p of the square patches (divides H and W).
    num_classes: logits per example.
  """

  dim: int
  depth: int
  num_heads: int
  patch_size: int
  num_classes: int

  @nn.compact
  def __call__(self, x_BxHxWxF: jax.Array, train: bool) -> jax.Array:
    del train  # No BatchNorm, no dropout: train and eval are the same function.
    patches_BxHpxWpxQ = _patchify(x_BxHxWxF, self.patch_size)
    b, hp, wp, q = patches_BxHpxWpxQ.shape
    tokens_BxNxD = nn.Dense(self.dim)(patches_BxHpxWpxQ.reshape(b, hp * wp, q))
    pos_1xNxD = self.param(
      'pos_embedding',
      nn.initializers.normal(stddev=VIT_POS_EMBEDDING_STDDEV),
      (1, hp * wp, self.dim),
    )
    h_BxNxD = tokens_BxNxD + pos_1xNxD
    for _ in range(self.depth):
      h_BxNxD = _EncoderBlock(dim=self.dim, num_heads=self.num_heads)(h_BxNxD)
    h_BxNxD = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON)(h_BxNxD)
    return nn.Dense(self.num_classes)(h_BxNxD.mean(axis=1))


class ConvMixer(nn.Module):
  """ConvMixer (Trockman & Kolter 2022) with BatchNorm throughout.

  Stem: stride-p patch embedding + GELU + BN. Each of ``depth`` blocks: residual(depthwise
  ``kernel_size`` conv + GELU + BN), then pointwise (1x1) conv + GELU + BN. Global average pool,
  Dense head. The paper used dim 256, depth 8, kernel 5, patch 2.

  Attributes:
    dim: channels of every layer.
    depth: number of mixer blocks.
    kernel_size: side of the depthwise kernel.
    patch_size: side p of the square patches (divides H and W).
    num_classes: logits per example.
    conv_formulation: how the depthwise convolutions are computed (``conv.Convolution``).
  """

  dim: int
  depth: int
  kernel_size: int
  patch_size: int
  num_classes: int
  conv_formulation: str = conv_lib.AUTO

  @nn.compact
  def __call__(self, x_BxHxWxF: jax.Array, train: bool) -> jax.Array:
    patches_BxHpxWpxQ = _patchify(x_BxHxWxF, self.patch_size)
    h_BxHxWxD = _batch_norm(train)(_gelu(nn.Dense(self.dim)(patches_BxHpxWpxQ)))
    for _ in range(self.depth):
      depthwise = _conv(
        self.dim,
        self.kernel_size,
        2,
        feature_group_count=self.dim,
        formulation=self.conv_formulation,
      )
      h_BxHxWxD = h_BxHxWxD + _batch_norm(train)(_gelu(depthwise(h_BxHxWxD)))
      h_BxHxWxD = _batch_norm(train)(_gelu(nn.Dense(self.dim)(h_BxHxWxD)))
    return nn.Dense(self.num_classes)(_global_average_pool(h_BxHxWxD))


__all__ = [
  'AllCNN',
  'BATCH_NORM_EPSILON',
  'BATCH_NORM_MOMENTUM',
  'ConvMixer',
  'MLP',
  'ViT',
  'WideResNet',
]
