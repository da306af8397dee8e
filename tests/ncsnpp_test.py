"""Tests of the NCSN++ module: shapes, conditioning, init behaviour, the paper configuration."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ctm as ctm_config
from score_sde_knee import model_utils
from score_sde_knee import ncsnpp

TINY = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))


def _inputs(b=2, size=16, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(b, size, size, channels)), jnp.float32)
  sigma = jnp.asarray(np.geomspace(0.05, 20.0, b), jnp.float32)
  return x, sigma


# Tiny programs run in microseconds: skip XLA's slow CPU optimisation passes.
_FAST = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None


def _init(model, x, sigma):
  return jax.jit(model.init, compiler_options=_FAST)(jax.random.key(0), x, sigma)['params']


def _apply(model, train=False):
  fn = lambda params, x, sigma, rng: model.apply({'params': params}, x, sigma, train=train,
                                                 rngs={'dropout': rng})
  return jax.jit(fn, compiler_options=_FAST)


_PLAIN = ncsnpp.NCSNpp(**TINY, init_scale=1.0)


@pytest.fixture(scope='module')
def plain_params():
  return _init(_PLAIN, *_inputs())


@pytest.fixture(scope='module')
def plain_apply():
  return _apply(_PLAIN)


@pytest.mark.parametrize('channels,noise_conditioned', [(1, True), (2, True), (1, False)])
def test_output_shape_and_dtype(channels, noise_conditioned):
  model = ncsnpp.NCSNpp(**TINY, noise_conditioned=noise_conditioned, out_channels=1)
  x, sigma = _inputs(channels=channels)
  sigma = sigma if noise_conditioned else None
  params = jax.eval_shape(model.init, jax.random.key(0), x, sigma)['params']
  y = jax.eval_shape(model.apply, {'params': params}, x, sigma)
  assert y.shape == (2, 16, 16, 1) and y.dtype == jnp.float32
  has_embedding = 'GaussianFourierProjection_0' in params
  assert has_embedding == noise_conditioned


def test_init_scale_zero_gives_near_zero_output_and_one_does_not(plain_params, plain_apply):
  x, sigma = _inputs()
  zero_init = _init(_PLAIN.clone(init_scale=0.0), x, sigma)
  key = jax.random.key(0)
  y_zero = plain_apply(zero_init, x, sigma, key)  # Same graph: init_scale only sets values.
  y_one = plain_apply(plain_params, x, sigma, key)
  assert np.all(np.isfinite(y_zero)) and np.all(np.isfinite(y_one))
  assert float(jnp.max(jnp.abs(y_zero))) < 1e-3
  assert float(jnp.max(jnp.abs(y_one))) > 1e-2


def test_output_depends_on_sigma_only_when_noise_conditioned(plain_params, plain_apply):
  x, sigma = _inputs()
  key = jax.random.key(0)
  a = plain_apply(plain_params, x, sigma, key)
  b = plain_apply(plain_params, x, sigma * 3.0, key)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4
  unet = _PLAIN.clone(noise_conditioned=False)
  params = _init(unet, x, None)
  unet_apply = _apply(unet)
  np.testing.assert_array_equal(unet_apply(params, x, sigma, key),
                                unet_apply(params, x, sigma * 3.0, key))


def test_dropout_is_active_only_in_training(plain_params, plain_apply):
  x, sigma = _inputs()
  # Dropout has no parameters: the same tree serves the model with dropout 0.5.
  dropout_model = _PLAIN.clone(dropout=0.5)
  key = jax.random.key(1)
  eval_out = plain_apply(plain_params, x, sigma, key)
  np.testing.assert_array_equal(_apply(dropout_model)(plain_params, x, sigma, key), eval_out)
  train_out = _apply(dropout_model, train=True)(plain_params, x, sigma, key)
  assert float(jnp.max(jnp.abs(train_out - eval_out))) > 1e-4


def test_attention_blocks_sit_at_the_requested_resolutions():
  x, sigma = _inputs()

  def n_attn(attn_resolutions):
    model = ncsnpp.NCSNpp(**{**TINY, 'attn_resolutions': attn_resolutions})
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, sigma)['params']
    return sum(k.startswith('AttnBlock_') for k in shapes)

  # Middle block always; at 8 px: one per down block + one after the up blocks.
  assert n_attn(()) == 1
  assert n_attn((8,)) == 1 + 1 + 1
  # At 16 px likewise (the first level).
  assert n_attn((16,)) == 1 + 1 + 1
  assert n_attn((8, 16)) == 5


@pytest.mark.parametrize('field,value,match', [
    ('progressive', 'residual', 'progressive'),
    ('progressive_input', 'residual', 'progressive_input'),
    ('resblock_type', 'ddpm', 'resblock_type'),
    ('progressive_combine', 'max', 'progressive_combine'),
])
def test_unsupported_options_raise(field, value, match):
  model = ncsnpp.NCSNpp(**{**TINY, field: value})
  x, sigma = _inputs()
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(model.init, jax.random.key(0), x, sigma)


def test_bad_inputs_raise():
  model = ncsnpp.NCSNpp(**TINY)
  x, sigma = _inputs()
  with pytest.raises(ValueError, match='divisible'):
    jax.eval_shape(model.init, jax.random.key(0), x[:, :15, :15], sigma)
  with pytest.raises(ValueError, match='sigma'):
    jax.eval_shape(model.init, jax.random.key(0), x, None)


# SLOW (about a minute on 2 busy CPU cores): the paper configuration, built and run once.
def test_paper_config_one_forward_pass():
  config = ctm_config.get_config()
  assert config.data.image_size == 256 and config.model.nf == 64
  model = model_utils.create_model(config)
  start = time.perf_counter()
  params = model_utils.init_params(model, jax.random.key(0), config)
  n_params = model_utils.count_params(params)
  x = jnp.full((1, 256, 256, 2), 0.5, jnp.float32)
  sigma = jnp.asarray([1.0], jnp.float32)
  y = jax.jit(model.apply)({'params': params}, x, sigma)
  y.block_until_ready()
  elapsed = time.perf_counter() - start
  print(f'paper NCSN++ (CTM): {n_params:,} parameters, init + compile + forward {elapsed:.1f} s')
  assert y.shape == (1, 256, 256, 1)
  assert np.all(np.isfinite(y))
  # Six levels of 64..256 channels with two BigGAN blocks each: tens of millions.
  assert 10e6 < n_params < 60e6
  # Attention at 16 px: after each of the 2 down blocks, the middle (8 px), once going up.
  assert sum(k.startswith('AttnBlock_') for k in params) == 1 + 2 + 1
