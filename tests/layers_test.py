"""Tests of score_sde_knee.layers against independent numpy/scipy references."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import signal

from score_sde_knee import layers

FIR = (1, 3, 3, 1)


def _kernel_2d(k1d, gain):
  k = np.outer(k1d, k1d).astype(np.float64)
  return k / k.sum() * gain


def _images(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize('h,w', [(8, 8), (6, 10)])
def test_upsample_matches_zero_stuffed_convolution(h, w):
  x = _images((2, h, w, 3))
  got = np.asarray(layers.upsample_2d(jnp.asarray(x), FIR, factor=2))
  assert got.shape == (2, 2 * h, 2 * w, 3)
  k = _kernel_2d(FIR, gain=4.0)
  for b in range(2):
    for c in range(3):
      stuffed = np.zeros((2 * h, 2 * w))
      stuffed[::2, ::2] = x[b, :, :, c]
      # Full convolution, then the window that upfirdn2d's padding (2, 1) selects.
      ref = signal.convolve2d(stuffed, k, mode='full')[1:2 * h + 1, 1:2 * w + 1]
      np.testing.assert_allclose(got[b, :, :, c], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('h,w', [(8, 8), (6, 12)])
def test_downsample_matches_filtered_decimation(h, w):
  x = _images((2, h, w, 3), seed=1)
  got = np.asarray(layers.downsample_2d(jnp.asarray(x), FIR, factor=2))
  assert got.shape == (2, h // 2, w // 2, 3)
  k = _kernel_2d(FIR, gain=1.0)
  for b in range(2):
    for c in range(3):
      full = signal.convolve2d(x[b, :, :, c].astype(np.float64), k, mode='full')
      ref = full[2::2, 2::2][:h // 2, :w // 2]
      np.testing.assert_allclose(got[b, :, :, c], ref, rtol=1e-5, atol=1e-5)


def test_resampling_keeps_constants_away_from_borders():
  x = jnp.full((1, 8, 8, 1), 3.0)
  up = np.asarray(layers.upsample_2d(x, FIR))
  down = np.asarray(layers.downsample_2d(x, FIR))
  np.testing.assert_allclose(up[0, 2:-2, 2:-2, 0], 3.0, rtol=1e-6)
  np.testing.assert_allclose(down[0, 1:-1, 1:-1, 0], 3.0, rtol=1e-6)


def test_upfirdn2d_rejects_bad_kernel():
  with pytest.raises(ValueError, match='kernel_1d'):
    layers.upfirdn2d(jnp.zeros((1, 4, 4, 1)), np.ones((2, 2)))


def test_fourier_projection_formula():
  module = layers.GaussianFourierProjection(embedding_size=6, scale=16.0)
  v = jnp.asarray([-1.3, 0.0, 2.5])
  params = module.init(jax.random.key(0), v)['params']
  w = np.asarray(params['W'], np.float64)
  got = np.asarray(module.apply({'params': params}, v))
  proj = 2 * np.pi * np.asarray(v, np.float64)[:, None] * w[None, :]
  np.testing.assert_allclose(got, np.concatenate([np.sin(proj), np.cos(proj)], -1),
                             rtol=1e-4, atol=1e-4)


def test_fourier_w_statistics():
  module = layers.GaussianFourierProjection(embedding_size=4096, scale=16.0)
  w = np.asarray(module.init(jax.random.key(2), jnp.zeros((1,)))['params']['W'])
  assert abs(w.mean()) < 4 * 16.0 / np.sqrt(w.size)
  assert 15.0 < w.std() < 17.0


class _Embed(nn.Module):
  @nn.compact
  def __call__(self, v):
    e = layers.GaussianFourierProjection(embedding_size=8, scale=16.0)(v)
    return nn.Dense(1)(e)


def test_fourier_w_is_fixed_under_a_gradient_step():
  model = _Embed()
  v = jnp.log(jnp.asarray([0.05, 1.0, 30.0]))
  params = model.init(jax.random.key(0), v)['params']
  loss = lambda p: jnp.sum(model.apply({'params': p}, v) ** 2)
  grads = jax.grad(loss)(params)
  w_grad = np.asarray(grads['GaussianFourierProjection_0']['W'])
  assert np.all(w_grad == 0.0)
  opt = optax.adam(1e-1)
  updates, _ = opt.update(grads, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new['GaussianFourierProjection_0']['W'],
                                params['GaussianFourierProjection_0']['W'])
  assert not np.allclose(new['Dense_0']['kernel'], params['Dense_0']['kernel'])


def _group_norm_np(x, scale, bias, groups, eps=1e-6):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  g = (g - mean) / np.sqrt(var + eps)
  return g.reshape(b, h, w, c) * scale + bias


def test_attention_matches_numpy_reference():
  c = 16  # min(16 // 4, 32) = 4 groups.
  x = _images((2, 4, 4, c), seed=3)
  block = layers.AttnBlock(skip_rescale=True, init_scale=1.0)
  params = block.init(jax.random.key(0), jnp.asarray(x))['params']
  got = np.asarray(block.apply({'params': params}, jnp.asarray(x)))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  xd = x.astype(np.float64)
  h = _group_norm_np(xd, p['GroupNorm_0']['scale'], p['GroupNorm_0']['bias'], groups=4)
  q, k, v = (h @ p[n]['kernel'] + p[n]['bias'] for n in ('q', 'k', 'v'))
  q, k, v = (a.reshape(2, 16, c) for a in (q, k, v))
  logits = np.einsum('bic,bjc->bij', q, k) / np.sqrt(c)
  att = np.exp(logits - logits.max(-1, keepdims=True))
  att /= att.sum(-1, keepdims=True)
  o = np.einsum('bij,bjc->bic', att, v).reshape(2, 4, 4, c)
  o = o @ p['out']['kernel'] + p['out']['bias']
  np.testing.assert_allclose(got, (xd + o) / np.sqrt(2.0), rtol=1e-4, atol=1e-4)


def test_attention_with_init_scale_zero_is_a_scaled_identity():
  x = jnp.asarray(_images((1, 4, 4, 8), seed=4))
  block = layers.AttnBlock(skip_rescale=True, init_scale=0.0)
  params = block.init(jax.random.key(0), x)['params']
  np.testing.assert_allclose(block.apply({'params': params}, x), x / np.sqrt(2.0), atol=1e-4)


@pytest.mark.parametrize('up,down,out_ch,expected', [
    (False, False, None, (2, 8, 8, 8)),
    (False, False, 16, (2, 8, 8, 16)),
    (True, False, None, (2, 16, 16, 8)),
    (False, True, 16, (2, 4, 4, 16)),
])
def test_resblock_shapes(up, down, out_ch, expected):
  block = layers.ResnetBlockBigGAN(out_ch=out_ch, up=up, down=down)
  x = jnp.asarray(_images((2, 8, 8, 8), seed=5))
  temb = jnp.ones((2, 32))
  variables = block.init(jax.random.key(0), x, temb, False)
  y = block.apply(variables, x, temb, False)
  assert y.shape == expected and y.dtype == jnp.float32
  # The 1x1 shortcut exists exactly when the shape changes.
  has_shortcut = any(k.startswith('Conv_') and variables['params'][k]['kernel'].shape[:2]
                     == (1, 1) for k in variables['params'])
  assert has_shortcut == (out_ch is not None or up or down)


def test_resblock_with_init_scale_zero_is_a_scaled_shortcut():
  block = layers.ResnetBlockBigGAN(init_scale=0.0, skip_rescale=True)
  x = jnp.asarray(_images((1, 8, 8, 8), seed=6))
  params = block.init(jax.random.key(0), x, None, False)['params']
  np.testing.assert_allclose(block.apply({'params': params}, x, None, False),
                             x / np.sqrt(2.0), atol=1e-4)


def test_combine_rejects_unknown_method():
  with pytest.raises(ValueError, match='Combine.method'):
    layers.Combine(method='max').init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)),
                                      jnp.zeros((1, 4, 4, 8)))
