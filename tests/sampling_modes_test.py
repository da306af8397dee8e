"""The PC sampler's preconditioned and underdamped corrector (langevin.py) on coloured
Gaussian data, mode by mode.

For data N(0.5, C) with C diagonal in the orthonormal Fourier basis, every sampler step is
linear per rfft2 mode, so each mode's mean and variance follow a float64 recursion
(`_pc_mode_moments`); samples are compared with it to within Z_TOL standard errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_knee import langevin
from score_sde_knee import sampling
from sampling_test import SDE, Z_TOL  # the same SDE and tolerance as the white-data tests


def _colored(h, w, s_hi, s_lo, width):
  """Per-mode variances C_k = s_hi^2 + s_lo^2 G_k on the rfft2 grid, float64 (h, w//2+1)."""
  return s_hi**2 + s_lo**2 * np.asarray(langevin.lowpass_gain((h, w), width), np.float64)[..., 0]


def _pc_mode_moments(c_k, n_steps, snr, precond, width, momentum=0.0, sde=SDE, eps=1e-5):
  """Float64 per-mode mean offset and variance of ctm_sample (ancestral, predictor_first)
  for data N(0, C), C diagonal in the orthonormal Fourier basis with variances c_k.

  The batch-wide step is e = 2 snr^2 ||z||^2 / ||s||^2 with ||z||^2 = d and, by Parseval,
  ||s||^2 = sum_k n_k (v_k + delta_k^2) / A_k^2 (n_k: real numbers per rfft2 entry, 1 or 2,
  so the sums run over the d real dimensions); the boost is b = 1 + precond G. Each mode
  carries (x, u), u the corrector's velocity (langevin.py: u starts N(0, b); per Langevin
  step the pending half-kick, the refresh u <- momentum u + noise, a half-kick, the drift
  x <- x + h u; the predictor's score completes the last kick). momentum = 0 gives the
  plain step x <- (1 - e b / A) x + sqrt(2 e b) z.
  """
  h, wr = c_k.shape
  w = 2 * (wr - 1)
  g = np.asarray(langevin.lowpass_gain((h, w), width), np.float64)[..., 0]
  b = 1 + precond * g
  n_k = np.full(c_k.shape, 2.0)
  n_k[:, 0] = 1.0
  n_k[:, -1] = 1.0  # w even: the Nyquist column is real too
  n_k[h // 2 + 1:, 0] = n_k[h // 2 + 1:, -1] = 0.0  # conjugates of rows 1..h/2-1
  n_k[h // 2, 0] = n_k[h // 2, -1] = 1.0
  d = n_k.sum()
  ts = np.linspace(1.0, eps, n_steps)
  sig = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** ts
  sig_next = np.append(sig[1:], 0.0)
  # Per mode: means (dx, du) and covariance entries (xx, xu, uu), each of c_k's shape.
  dx, du = np.zeros(c_k.shape), np.zeros(c_k.shape)
  xx, xu, uu = np.full(c_k.shape, sde.sigma_max**2), np.zeros(c_k.shape), b.copy()

  def lin(m11, m12, m21, m22):  # (x, u) <- M (x, u)
    nonlocal dx, du, xx, xu, uu
    dx, du = m11 * dx + m12 * du, m21 * dx + m22 * du
    xx, xu, uu = (m11**2 * xx + 2 * m11 * m12 * xu + m12**2 * uu,
                  m11 * m21 * xx + (m11 * m22 + m12 * m21) * xu + m12 * m22 * uu,
                  m21**2 * xx + 2 * m21 * m22 * xu + m22**2 * uu)

  for i in range(n_steps):
    big_a = c_k + sig[i] ** 2
    pending = 0.0
    for _ in range(1 if i > 0 and snr > 0 else 0):
      e = 2 * snr**2 * d / np.sum(n_k * (xx + dx**2) / big_a**2)
      step = np.sqrt(2 * e)
      lin(1, 0, -pending * b / big_a, 1)
      lin(1, 0, 0, momentum)
      uu = uu + (1 - momentum**2) * b
      lin(1, 0, -0.5 * step * b / big_a, 1)
      lin(1, step, 0, 1)
      pending = 0.5 * step
    lin(1, 0, -pending * b / big_a, 1)
    var = sig[i] ** 2 - sig_next[i] ** 2
    lin(1 - var / big_a, 0, 0, 1)
    if i < n_steps - 1:
      xx = xx + var * (sig_next[i] / sig[i]) ** 2
  return dx, xx


@pytest.mark.parametrize('precond,momentum', [(0.0, 0.0), (2.0, 0.0), (0.0, 0.8)])
def test_preconditioned_pc_matches_the_per_mode_recursion(precond, momentum):
  # Data N(0.5, C) with low frequencies of variance up to 0.2^2 above a floor of 0.02^2:
  # the exact score is -F^-1 diag(1 / (C_k + sigma^2)) F (x - 0.5). On 25 ancestral levels
  # the sampler's per-mode variance follows the float64 recursion, and both the boost
  # (precond 2: the lowest modes take 3x the step) and momentum bring their variance
  # nearer C_k (recursion: 1.006 C_k boosted and 0.962 C_k with momentum 0.8, against
  # 0.903 C_k plain; N = 500 plain gives 1.002 C_k).
  batch, h, w, width = 512, 16, 16, 2.0
  c_k = _colored(h, w, 0.02, 0.2, width)
  inv = lambda sigma: 1.0 / (jnp.asarray(c_k[..., None], jnp.float32)
                             + sigma.reshape(-1, 1, 1, 1) ** 2)
  score_fn = lambda x, t, cond: -langevin.fourier_filter(x - 0.5, inv(SDE.sigma(t)))
  sample = jax.jit(lambda c, r: sampling.ctm_sample(
      score_fn, SDE, c, r, n_steps=25, snr=0.4, predictor='ancestral', precond=precond,
      precond_width=width, momentum=momentum))
  x = np.asarray(sample(jnp.zeros((batch, h, w, 1)), jax.random.key(6)), np.float64)
  modes = np.fft.rfft2(x[..., 0] - 0.5, norm='ortho')
  delta, v = _pc_mode_moments(c_k, 25, 0.4, precond, width, momentum)
  var = np.mean(np.abs(modes - modes.mean(0)) ** 2, axis=0)
  np.testing.assert_allclose(var, v, rtol=Z_TOL * np.sqrt(2 / batch))
  assert np.all(np.abs(modes.mean(0)) < Z_TOL * np.sqrt(v / batch))
  if precond or momentum:
    _, v_plain = _pc_mode_moments(c_k, 25, 0.4, 0.0, width)
    low = (0, 0), (0, 1), (1, 0)
    assert all(abs(v[k] / c_k[k] - 1) < abs(v_plain[k] / c_k[k] - 1) for k in low)
