"""Training losses: continuous-time denoising score matching (CSM, CTM) and L1 (U-Net).

DSM (score_sde with reduce_mean=False, likelihood_weighting=False, i.e. lambda(t) = sigma^2):
  t ~ U(eps, 1), z ~ N(0, I), x_t = x_0 + sigma(t) z,
  loss_i = 0.5 * sum_pixels (sigma(t_i) s(x_t, t_i) + z)^2, averaged over the batch.
L1: loss_i = mean_pixels |f(y_i) - x_i|, averaged over the batch.
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import ncsnpp
from score_sde_knee import sde as sde_lib

Array = jax.Array
Batch = dict[str, Array]
LossFn = Callable[[Any, Batch, Array, bool], tuple[Array, dict[str, Array]]]


def sample_t_and_noise(rng: Array, x0: Array, eps: float,
                       t_max: float = 1.0) -> tuple[Array, Array]:
  """t ~ U(eps, t_max) of shape (B,) and z ~ N(0, I) shaped like x0 (B, H, W, C)."""
  rng_t, rng_z = jax.random.split(rng)
  t = jax.random.uniform(rng_t, (x0.shape[0],), x0.dtype, minval=eps, maxval=t_max)
  z = jax.random.normal(rng_z, x0.shape, x0.dtype)
  return t, z


def dsm_per_example(score: Array, z: Array, sigma: Array) -> Array:
  """0.5 * sum over pixels of (sigma * score + z)^2: (B, H, W, C), (B, H, W, C), (B,) -> (B,)."""
  r = sigma[:, None, None, None] * score + z
  return 0.5 * jnp.sum(jnp.square(r), axis=(1, 2, 3))


def _check_batch(batch: Batch, keys: tuple[str, ...]) -> None:
  for key in keys:
    if key not in batch:
      raise ValueError(f'loss_fn: batch needs key {key!r} (B, H, W, 1), got keys {list(batch)}')


def get_loss_fn(model: ncsnpp.NCSNpp, sde: sde_lib.VESDE,
                config: ml_collections.ConfigDict) -> LossFn:
  """loss_fn(params, batch, rng, train) -> (mean loss, aux): the method's loss (methods.py).

  batch: {'image': (B, H, W, 1) in [0, 1], 'cond': (B, H, W, 1) in {0, 0.5, 1}}.
  aux: {'per_example_loss': (B,)}, plus {'t': (B,)} for the score methods.
  rng: one key per step; split here for t, noise and dropout (dropout only when train).
  """
  method = methods.get(config.method)
  dtype = config.training.compute_dtype
  if method.loss == 'l1':
    predict_fn = model_utils.get_predict_fn(model, dtype)

    def l1_loss_fn(params, batch: Batch, rng: Array, train: bool):
      _check_batch(batch, ('image', 'cond'))
      pred = predict_fn(params, batch['cond'], train=train, rng=rng if train else None)
      per_example = jnp.mean(jnp.abs(pred - batch['image']), axis=(1, 2, 3))
      return jnp.mean(per_example), {'per_example_loss': per_example}

    return l1_loss_fn

  score_fn = model_utils.get_score_fn(model, sde, method, dtype,
                                      scale_by_sigma=bool(config.model.scale_by_sigma))
  eps = float(config.training.eps)
  if not 0 < eps < sde.T:
    raise ValueError(f'config.training.eps must be in (0, {sde.T}), got {eps}')

  def dsm_loss_fn(params, batch: Batch, rng: Array, train: bool):
    _check_batch(batch, ('image', 'cond') if method.cond_input else ('image',))
    x0 = batch['image']
    rng_noise, rng_dropout = jax.random.split(rng)
    t, z = sample_t_and_noise(rng_noise, x0, eps, sde.T)
    sigma = sde.sigma(t)
    x_t = x0 + sigma[:, None, None, None] * z
    score = score_fn(params, x_t, t, batch.get('cond'), train=train,
                     rng=rng_dropout if train else None)
    per_example = dsm_per_example(score, z, sigma)
    return jnp.mean(per_example), {'per_example_loss': per_example, 't': t}

  return dsm_loss_fn
