"""Langevin steps checked per Fourier mode against float64 formulas and recursions.

For a Gaussian target N(m, A I) the score -(x - m) / A is linear, so in an orthonormal
Fourier basis each mode of x - m (and of the velocity u) evolves by a 2 x 2 linear map plus
noise, whose mean and covariance follow in closed form (`_underdamped_moments`). Sample
statistics over 512 draws are allowed 5 standard errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_knee import langevin

Z_TOL = 5.0


def test_lowpass_gain_is_a_gaussian_blur():
  # Blurring with G in the frequency domain equals a periodic Gaussian convolution
  # computed directly in float64 (std 1.5 px on a 16 x 12 image).
  rng = np.random.default_rng(0)
  img = rng.normal(size=(1, 16, 12, 1))
  width = 1.5
  blurred = np.asarray(langevin.fourier_filter(jnp.asarray(img, jnp.float32),
                                        langevin.lowpass_gain((16, 12), width)))
  dy = np.minimum(np.arange(16), 16 - np.arange(16))[:, None]
  dx = np.minimum(np.arange(12), 12 - np.arange(12))[None, :]
  # Sampled-kernel sum over periodic images (wide enough sums: width << image).
  ky = sum(np.exp(-(dy + 16 * j) ** 2 / (2 * width**2)) for j in (-1, 0, 1))
  kx = sum(np.exp(-(dx + 12 * j) ** 2 / (2 * width**2)) for j in (-1, 0, 1))
  kernel = ky * kx / (2 * np.pi * width**2)
  want = np.real(np.fft.ifft2(np.fft.fft2(img[0, ..., 0]) * np.fft.fft2(kernel)))
  np.testing.assert_allclose(blurred[0, ..., 0], want, atol=2e-3)


M, OFFSET, K_STEPS, BATCH = 0.5, 0.3, 12, 512  # Target mean, start offset, steps, draws.


def _boost(h, w, boosted):
  gain = np.asarray(langevin.lowpass_gain((h, w), 2.0), np.float64)[..., 0]
  boost = 1.0 + 8.0 * gain if boosted else np.ones_like(gain)
  return boost, (jnp.asarray(boost[..., None], jnp.float32) if boosted else None)


def _run_and_check(step, init, h, w, seed, dc_want, var_want):
  """K_STEPS of carry <- step(carry, z) from x = M + OFFSET (carry = init(x), x first),
  then the DC mean and every mode's variance of x - M against the float64 values."""
  def run(x, key):
    body = lambda j, c: step(c, jax.random.normal(jax.random.fold_in(key, j), x.shape))
    return jax.lax.fori_loop(0, K_STEPS, body, init(x))
  out = jax.jit(run)(jnp.full((BATCH, h, w, 1), M + OFFSET), jax.random.key(seed))
  x = np.asarray(out[0] if isinstance(out, tuple) else out, np.float64)
  modes = np.fft.rfft2(x[..., 0] - M, norm='ortho')  # (B, h, w // 2 + 1)
  assert abs(modes[:, 0, 0].real.mean() - dc_want) < Z_TOL * np.sqrt(var_want[0, 0] / BATCH)
  var = np.mean(np.abs(modes - modes.mean(0)) ** 2, axis=0)
  # Each mode's variance from 512 draws: relative standard error <= sqrt(2 / 512).
  np.testing.assert_allclose(var, var_want, rtol=Z_TOL * np.sqrt(2 / BATCH))


@pytest.mark.parametrize('boosted', [False, True])
def test_preconditioned_langevin_matches_the_per_frequency_formula(boosted):
  # Target N(M, A I). In an orthonormal Fourier basis each mode k of x - M evolves as
  # u <- (1 - e b_k / A) u + sqrt(2 e b_k) z_k, so from x = M + offset (constant) after K
  # steps: E u_0 = offset sqrt(HW) (1 - e b_0 / A)^K and
  # E|u_k|^2 - |E u_k|^2 = A / (1 - e b_k / (2 A)) (1 - (1 - e b_k / A)^(2K)).
  h, w, a, e = 16, 16, 0.04, 0.004
  boost, boost_arg = _boost(h, w, boosted)
  decay = 1.0 - e * boost / a
  _run_and_check(lambda x, z: langevin.langevin_step(x, -(x - M) / a, z, e, boost_arg),
                 lambda x: x, h, w, 5, OFFSET * np.sqrt(h * w) * decay[0, 0] ** K_STEPS,
                 a / (1.0 - e * boost / (2 * a)) * (1.0 - decay ** (2 * K_STEPS)))


def _underdamped_moments(boost, a, e, momentum, k_steps, offset_dc):
  """Float64 per-mode mean of x - m (DC only, from x = m + offset, u = 0) and variance
  of x after k_steps underdamped steps of size e on N(m, a I) (langevin.py's scheme)."""
  def lin(mat, mean, cov):
    return mat @ mean, mat @ cov @ mat.T
  shape = boost.shape
  means = np.zeros(shape + (2,))
  covs = np.zeros(shape + (2, 2))
  means[0, 0, 0] = offset_dc
  h = np.sqrt(2 * e)
  pending = 0.0
  for _ in range(k_steps):
    for idx in np.ndindex(shape):
      b = boost[idx]
      mean, cov = lin(np.array([[1, 0], [-pending * b / a, 1]]), means[idx], covs[idx])
      mean, cov = lin(np.array([[1, 0], [0, momentum]]), mean, cov)
      cov = cov + np.array([[0, 0], [0, (1 - momentum**2) * b]])
      mean, cov = lin(np.array([[1, 0], [-0.5 * h * b / a, 1]]), mean, cov)
      means[idx], covs[idx] = lin(np.array([[1, h], [0, 1]]), mean, cov)
    pending = 0.5 * h
  return means[0, 0, 0], covs[..., 0, 0]


@pytest.mark.parametrize('momentum,boosted', [(0.0, True), (0.9, False), (0.9, True)])
def test_underdamped_steps_match_the_per_mode_recursion(momentum, boosted):
  h, w, a, e = 8, 8, 0.04, 0.0004
  boost, boost_arg = _boost(h, w, boosted)
  dc_want, var_want = _underdamped_moments(boost, a, e, momentum, K_STEPS,
                                           OFFSET * np.sqrt(h * w))
  _run_and_check(lambda c, z: langevin.underdamped_step(*c, -(c[0] - M) / a, z, e, momentum,
                                                        boost_arg),
                 lambda x: (x, jnp.zeros_like(x), 0.0), h, w, 7, dc_want, var_want)
  if momentum:
    # A stiff target (e / a = 0.01): the plain step keeps (1 - e b / a)^12 of the offset,
    # momentum travels: the recursion puts its DC offset far lower.
    plain_dc = OFFSET * np.sqrt(h * w) * (1 - e * boost[0, 0] / a) ** K_STEPS
    assert abs(dc_want) < 0.5 * plain_dc


def test_no_momentum_is_the_plain_step():
  # a = 0 refreshes the velocity completely: x + e P s + sqrt(2 e) P^(1/2) z, whatever the
  # velocity and pending kick were.
  keys = jax.random.split(jax.random.key(3), 4)
  x, u, s, z = (jax.random.normal(k, (2, 8, 8, 1)) for k in keys)
  boost = 1.0 + 3.0 * langevin.lowpass_gain((8, 8), 2.0)
  e = jnp.array([0.01, 0.02]).reshape(2, 1, 1, 1)
  got, _, pending = langevin.underdamped_step(x, u, 0.3, s, z, e, 0.0, boost)
  want = (np.asarray(x, np.float64) + np.asarray(e) * np.fft.irfft2(
      np.fft.rfft2(np.asarray(s, np.float64), axes=(1, 2)) * np.asarray(boost),
      s=(8, 8), axes=(1, 2)) + np.sqrt(2 * np.asarray(e)) * np.fft.irfft2(
          np.fft.rfft2(np.asarray(z, np.float64), axes=(1, 2)) * np.sqrt(np.asarray(boost)),
          s=(8, 8), axes=(1, 2)))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(pending), 0.5 * np.sqrt(2 * np.asarray(e)), rtol=1e-6)


def test_step_size_is_the_batch_mean_ratio():
  s = jnp.stack([jnp.full((4, 4, 1), 1.0), jnp.full((4, 4, 1), 3.0)])
  z = jnp.stack([jnp.full((4, 4, 1), 2.0), jnp.full((4, 4, 1), 2.0)])
  # Norms: s 4 and 12 (mean 8), z 8 and 8: e = 2 (0.5 * 8 / 8)^2 for the batch,
  # 2 (0.5 * 8 / 4)^2 and 2 (0.5 * 8 / 12)^2 per sample.
  np.testing.assert_allclose(langevin.step_size(s, z, 0.5, False), [0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(langevin.step_size(s, z, 0.5, True), [2.0, 2.0 / 9], rtol=1e-6)


def test_normal_like_takes_the_shape_and_dtype_of_x_or_the_shape_given():
  key, x = jax.random.key(3), jnp.zeros((2, 4, 4, 1), jnp.bfloat16)
  got = langevin.normal_like(key, x)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(
      jax.random.normal(key, x.shape, jnp.bfloat16), np.float32))
  assert langevin.normal_like(key, x, (2, 4, 4, 3)).shape == (2, 4, 4, 3)
