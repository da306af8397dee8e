"""ODE samplers for the VE SDE: the probability-flow ODE with EDM's Heun solver or DPM-Solver-2.

References: Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models" (EDM, NeurIPS 2022), Alg. 1 (deterministic) and Alg. 2 (stochastic);
Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations"
(score_sde, ICLR 2021), eq. 13, the probability-flow ODE; Lu et al., "DPM-Solver" (NeurIPS
2022), Alg. 1 with r1 = 1/2.

The score is the same callable as in `sampling.py`: score_fn(x, t, cond) with x (B, H, W,
C) NHWC, t (B,) and sigma(t) = sigma_min (sigma_max / sigma_min)^t (sde.py). These samplers
work in sigma and call the score at t(sigma) = log(sigma / sigma_min) / log(sigma_max /
sigma_min) (sde.sigma_min, sde.sigma_max: the training range, t in (0, 1]).

Formulas (VE SDE: x_sigma = x_0 + sigma z, so EDM's s(t) = 1 and sigma(t) = t):
  * PF-ODE: dx/dsigma = -sigma score(x, sigma) = (x - D(x, sigma)) / sigma, with the
    denoiser D(x, sigma) = x + sigma^2 score(x, sigma).
  * Schedule (EDM eq. 5), i = 0..N-1: sigma_i = (sigma_hi^(1/rho) + i / (N-1)
    (sigma_lo^(1/rho) - sigma_hi^(1/rho)))^rho, then sigma_N = 0. CTM: sigma_hi =
    sigma_max; CSM (SDEdit): sigma_hi = sigma(t0). sigma_lo = sde.sigma_min by default.
  * Heun step i < N-1 (EDM Alg. 1): d = -sigma_i s(x, sigma_i); x' = x + (sigma_{i+1} -
    sigma_i) d; d' = -sigma_{i+1} s(x', sigma_{i+1}); x <- x + (sigma_{i+1} - sigma_i)
    (d + d') / 2.
  * DPM-Solver-2 step i < N-1 (noise prediction eps = -sigma s; for VE, lambda = -log
    sigma and x_t = x_s + (sigma_t - sigma_s) eps exactly when eps is constant):
    sigma_m = sqrt(sigma_i sigma_{i+1}) (the midpoint in lambda); u = x + (sigma_m -
    sigma_i) d; x <- x + (sigma_{i+1} - sigma_i) (-sigma_m s(u, sigma_m)).
  * Last step i = N-1, to sigma_N = 0: one Euler step, x <- x + sigma_{N-1}^2 s(x,
    sigma_{N-1}) = D(x, sigma_{N-1}) (EDM; DPM-Solver's first-order step is the same).
  * NFE = 2 (N - 1) + 1 = 2N - 1 for both solvers.
  * Stochastic option (EDM Alg. 2), before step i when s_tmin <= sigma_i <= s_tmax:
    gamma = min(s_churn / N, sqrt(2) - 1), sigma_hat = (1 + gamma) sigma_i, x <- x +
    sqrt(sigma_hat^2 - sigma_i^2) s_noise z, and the step starts from sigma_hat. s_churn =
    0 (default) is the deterministic ODE. Churn at sigma_i = sigma_max asks the score at
    t > 1, outside the training range: set s_tmax < sigma_max to avoid that.

Randomness: CTM / CSM split the key into (initial-noise key, loop key); churn at step i
draws from fold_in(loop key, i). With s_churn = 0 the output depends on the initial noise
only. Outputs of `ode_ctm_sample` / `ode_csm_sample` are clipped to [0, 1].
"""
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde_knee import sde as sde_lib
from score_sde_knee.sampler_setting import ODE_SOLVERS as SOLVERS
from score_sde_knee.sampler_setting import SamplerSettings

Array = jax.Array
ScoreFn = Callable[[Array, Array, Array | None], Array]


def sigma_to_t(sde: sde_lib.VESDE, sigma: Array) -> Array:
  """The inverse of sde.sigma: t = log(sigma / sigma_min) / log(sigma_max / sigma_min)."""
  return jnp.log(sigma / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)


def edm_sigmas(sigma_hi: float, sigma_lo: float, n_steps: int, rho: float = 7.0,
               dtype: jnp.dtype = jnp.float32) -> Array:
  """EDM's schedule: (n_steps + 1,) noise levels from sigma_hi down to sigma_lo, then 0.

  n_steps = 1 gives (sigma_hi, 0): a single Euler step.
  """
  frac = jnp.arange(n_steps, dtype=dtype) / max(n_steps - 1, 1)
  hi, lo = sigma_hi ** (1.0 / rho), sigma_lo ** (1.0 / rho)
  sigmas = (hi + frac * (lo - hi)) ** rho
  return jnp.concatenate([sigmas, jnp.zeros((1,), dtype)])


def check_start(sde: sde_lib.VESDE, t_start: float, sigma_lo: float | None = None) -> None:
  """Raises ValueError for a start time or last level `ode_sample` cannot use (see there)."""
  if not 0.0 < t_start <= 1.0:
    raise ValueError(f'ODE sampler start time t_start (CSM: t0) must be in (0, 1], got '
                     f'{t_start}')
  sigma_hi = float(sde.sigma(t_start))
  sigma_lo = sde.sigma_min if sigma_lo is None else sigma_lo
  if not 0.0 < sigma_lo < sigma_hi:
    raise ValueError(f'ODE sampler needs 0 < sigma_lo < sigma(t_start) (last and first '
                     f'noise level), got sigma_lo={sigma_lo}, sigma(t_start)={sigma_hi}')


def _normal_like(key: Array, x: Array, shape: tuple[int, ...] | None = None) -> Array:
  """N(0, 1) noise with x's dtype and sharding (each device draws only its shard)."""
  shape = x.shape if shape is None else shape
  return jax.random.normal(key, shape, x.dtype, out_sharding=jax.typeof(x).sharding)


def ode_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, x_init: Array, cond: Array | None,
               rng: Array, settings: SamplerSettings, *, t_start: float = 1.0,
               sigma_lo: float | None = None) -> Array:
  """Solves the PF-ODE from sigma(t_start) to 0 on EDM's schedule (module docstring).

  Args:
    score_fn: score_fn(x, t, cond) -> score, x (B, ...), t (B,).
    sde: the VE SDE; its sigma_min, sigma_max map sigma to the score's t.
    x_init: (B, H, W, C) state at noise level sigma(t_start).
    cond: passed unchanged to score_fn (None for an unconditional score).
    rng: PRNG key, used only for churn noise (s_churn > 0).
    settings: solver 'heun' (EDM Alg. 1) or 'dpm2' (DPM-Solver-2); n_steps = N noise
      levels > 0 in the schedule, NFE = 2N - 1; rho, the schedule exponent (EDM: 7);
      s_churn, s_tmin, s_tmax, s_noise, EDM Alg. 2 stochasticity (s_churn = 0 is off).
    t_start: time in (0, 1] of the first noise level sigma(t_start).
    sigma_lo: last noise level > 0 (default sde.sigma_min).

  Returns:
    (B, H, W, C) the state at sigma = 0 (not clipped), x_init's dtype.
  """
  if settings.solver not in SOLVERS:
    raise ValueError(f'ODE solver must be one of {SOLVERS}, got {settings.solver!r}')
  check_start(sde, t_start, sigma_lo)
  n_steps, rho, solver = settings.n_steps, settings.rho, settings.solver
  s_tmin, s_tmax, s_noise = settings.s_tmin, settings.s_tmax, settings.s_noise
  s_churn = settings.s_churn
  sigma_hi = float(sde.sigma(t_start))
  sigma_lo = sde.sigma_min if sigma_lo is None else sigma_lo
  dtype, batch = x_init.dtype, x_init.shape[0]
  sigmas = edm_sigmas(sigma_hi, sigma_lo, n_steps, rho, dtype)
  gamma_max = min(s_churn / n_steps, math.sqrt(2.0) - 1.0)

  def score(x: Array, sigma: Array) -> Array:
    t = jnp.full((batch,), sigma_to_t(sde, sigma), dtype)
    return score_fn(x, t, cond)

  def churn(i: Array, x: Array) -> tuple[Array, Array]:
    sigma = sigmas[i]
    if gamma_max <= 0:
      return x, sigma
    gamma = jnp.where((s_tmin <= sigma) & (sigma <= s_tmax), gamma_max, 0.0)
    z = _normal_like(jax.random.fold_in(rng, i), x)
    # sqrt(sigma_hat^2 - sigma^2) in a form that cannot round to sqrt(< 0) at gamma = 0.
    noise = sigma * jnp.sqrt(gamma * (2.0 + gamma))
    return x + noise * s_noise * z, sigma * (1.0 + gamma)

  def step(i, x):
    x, sigma = churn(i, x)
    sigma_next = sigmas[i + 1]
    d = -sigma * score(x, sigma)
    if solver == 'heun':
      x_euler = x + (sigma_next - sigma) * d
      d_next = -sigma_next * score(x_euler, sigma_next)
      return x + (sigma_next - sigma) * 0.5 * (d + d_next)
    sigma_mid = jnp.sqrt(sigma * sigma_next)
    u = x + (sigma_mid - sigma) * d
    return x + (sigma_next - sigma) * (-sigma_mid * score(u, sigma_mid))

  # Steps to sigma_{N-1} > 0 are second order; the last one, to 0, is an Euler step
  # (the score at sigma = 0, t = -inf, does not exist).
  x = jax.lax.fori_loop(0, n_steps - 1, step, x_init)
  x, sigma = churn(jnp.asarray(n_steps - 1), x)
  return x + sigma**2 * score(x, sigma)


def ode_ctm_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, cond: Array, rng: Array,
                   settings: SamplerSettings, *, channels: int = 1) -> Array:
  """CTM by the PF-ODE: from x ~ N(0, sigma_max^2 I) at sigma_max down to 0.

  Args:
    score_fn: conditional score s(x, t, cond).
    cond: (B, H, W, Cc) segmentation.
    settings: as in `ode_sample`.
    channels: image channels C of the sample.

  Returns:
    (B, H, W, channels) images clipped to [0, 1].
  """
  key_init, key_loop = jax.random.split(rng)
  x = sde.sigma_max * _normal_like(key_init, cond, cond.shape[:-1] + (channels,))
  x = ode_sample(score_fn, sde, x, cond, key_loop, settings, t_start=1.0)
  return jnp.clip(x, 0.0, 1.0)


def ode_csm_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, contour: Array, rng: Array,
                   settings: SamplerSettings, *, sigma_lo: float | None = None) -> Array:
  """CSM (SDEdit) by the PF-ODE: x = contour + sigma(t0) z, then from sigma(t0) to 0.

  Args:
    score_fn: unconditional score s(x, t, None).
    contour: (B, H, W, C) segmentation with the image's channel count, values in [0, 1].
    settings: as in `ode_sample`, with the start time t0 in (0, 1]; sigma(t0) must
      exceed the last level sigma_lo (default sde.sigma_min).

  Returns:
    (B, H, W, C) images clipped to [0, 1].
  """
  t0 = settings.t0
  check_start(sde, t0, sigma_lo)  # Before sde.sigma(t0) is used.
  key_init, key_loop = jax.random.split(rng)
  x = contour + float(sde.sigma(t0)) * _normal_like(key_init, contour)
  x = ode_sample(score_fn, sde, x, None, key_loop, settings, t_start=t0, sigma_lo=sigma_lo)
  return jnp.clip(x, 0.0, 1.0)
