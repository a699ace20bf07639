"""PyTorch peers of benchmarks/train.py: the same MLP and All-CNN ensembles, three ways.

Architectures follow ``ensembles.training.models.architectures`` (MLP: [Linear without bias +
BatchNorm + ReLU] x depth + Linear; All-CNN: per block two 3x3 convs and a stride-2 3x3 conv,
then a 3x3 conv, a 1x1 conv and a 1x1 conv to the classes, global average pool; BatchNorm +
ReLU after every conv but the last; PyTorch padding 1). Every member trains on its own batch
with SGD momentum; the loss is the sum over members of each member's mean cross-entropy, so
each member's gradient is its own.

  torch-func-vmap  torch.func.stack_module_state + vmap(grad(functional_call)); BatchNorm with
                   batch statistics only (track_running_stats=False: buffers cannot be updated
                   in place under vmap).
  torch-bmm        members as the batch axis of bmm/baddbmm (convs through F.unfold + bmm),
                   BatchNorm written out with running statistics, torch.optim.SGD (foreach).
  torch-grouped    (cnn) members stacked on channels: conv2d(groups=E), F.batch_norm per channel.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

# Spatial kernel of every All-CNN conv (architectures.CNN_KERNEL_SIZE) and its padding.
CNN_KERNEL = 3
CNN_PADDING = 1
CNN_CONVS_PER_BLOCK = 2
CNN_CHANNEL_GROWTH = 2
DOWNSAMPLE_STRIDE = 2


def _cnn_layout(width: int, depth: int) -> list[tuple[int, int]]:
  """(out channels, stride) of every 3x3 conv of an All-CNN."""
  layers = []
  features = width
  for block in range(depth):
    features = width * CNN_CHANNEL_GROWTH**block
    layers += [(features, 1)] * CNN_CONVS_PER_BLOCK + [(features, DOWNSAMPLE_STRIDE)]
  return layers + [(features, 1)]


def _he(shape, fan_in: int) -> torch.Tensor:
  return torch.randn(shape) * math.sqrt(2.0 / fan_in)


class _Module(nn.Module):
  """One member, for torch.func (BatchNorm without running statistics)."""

  def __init__(self, arch, width, depth, input_shape, num_classes, bn_epsilon):
    super().__init__()
    self.arch = arch
    layers: list[nn.Module] = []
    if arch == 'mlp':
      fan_in = math.prod(input_shape)
      layers.append(nn.Flatten())
      for _ in range(depth):
        layers += [nn.Linear(fan_in, width, bias=False),
                   nn.BatchNorm1d(width, eps=bn_epsilon, track_running_stats=False), nn.ReLU()]
        fan_in = width
      layers.append(nn.Linear(fan_in, num_classes))
    else:
      channels = input_shape[0]
      for features, stride in _cnn_layout(width, depth):
        layers += [nn.Conv2d(channels, features, CNN_KERNEL, stride, CNN_PADDING, bias=False),
                   nn.BatchNorm2d(features, eps=bn_epsilon, track_running_stats=False),
                   nn.ReLU()]
        channels = features
      layers += [nn.Conv2d(channels, channels, 1, bias=False),
                 nn.BatchNorm2d(channels, eps=bn_epsilon, track_running_stats=False), nn.ReLU(),
                 nn.Conv2d(channels, num_classes, 1)]
    self.layers = nn.Sequential(*layers)

  def forward(self, x):
    out = self.layers(x)
    return out if self.arch == 'mlp' else out.mean(dim=(2, 3))


class FuncVmapTrainer:
  def __init__(self, arch, width, depth, members, input_shape, num_classes, learning_rate,
               momentum, bn_momentum, bn_epsilon):
    del bn_momentum  # No running statistics (see the module docstring).
    from torch.func import functional_call, grad, stack_module_state, vmap

    models = [_Module(arch, width, depth, input_shape, num_classes, bn_epsilon)
              for _ in range(members)]
    params, buffers = stack_module_state(models)
    self.params = {k: v.detach() for k, v in params.items()}
    self.buffers = buffers
    self.velocity = {k: torch.zeros_like(v) for k, v in self.params.items()}
    base = copy.deepcopy(models[0]).to('meta')

    def loss(p, b, x, y):
      return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    self.grad = vmap(grad(loss), in_dims=(0, 0, 0, 0))
    self.lr, self.momentum = learning_rate, momentum

  def step(self, x_ExBxS, y_ExB):
    grads = self.grad(self.params, self.buffers, x_ExBxS, y_ExB)
    keys = list(self.params)
    with torch.no_grad():
      velocity = [self.velocity[k] for k in keys]
      torch._foreach_mul_(velocity, self.momentum)
      torch._foreach_add_(velocity, [grads[k] for k in keys])
      torch._foreach_add_([self.params[k] for k in keys], velocity, alpha=-self.lr)

  def finite(self) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in self.params.values())


class _BatchNorm:
  """Per-member BatchNorm over every axis but (member, feature), with running statistics."""

  def __init__(self, members, features, momentum, epsilon):
    self.scale = torch.ones(members, features, requires_grad=True)
    self.bias = torch.zeros(members, features, requires_grad=True)
    self.mean = torch.zeros(members, features)
    self.var = torch.ones(members, features)
    self.momentum, self.epsilon = momentum, epsilon

  def params(self):
    return [self.scale, self.bias]

  def __call__(self, h_ExNxF):  # N: every non-feature axis of one member, flattened.
    mean = h_ExNxF.mean(1, keepdim=True)
    var = h_ExNxF.var(1, unbiased=False, keepdim=True)
    with torch.no_grad():
      self.mean.lerp_(mean[:, 0], self.momentum)
      self.var.lerp_(var[:, 0], self.momentum)
    normed = (h_ExNxF - mean) * torch.rsqrt(var + self.epsilon)
    return normed * self.scale[:, None] + self.bias[:, None]


class _StackedSgd:
  """SGD over ``self.params`` (members stacked in each tensor) with ``self.optimizer``."""

  def _sgd_step(self, loss):
    # The loss is the mean over all members' examples: times E, each member's own mean.
    self.optimizer.zero_grad(set_to_none=True)
    (loss * self.members).backward()
    self.optimizer.step()

  def finite(self) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in self.params)


class BmmTrainer(_StackedSgd):
  def __init__(self, arch, width, depth, members, input_shape, num_classes, learning_rate,
               momentum, bn_momentum, bn_epsilon):
    self.arch, self.members, self.num_classes = arch, members, num_classes
    self.weights, self.norms, self.strides = [], [], []
    bn = lambda f: _BatchNorm(members, f, bn_momentum, bn_epsilon)  # noqa: E731
    if arch == 'mlp':
      fan_in = math.prod(input_shape)
      for _ in range(depth):
        self.weights.append(_he((members, fan_in, width), fan_in).requires_grad_())
        self.norms.append(bn(width))
        fan_in = width
    else:
      channels = input_shape[0]
      for features, stride in _cnn_layout(width, depth):
        fan_in = channels * CNN_KERNEL**2
        self.weights.append(_he((members, fan_in, features), fan_in).requires_grad_())
        self.norms.append(bn(features))
        self.strides.append(stride)
        channels = features
      self.pointwise = _he((members, channels, channels), channels).requires_grad_()
      self.pointwise_norm = bn(channels)
      fan_in = channels
    self.head = _he((members, fan_in, num_classes), fan_in).requires_grad_()
    self.head_bias = torch.zeros(members, 1, num_classes, requires_grad=True)
    params = [*self.weights, self.head, self.head_bias]
    params += [p for norm in self.norms for p in norm.params()]
    if arch != 'mlp':
      params += [self.pointwise, *self.pointwise_norm.params()]
    self.optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=momentum, foreach=True)
    self.params = params

  def _conv(self, h_ExBxCxHxW, w_ExKxO, stride):
    e, b, c, height, width = h_ExBxCxHxW.shape
    cols = F.unfold(h_ExBxCxHxW.reshape(e * b, c, height, width), CNN_KERNEL,
                    padding=CNN_PADDING, stride=stride)  # (E*B, C*9, L)
    positions = cols.shape[-1]
    cols_ExBLxK = cols.reshape(e, b, -1, positions).transpose(2, 3).reshape(e, b * positions, -1)
    out_height = (height + 2 * CNN_PADDING - CNN_KERNEL) // stride + 1
    return torch.bmm(cols_ExBLxK, w_ExKxO), (b, out_height, positions // out_height)

  def _logits(self, x_ExBxS):
    e, b = x_ExBxS.shape[:2]
    if self.arch == 'mlp':
      h = x_ExBxS.reshape(e, b, -1)
      for w, norm in zip(self.weights, self.norms):
        h = F.relu(norm(torch.bmm(h, w)))
      return torch.baddbmm(self.head_bias, h, self.head)
    h = x_ExBxS
    for w, norm, stride in zip(self.weights, self.norms, self.strides):
      out_ExNxO, (b, height, width) = self._conv(h, w, stride)
      out_ExNxO = F.relu(norm(out_ExNxO))
      h = out_ExNxO.reshape(e, b, height, width, -1).permute(0, 1, 4, 2, 3)
    h_ExNxC = out_ExNxO
    h_ExNxC = F.relu(self.pointwise_norm(torch.bmm(h_ExNxC, self.pointwise)))
    logits_ExNxK = torch.baddbmm(self.head_bias, h_ExNxC, self.head)
    return logits_ExNxK.reshape(e, b, height * width, -1).mean(2)

  def step(self, x_ExBxS, y_ExB):
    logits_ExBxK = self._logits(x_ExBxS)
    loss = F.cross_entropy(logits_ExBxK.reshape(-1, self.num_classes), y_ExB.reshape(-1))
    self._sgd_step(loss)


class GroupedTrainer(_StackedSgd):
  """All-CNN ensemble with members stacked on channels (groups=E)."""

  def __init__(self, arch, width, depth, members, input_shape, num_classes, learning_rate,
               momentum, bn_momentum, bn_epsilon):
    if arch != 'cnn':
      raise ValueError(f'torch-grouped is for cnn, not {arch!r}')
    self.members, self.num_classes = members, num_classes
    self.bn_momentum, self.bn_epsilon = bn_momentum, bn_epsilon
    self.layers = []  # (weight, stride, padding, norm or None, bias or None)
    channels = input_shape[0]
    for features, stride in _cnn_layout(width, depth):
      fan_in = channels * CNN_KERNEL**2
      weight = _he((members * features, channels, CNN_KERNEL, CNN_KERNEL), fan_in)
      self.layers.append((weight.requires_grad_(), stride, CNN_PADDING, self._norm(features),
                          None))
      channels = features
    weight = _he((members * channels, channels, 1, 1), channels).requires_grad_()
    self.layers.append((weight, 1, 0, self._norm(channels), None))
    weight = _he((members * num_classes, channels, 1, 1), channels).requires_grad_()
    self.layers.append((weight, 1, 0, None, torch.zeros(members * num_classes,
                                                        requires_grad=True)))
    params = []
    for weight, _, _, norm, bias in self.layers:
      params.append(weight)
      if norm is not None:
        params += [norm[2], norm[3]]
      if bias is not None:
        params.append(bias)
    self.params = params
    self.optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=momentum, foreach=True)

  def _norm(self, features):
    n = self.members * features
    return (torch.zeros(n), torch.ones(n), torch.ones(n, requires_grad=True),
            torch.zeros(n, requires_grad=True))

  def step(self, x_ExBxCxHxW, y_ExB):
    e, b, c, height, width = x_ExBxCxHxW.shape
    h = x_ExBxCxHxW.transpose(0, 1).reshape(b, e * c, height, width)
    for weight, stride, padding, norm, bias in self.layers:
      h = F.conv2d(h, weight, bias, stride=stride, padding=padding, groups=self.members)
      if norm is not None:
        mean, var, scale, shift = norm
        h = F.relu(F.batch_norm(h, mean, var, scale, shift, training=True,
                                momentum=self.bn_momentum, eps=self.bn_epsilon))
    logits_BxExK = h.mean(dim=(2, 3)).reshape(b, e, self.num_classes)
    loss = F.cross_entropy(logits_BxExK.transpose(0, 1).reshape(-1, self.num_classes),
                           y_ExB.reshape(-1))
    self._sgd_step(loss)


_TRAINERS = {'torch-func-vmap': FuncVmapTrainer, 'torch-bmm': BmmTrainer,
             'torch-grouped': GroupedTrainer}


def make_trainer(method: str, arch: str, **kwargs):
  """A peer with ``step(x_ExBxS, y_ExB)`` (inputs NCHW per member) and ``finite()``."""
  if arch not in ('mlp', 'cnn'):
    raise ValueError(f'torch peers implement mlp and cnn, not {arch!r}')
  return _TRAINERS[method](arch, **kwargs)
