"""The PC sampler's preconditioned and underdamped corrector (sampling_variants.py,
langevin.py) on coloured Gaussian data.

For data N(0.5, C) with C diagonal in the orthonormal Fourier basis, the exact score is
-F^-1 diag(1 / (C_k + sigma^2)) F (x - 0.5). Two checks:
  * path by path: the sampler against an independent float64 numpy implementation of the
    documented steps with the sampler's own noise (`_reference_pc`), which tells a
    sampler that ignores precond or momentum apart by far more than float32 round-off;
  * in law: every step is linear per rfft2 mode, so each mode's mean and variance follow
    a float64 recursion (`_pc_mode_moments`), and the options must bring the lowest
    modes' variance nearer the data's.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_knee import langevin
from score_sde_knee import sampling
from score_sde_knee import sde as sde_lib
from score_sde_knee.sampler_setting import SamplerSettings
from helpers import SDE, Z_TOL  # the same SDE and tolerance as the white-data tests


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
  sample = jax.jit(lambda c, r: sampling.ctm_sample(score_fn, SDE, c, r, SamplerSettings(
      n_steps=25, snr=0.4, predictor='ancestral', precond=precond, precond_width=width,
      momentum=momentum)))
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


def _gain(h, w, width):
  """exp(-2 pi^2 width^2 |f|^2) on the rfft2 grid, f in cycles per pixel, float64 (h, w//2+1)."""
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  return np.exp(-2 * np.pi**2 * width**2 * (fy**2 + fx**2))


def _reference_pc(x0, c_k, sde, rng, n_steps, snr, n_corrector, precond, width, momentum):
  """pc_sample (predictor_first, ancestral predictor, batch-wide step) on the score of
  N(0.5, C), in float64 numpy with the sampler's noise: step i's keys fold_in(rng, i),
  split (predictor, corrector), corrector step j fold_in(corrector key, j), the initial
  velocity fold_in(rng, N) (sampling_variants.VELOCITY_STREAM = 0). P = F^-1 diag(1 +
  precond G) F; an overdamped step is x + e P s + sqrt(2 e) P^(1/2) z, an underdamped one
  (langevin.py) u += pending P s; u = a u + sqrt(1 - a^2) P^(1/2) z; u += (h / 2) P s;
  x += h u, h = sqrt(2 e), and the predictor's score completes the last half-kick."""
  h, w = x0.shape[1:3]
  boost = 1 + precond * _gain(h, w, width)
  filt = lambda v, mult: np.fft.irfft2(np.fft.rfft2(v, axes=(1, 2)) * mult[None, :, :, None],
                                       s=(h, w), axes=(1, 2))
  normal = lambda key: np.asarray(jax.random.normal(key, x0.shape), np.float64)
  norm = lambda a: np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1))
  ts = np.linspace(1.0, 1e-5, n_steps)
  sig = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** ts
  sig_next = np.append(sig[1:], 0.0)
  x = np.asarray(x0, np.float64)
  u = filt(normal(jax.random.fold_in(rng, n_steps)), np.sqrt(boost))
  for i in range(n_steps):
    score = lambda x: -filt(x - 0.5, 1 / (c_k + sig[i] ** 2))
    key_p, key_c = jax.random.split(jax.random.fold_in(rng, i))
    pending = 0.0
    for j in range(n_corrector if i > 0 else 0):
      z = normal(jax.random.fold_in(key_c, j))
      g = score(x)
      e = 2 * (snr * norm(z).mean() / norm(g).mean()) ** 2
      pg, pz = filt(g, boost), filt(z, np.sqrt(boost))
      if momentum == 0:
        x = x + e * pg + np.sqrt(2 * e) * pz
        continue
      u = momentum * (u + pending * pg) + np.sqrt(1 - momentum**2) * pz
      u = u + 0.5 * np.sqrt(2 * e) * pg
      x, pending = x + np.sqrt(2 * e) * u, 0.5 * np.sqrt(2 * e)
    g = score(x)
    u = u + pending * filt(g, boost)
    var = sig[i] ** 2 - sig_next[i] ** 2
    x_mean = x + var * g
    x = x_mean + np.sqrt(var) * sig_next[i] / sig[i] * normal(key_p)
  return x_mean


@pytest.mark.parametrize('precond,momentum', [(2.0, 0.0), (0.0, 0.8), (2.5, 0.8)])
def test_preconditioned_and_momentum_pc_match_float64_reference(precond, momentum):
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=2.0, num_scales=8)
  h, w, width, n, n_corrector = 8, 8, 1.5, 8, 2
  c_k = _colored(h, w, 0.05, 0.3, width)
  inv = lambda sigma: 1.0 / (jnp.asarray(c_k[..., None], jnp.float32)
                             + sigma.reshape(-1, 1, 1, 1) ** 2)
  score_fn = lambda x, t, cond: -langevin.fourier_filter(x - 0.5, inv(sde.sigma(t)))
  rng = jax.random.key(11)
  x0 = 2.0 * np.asarray(jax.random.normal(jax.random.key(12), (3, h, w, 1)))
  settings = SamplerSettings(n_steps=n, snr=0.4, n_steps_each=n_corrector,
                             predictor='ancestral', precond=precond, precond_width=width,
                             momentum=momentum)
  got = np.asarray(sampling.pc_sample(score_fn, sde, jnp.asarray(x0, jnp.float32), None, rng,
                                      settings))
  want = _reference_pc(x0, c_k, sde, rng, n, 0.4, n_corrector, precond, width, momentum)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Without either option the path moves by far more than the tolerance: a sampler that
  # ignored one of them would fail above.
  for p, mom in ((0.0, momentum), (precond, 0.0)):
    if (p, mom) != (precond, momentum):
      other = _reference_pc(x0, c_k, sde, rng, n, 0.4, n_corrector, p, width, mom)
      assert np.abs(other - want).max() > 0.02
