"""Tests of the DSM and L1 losses against float64 numpy formulas with known (fake) networks."""
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_sde_knee import losses
from score_sde_knee import model_utils
from score_sde_knee import sde as sde_lib

SIGMA_MIN, SIGMA_MAX = 0.01, 8.0
_FAST = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None


def _config(method):
  return importlib.import_module(f'configs.{method}').get_config('test')


def _sigma64(t):
  return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** np.asarray(t, np.float64)


def _batch(b=5, size=6, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.uniform(size=(b, size, size, 1)).astype(np.float32),
          'cond': rng.choice([0.0, 0.5, 1.0], size=(b, size, size, 1)).astype(np.float32)}


class _DenoiserScore(nn.Module):
  """The exact score of N(c, sigma^2 I): -(x - c) / sigma^2, c from the last channel (CTM)
  or the constant 0.25 (CSM), times sigma when the score function divides by sigma
  (config.model.scale_by_sigma). Then sigma * s + z = (c - x0) / sigma, independent of z."""
  noise_conditioned: bool = True
  use_cond: bool = False
  times_sigma: bool = True

  @nn.compact
  def __call__(self, x, sigma, train=False):
    del train
    c = x[..., 1:2] if self.use_cond else 0.25
    score = -(x[..., :1] - c) / sigma[:, None, None, None] ** 2
    return score * sigma[:, None, None, None] if self.times_sigma else score


class _ZeroScore(nn.Module):
  noise_conditioned: bool = True

  @nn.compact
  def __call__(self, x, sigma, train=False):
    del sigma, train
    return jnp.zeros_like(x[..., :1])


class _AffinePredictor(nn.Module):
  noise_conditioned: bool = False

  @nn.compact
  def __call__(self, x, sigma, train=False):
    del sigma, train
    return 2.0 * x - 0.25


@pytest.mark.parametrize('method,scale_by_sigma', [('csm', True), ('ctm', True),
                                                   ('ctm', False)])
def test_dsm_loss_matches_float64_formula(method, scale_by_sigma):
  config = _config(method)
  config.model.scale_by_sigma = scale_by_sigma
  sde = sde_lib.VESDE(SIGMA_MIN, SIGMA_MAX)
  model = _DenoiserScore(use_cond=method == 'ctm', times_sigma=scale_by_sigma)
  loss_fn = losses.get_loss_fn(model, sde, config)
  batch = _batch()
  loss, aux = loss_fn({}, batch, jax.random.key(3), False)
  t = np.asarray(aux['t'], np.float64)
  assert t.shape == (5,) and np.all((t >= config.training.eps) & (t <= 1.0))
  x0 = batch['image'].astype(np.float64)
  c = batch['cond'].astype(np.float64) if method == 'ctm' else 0.25
  per_example = 0.5 * np.sum(((c - x0) / _sigma64(t)[:, None, None, None]) ** 2,
                             axis=(1, 2, 3))
  np.testing.assert_allclose(aux['per_example_loss'], per_example, rtol=1e-4)
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-4)


def test_dsm_loss_with_zero_score_is_half_the_noise_energy():
  # sigma * 0 + z = z: each example's loss is 0.5 * chi^2 with H*W*C = 3600 degrees.
  config = _config('csm')
  sde = sde_lib.VESDE(SIGMA_MIN, SIGMA_MAX)
  loss_fn = losses.get_loss_fn(_ZeroScore(), sde, config)
  batch = _batch(b=64, size=30)
  _, aux = loss_fn({}, batch, jax.random.key(0), False)
  per_example = np.asarray(aux['per_example_loss'], np.float64)
  n = 30 * 30
  # 0.5 * chi^2_n: mean n/2, std sqrt(n/2); the batch mean has std sqrt(n/2 / 64).
  assert abs(per_example.mean() - n / 2) < 5 * np.sqrt(n / 2 / 64)
  assert 0.5 * np.sqrt(n / 2) < per_example.std() < 1.5 * np.sqrt(n / 2)


def test_dsm_per_example_formula():
  rng = np.random.default_rng(1)
  score = rng.normal(size=(3, 4, 5, 1))
  z = rng.normal(size=(3, 4, 5, 1))
  sigma = np.asarray([0.02, 1.0, 7.0])
  expected = 0.5 * np.sum((sigma[:, None, None, None] * score + z) ** 2, axis=(1, 2, 3))
  got = losses.dsm_per_example(jnp.asarray(score, jnp.float32), jnp.asarray(z, jnp.float32),
                               jnp.asarray(sigma, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sample_t_and_noise_statistics():
  x0 = jnp.zeros((4000, 2, 2, 1))
  t, z = losses.sample_t_and_noise(jax.random.key(5), x0, eps=0.2)
  t, z = np.asarray(t, np.float64), np.asarray(z, np.float64)
  assert t.shape == (4000,) and z.shape == (4000, 2, 2, 1)
  assert t.min() >= 0.2 and t.max() <= 1.0
  # U(0.2, 1): mean 0.6, std 0.8 / sqrt 12.
  assert abs(t.mean() - 0.6) < 5 * 0.8 / np.sqrt(12 * 4000)
  assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1.0) < 0.03


def test_l1_loss_matches_float64_formula():
  config = _config('unet')
  loss_fn = losses.get_loss_fn(_AffinePredictor(), sde_lib.VESDE(), config)
  batch = _batch()
  loss, aux = loss_fn({}, batch, jax.random.key(0), True)
  pred = 2.0 * batch['cond'].astype(np.float64) - 0.25
  per_example = np.mean(np.abs(pred - batch['image'].astype(np.float64)), axis=(1, 2, 3))
  np.testing.assert_allclose(aux['per_example_loss'], per_example, rtol=1e-5)
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-5)


def test_missing_batch_key_and_bad_eps_raise():
  config = _config('ctm')
  sde = sde_lib.VESDE(SIGMA_MIN, SIGMA_MAX)
  loss_fn = losses.get_loss_fn(_DenoiserScore(use_cond=True), sde, config)
  with pytest.raises(ValueError, match="'cond'"):
    loss_fn({}, {'image': jnp.zeros((1, 4, 4, 1))}, jax.random.key(0), False)
  config.training.eps = 0.0
  with pytest.raises(ValueError, match='eps'):
    losses.get_loss_fn(_DenoiserScore(), sde, config)


def _real_model(method):
  config = _config(method)
  # Dropout must visibly act: init_scale 1 gives the residual branches non-zero outputs.
  config.model.dropout = 0.5
  config.model.init_scale = 1.0
  model = model_utils.create_model(config)
  sde = sde_lib.VESDE(config.sde.sigma_min, config.sde.sigma_max)
  params = model_utils.init_params(model, jax.random.key(0), config)
  batch = {k: jnp.asarray(v) for k, v in _batch(b=2, size=16).items()}
  return losses.get_loss_fn(model, sde, config), params, batch


def test_real_ctm_loss_gradients_and_dropout():
  loss_fn, params, batch = _real_model('ctm')
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=3,
                    compiler_options=_FAST)
  (loss_train, aux), grads = grad_fn(params, batch, jax.random.key(1), True)
  assert np.isfinite(loss_train) and aux['per_example_loss'].shape == (2,)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert float(optax.global_norm(grads)) > 0
  # Same key and batch: only dropout differs.
  (loss_eval, _), _ = grad_fn(params, batch, jax.random.key(1), False)
  assert abs(float(loss_train) - float(loss_eval)) > 1e-3 * abs(float(loss_eval))


def test_real_unet_loss_uses_dropout_in_training():
  loss_fn, params, batch = _real_model('unet')
  fn = jax.jit(loss_fn, static_argnums=3, compiler_options=_FAST)
  loss_train, aux = fn(params, batch, jax.random.key(1), True)
  loss_eval, _ = fn(params, batch, jax.random.key(1), False)
  assert np.isfinite(loss_train) and aux['per_example_loss'].shape == (2,)
  assert abs(float(loss_train) - float(loss_eval)) > 1e-3 * abs(float(loss_eval))
