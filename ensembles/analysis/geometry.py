"""Geometry of trajectories on the sphere of square-root probabilities.

Per sample n, sqrt(P_n) is a unit vector, and the great circle between two models is

    sqrt(gamma_n(t)) = [sin((1-t) theta_n) sqrt(P_n) + sin(t theta_n) sqrt(Q_n)] / sin(theta_n),
    theta_n = arccos <sqrt P_n, sqrt Q_n>

(slerp of sqrt P, never of P). From ignorance P0 = 1/C to truth P* = onehot(y), theta_n is
arccos(1/sqrt C) for every sample. Progress lambda(P) = argmin_t d_B(gamma(t), P); trajectories
are compared at equal progress, by resampling each at a grid of lambda values.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ensembles.analysis import checks
from ensembles.analysis import distances

# Progress search, first stage: d_B(gamma(t), P) on this many equal intervals of [0, 1]; the
# best grid point brackets the minimum (d_B along the geodesic is convex wherever no
# coefficient is clipped, so the bracket holds the global minimum).
PROGRESS_GRID_INTERVALS = 64

# Second stage: bisection on the sign of the analytic derivative inside the bracket (width
# 2/64): 24 halvings leave 1.9e-9, below the ~1e-6 that float32 evaluation of the derivative
# resolves. Measured: progress(geodesic(t)) = t within 1e-6 (tests/analysis/test_geometry.py).
PROGRESS_BISECTION_STEPS = 24

# Points per progress batch: (batch, N) float32 work arrays; fixed so one shape is compiled.
_PROGRESS_BATCH = 128

# Below this angle between two models a slerp is replaced by its limit, linear interpolation
# of sqrt P (sin(t theta)/sin(theta) -> t), avoiding 0/0.
_SLERP_MIN_ANGLE = 1e-6


def ignorance(num_samples: int, num_classes: int) -> np.ndarray:
  """(N, C) uniform predictions P0 = 1/C."""
  return np.full((num_samples, num_classes), 1.0 / num_classes, np.float32)


def truth(labels: Any, num_classes: int) -> np.ndarray:
  """(N, C) one-hot predictions P* of the labels."""
  labels_N = np.asarray(labels)
  checks.check_labels(labels_N, len(labels_N) if labels_N.ndim == 1 else -1, num_classes)
  return np.eye(num_classes, dtype=np.float32)[labels_N]


def _as_times(t: Any) -> np.ndarray:
  t_T = np.atleast_1d(np.asarray(t, np.float64))
  if t_T.ndim != 1 or not np.all((t_T >= 0) & (t_T <= 1)):
    raise ValueError(f't={t!r}: expected a scalar or 1-D array of values in [0, 1].')
  return t_T


def slerp(p: Any, q: Any, t: Any) -> np.ndarray:
  """Interpolates between models on the sphere of sqrt-probabilities, sample by sample.

  Args:
    p: (..., N, C) probabilities at t = 0.
    q: probabilities at t = 1, broadcastable against p.
    t: scalar or array broadcastable against p's leading axes (not N, C), values in [0, 1].

  Returns:
    float32 probabilities of the same broadcast shape.
  """
  sp = np.sqrt(np.asarray(p, np.float64))
  sq = np.sqrt(np.asarray(q, np.float64))
  t = np.asarray(t, np.float64)[..., None, None]
  theta = np.arccos(np.clip(np.sum(sp * sq, axis=-1, keepdims=True), -1.0, 1.0))
  tiny = theta < _SLERP_MIN_ANGLE
  sin_theta = np.where(tiny, 1.0, np.sin(theta))
  w0 = np.where(tiny, 1.0 - t, np.sin((1.0 - t) * theta) / sin_theta)
  w1 = np.where(tiny, t, np.sin(t * theta) / sin_theta)
  s = w0 * sp + w1 * sq
  probs = s * s
  return (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)


def _geodesic_weights(t: Any, num_classes: int):
  """(alpha, beta, alpha', beta') with sqrt(gamma(t)) = alpha sqrt(P0) + beta sqrt(P*)."""
  theta = math.acos(1.0 / math.sqrt(num_classes))
  sin_theta = math.sin(theta)
  alpha = jnp.sin((1.0 - t) * theta) / sin_theta
  beta = jnp.sin(t * theta) / sin_theta
  d_alpha = -theta * jnp.cos((1.0 - t) * theta) / sin_theta
  d_beta = theta * jnp.cos(t * theta) / sin_theta
  return alpha, beta, d_alpha, d_beta


def geodesic(labels: Any, num_classes: int, t: Any) -> np.ndarray:
  """Points on the geodesic from ignorance (t = 0) to truth (t = 1).

  Args:
    labels: (N,) int class of each sample.
    num_classes: C.
    t: scalar or (T,) positions in [0, 1].

  Returns:
    (T, N, C) float32 probabilities gamma(t).
  """
  labels_N = np.asarray(labels)
  t_T = _as_times(t)
  one_hot_NxC = truth(labels_N, num_classes).astype(np.float64)
  alpha, beta, _, _ = _geodesic_weights(t_T, num_classes)
  alpha, beta = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
  sqrt_TxNxC = (alpha[:, None, None] / math.sqrt(num_classes)
                + beta[:, None, None] * one_hot_NxC[None])
  probs = sqrt_TxNxC**2
  return (probs / probs.sum(axis=-1, keepdims=True)).astype(np.float32)


@jax.jit
def _progress_batch(p_BxNxC: jax.Array, labels_N: jax.Array) -> jax.Array:
  """Progress of each point of a batch: grid search, then bisection on the derivative.

  Along the geodesic BC_n(t) = alpha(t) u_n + beta(t) v_n with u_n = sum_c sqrt(P_nc)/sqrt(C)
  and v_n = sqrt(P_n,y_n), so d_B(gamma(t), P) costs O(N) per t once u and v are known.
  """
  distances.TRACE_COUNTS['progress'] += 1
  num_classes = p_BxNxC.shape[-1]
  sqrt_BxNxC = distances.sqrt_probs(p_BxNxC)
  u_BxN = jnp.sum(sqrt_BxNxC, axis=-1) / math.sqrt(num_classes)
  v_BxN = jnp.take_along_axis(sqrt_BxNxC, labels_N[None, :, None], axis=-1)[..., 0]

  def distance(t_B):
    alpha, beta, _, _ = _geodesic_weights(t_B[:, None], num_classes)
    bc_BxN = jnp.clip(alpha * u_BxN + beta * v_BxN, distances.BC_CLIP, 1.0)
    return -jnp.mean(jnp.log(bc_BxN), axis=-1)

  def slope(t_B):
    alpha, beta, d_alpha, d_beta = _geodesic_weights(t_B[:, None], num_classes)
    bc_BxN = alpha * u_BxN + beta * v_BxN
    unclipped = bc_BxN > distances.BC_CLIP  # clipped coefficients are flat in t
    terms = jnp.where(unclipped, (d_alpha * u_BxN + d_beta * v_BxN) / jnp.maximum(
        bc_BxN, distances.BC_CLIP), 0.0)
    return -jnp.mean(terms, axis=-1)

  batch = p_BxNxC.shape[0]
  grid_G = jnp.linspace(0.0, 1.0, PROGRESS_GRID_INTERVALS + 1)
  d_GxB = lax.map(lambda t: distance(jnp.full((batch,), t)), grid_G)
  best_B = jnp.argmin(d_GxB, axis=0)
  lo_B = grid_G[jnp.maximum(best_B - 1, 0)]
  hi_B = grid_G[jnp.minimum(best_B + 1, PROGRESS_GRID_INTERVALS)]

  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    rising = slope(mid) > 0
    return jnp.where(rising, lo, mid), jnp.where(rising, mid, hi)

  lo_B, hi_B = lax.fori_loop(0, PROGRESS_BISECTION_STEPS, halve, (lo_B, hi_B))
  return 0.5 * (lo_B + hi_B)


def progress(p: Any, labels: Any) -> np.ndarray:
  """Progress lambda(P) = argmin_t d_B(gamma(t), P) along the ignorance -> truth geodesic.

  Vectorised over points in JAX: a grid of PROGRESS_GRID_INTERVALS, then bisection on the
  analytic derivative; accurate to ~1e-6 (float32), see the constants' comments.

  Args:
    p: (M, N, C) probabilities of M points (or (N, C) for one point).
    labels: (N,) int labels of the samples.

  Returns:
    (M,) float64 progress values in [0, 1] (a float for a single point).

  Raises:
    ValueError: if p are not probabilities or labels do not match.
  """
  single = np.ndim(p) == 2
  p_MxNxC = p[None] if single else p
  checks.check_probabilities(p_MxNxC, 'p')
  labels_N = np.asarray(labels)
  checks.check_labels(labels_N, p_MxNxC.shape[1], p_MxNxC.shape[2])
  labels_N = jnp.asarray(labels_N, jnp.int32)
  out_M = np.empty(p_MxNxC.shape[0], np.float64)
  for start, count, p_b in distances.padded_batches(p_MxNxC, _PROGRESS_BATCH):
    out_M[start:start + count] = np.asarray(_progress_batch(p_b, labels_N))[:count]
  return float(out_M[0]) if single else out_M


class Resampled(NamedTuple):
  """Trajectories resampled at equal progress.

  Attributes:
    probs: (E, G, N, C) float32 predictions at each grid value (NaN where not reached).
    reached: (E, G) bool, whether the trajectory's progress ever reached the grid value.
    progress: (E, T) progress of every checkpoint.
    grid: (G,) the progress values.
  """
  probs: np.ndarray
  reached: np.ndarray
  progress: np.ndarray
  grid: np.ndarray


def _brackets(progress_ExT: np.ndarray, grid_G: np.ndarray):
  """For each (trajectory, grid value): checkpoint after the first crossing, fraction, reached.

  The first t whose running-max progress reaches g is found; (t-1, t) brackets g with
  progress[t-1] < g <= progress[t]; the fraction (g - lam[t-1]) / (lam[t] - lam[t-1]) is
  where the slerp between them sits. Grid values below the first checkpoint's progress or
  above the trajectory's maximum are not reached.
  """
  running_ExT = np.maximum.accumulate(progress_ExT, axis=1)
  num_t = progress_ExT.shape[1]
  after_ExG = np.stack([np.searchsorted(r, grid_G, side='left') for r in running_ExT])
  reached_ExG = (after_ExG < num_t) & (grid_G[None] >= progress_ExT[:, :1])
  after_ExG = np.clip(after_ExG, 1, num_t - 1) if num_t > 1 else np.zeros_like(after_ExG)
  rows = np.arange(progress_ExT.shape[0])[:, None]
  lo_ExG = progress_ExT[rows, after_ExG - 1] if num_t > 1 else progress_ExT[rows, after_ExG]
  hi_ExG = progress_ExT[rows, after_ExG]
  span_ExG = hi_ExG - lo_ExG
  frac_ExG = np.where(span_ExG > 0, (grid_G[None] - lo_ExG) / np.where(span_ExG > 0, span_ExG, 1),
                      1.0)
  return after_ExG, np.clip(frac_ExG, 0.0, 1.0), reached_ExG


def resample(traj_probs: Any, labels: Any, grid: Any, traj_progress: Any = None) -> Resampled:
  """Resamples trajectories at a grid of progress values.

  For each grid value g the checkpoints (t-1, t) around the trajectory's first crossing of g
  are interpolated by slerp of sqrt P, at the fraction where linear interpolation of their
  progress values gives g.

  Args:
    traj_probs: (E, T, N, C) or (T, N, C) probabilities along E trajectories.
    labels: (N,) int labels.
    grid: (G,) progress values in [0, 1].
    traj_progress: optional precomputed (E, T) progress (or (T,)), to skip recomputing it.

  Returns:
    ``Resampled`` (without the leading E axis when traj_probs was (T, N, C)).
  """
  single = np.ndim(traj_probs) == 3
  traj_ExTxNxC = traj_probs[None] if single else traj_probs
  if np.ndim(traj_ExTxNxC) != 4:
    raise ValueError(f'traj_probs has shape {np.shape(traj_probs)}: expected (E, T, N, C) or '
                     '(T, N, C).')
  e, t, n, c = traj_ExTxNxC.shape
  grid_G = _as_times(grid)
  if traj_progress is None:
    flat = np.asarray(traj_ExTxNxC).reshape(e * t, n, c)
    progress_ExT = progress(flat, labels).reshape(e, t)
  else:
    progress_ExT = np.asarray(traj_progress, np.float64).reshape(e, t)
  after_ExG, frac_ExG, reached_ExG = _brackets(progress_ExT, grid_G)
  probs = np.full((e, len(grid_G), n, c), np.nan, np.float32)
  for g in range(len(grid_G)):
    rows_R = np.flatnonzero(reached_ExG[:, g])
    after_R = after_ExG[rows_R, g]
    probs[rows_R, g] = slerp(traj_ExTxNxC[rows_R, np.maximum(after_R - 1, 0)],
                             traj_ExTxNxC[rows_R, after_R], frac_ExG[rows_R, g])
  result = Resampled(probs, reached_ExG, progress_ExT, grid_G)
  if single:
    result = Resampled(probs[0], reached_ExG[0], progress_ExT[0], grid_G)
  return result


def path_length(traj_probs: Any) -> np.ndarray | float:
  """Riemannian length sum_t 2 sqrt(d_B(P_t, P_{t+1})) of trajectories.

  Args:
    traj_probs: (E, T, N, C) or (T, N, C) probabilities at successive checkpoints.

  Returns:
    (E,) lengths (a float for a single trajectory).
  """
  single = np.ndim(traj_probs) == 3
  traj = traj_probs[None] if single else traj_probs
  if np.ndim(traj) != 4:
    raise ValueError(f'traj_probs has shape {np.shape(traj_probs)}: expected (E, T, N, C) or '
                     '(T, N, C).')
  lengths_E = np.zeros(traj.shape[0], np.float64)
  for t in range(traj.shape[1] - 1):
    step_E = distances.bhattacharyya_paired(traj[:, t], traj[:, t + 1])
    lengths_E += 2.0 * np.sqrt(np.maximum(step_E, 0.0))
  return float(lengths_E[0]) if single else lengths_E


def distance_to_mean(resampled_probs: Any, reached: Any, runs: Any, reference: Any,
                     min_reference: int = 1) -> np.ndarray:
  """Distance of runs to the mean of reference runs, at equal progress.

  At each grid value the mean is the average predicted probabilities (a mixture) of the
  ``reference`` runs that reached it.

  Args:
    resampled_probs: (E, G, N, C) from ``resample``.
    reached: (E, G) bool from ``resample``.
    runs: (E,) bool, the runs whose distance is measured.
    reference: (E,) bool, the runs whose mean they are measured to.
    min_reference: fewest reference runs that make a mean.

  Returns:
    (E, G) float64 d_B(run, reference mean); NaN outside ``runs``, where the run did not reach
    the grid value, or where fewer than ``min_reference`` reference runs did.
  """
  probs_ExGxNxC = resampled_probs
  reached_ExG = np.asarray(reached, bool)
  runs_E, reference_E = np.asarray(runs, bool), np.asarray(reference, bool)
  e, g = reached_ExG.shape
  if np.shape(probs_ExGxNxC)[:2] != (e, g) or runs_E.shape != (e,) or reference_E.shape != (e,):
    raise ValueError(f'resampled_probs {np.shape(probs_ExGxNxC)}, reached {reached_ExG.shape}, '
                     f'runs {runs_E.shape} and reference {reference_E.shape} must share (E, G) '
                     'and (E,).')
  distance_ExG = np.full((e, g), np.nan)
  for k in range(g):
    ref = reference_E & reached_ExG[:, k]
    rows = np.flatnonzero(runs_E & reached_ExG[:, k])
    if ref.sum() < min_reference or not len(rows):
      continue
    mean_NxC = np.asarray(probs_ExGxNxC[ref, k], np.float32).mean(axis=0)
    runs_RxNxC = np.asarray(probs_ExGxNxC[rows, k], np.float32)
    distance_ExG[rows, k] = distances.bhattacharyya_paired(
        runs_RxNxC, np.broadcast_to(mean_NxC, runs_RxNxC.shape))
  return distance_ExG


def tube_width(resampled_probs: Any, reached: Any, groups: Any) -> np.ndarray:
  """Distance of each run to the mean of its configuration's runs, at equal progress.

  Args:
    resampled_probs: (E, G, N, C) from ``resample``.
    reached: (E, G) bool from ``resample``.
    groups: (E,) int configuration of each run (e.g. ``factors.seed_groups(members)``).

  Returns:
    (E, G) float64 d_B(run, group mean) (``distance_to_mean`` within each group); NaN where
    the run did not reach the grid value or fewer than two runs of its group did.
  """
  groups_E = np.asarray(groups)
  if groups_E.shape != np.shape(reached)[:1]:
    raise ValueError(f'groups {groups_E.shape} and reached {np.shape(reached)} must share (E,).')
  width_ExG = np.full(np.shape(reached), np.nan)
  for group in np.unique(groups_E):
    members_E = groups_E == group
    width_ExG[members_E] = distance_to_mean(resampled_probs, reached, members_E, members_E,
                                            min_reference=2)[members_E]
  return width_ExG


def equal_progress_distances(resampled_probs: Any, reached: Any) -> np.ndarray:
  """d_B between every two trajectories at each grid value, (G, E, E), NaN if either is absent.

  Each pair of runs that both reached a grid value is evaluated once, in the paired form of
  ``distances.bhattacharyya_pairs`` (within 1e-6 relative of float64 for d_B >= 1e-7, where
  the Gram kernel's matmul loses digits to BC ~ 1), and mirrored; the diagonal is 0.

  Args:
    resampled_probs: (E, G, N, C) from ``resample``.
    reached: (E, G) bool from ``resample``.

  Returns:
    (G, E, E) float32 distances, symmetric.
  """
  reached_ExG = np.asarray(reached, bool)
  e, g = reached_ExG.shape
  rows_K, cols_K = np.triu_indices(e, k=1)
  out_GxExE = np.full((g, e, e), np.nan, np.float32)
  for k in range(g):
    both_K = reached_ExG[rows_K, k] & reached_ExG[cols_K, k]
    # Absent runs stand in as uniform predictions (their NaN would fail the input checks); no
    # pair of theirs is evaluated. Batches are sized for all pairs: one compilation.
    probs_ExNxC = np.array(resampled_probs[:, k], np.float32)
    probs_ExNxC[~reached_ExG[:, k]] = 1.0 / probs_ExNxC.shape[-1]
    d_K = distances.bhattacharyya_pairs(probs_ExNxC, rows_K[both_K], cols_K[both_K],
                                        max_pairs=len(rows_K))
    out_GxExE[k, rows_K[both_K], cols_K[both_K]] = d_K
    out_GxExE[k, cols_K[both_K], rows_K[both_K]] = d_K
    present_E = np.flatnonzero(reached_ExG[:, k])
    out_GxExE[k, present_E, present_E] = 0.0
  return out_GxExE
