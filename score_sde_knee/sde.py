"""The variance-exploding SDE of score_sde (Song et al. 2021), as a small immutable class.

dx = g(t) dw with sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in (0, 1];
g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min)); drift 0.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class VESDE:
  """Variance-exploding SDE. All methods are pure and jit-able."""
  sigma_min: float = 0.01
  sigma_max: float = 128.0
  num_scales: int = 500  # N: number of discretisation steps used by samplers.

  def __post_init__(self):
    if not 0 < self.sigma_min < self.sigma_max:
      raise ValueError(
          f'VESDE needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, '
          f'sigma_max={self.sigma_max}')
    if self.num_scales < 1:
      raise ValueError(f'VESDE num_scales must be >= 1, got {self.num_scales}')

  @property
  def T(self) -> float:
    return 1.0

  def sigma(self, t):
    """Noise level sigma(t) of the perturbation kernel."""
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def diffusion(self, t):
    """g(t), the diffusion coefficient: g(t)^2 = d sigma(t)^2 / dt."""
    return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

  def drift(self, x, t):
    del t
    return jnp.zeros_like(x)

  def marginal_prob(self, x0, t):
    """Mean and std of p_t(x | x0) = N(x0, sigma(t)^2 I)."""
    return x0, self.sigma(t)

  def prior_sampling(self, rng, shape):
    """A sample of the prior N(0, sigma_max^2 I)."""
    return jax.random.normal(rng, shape) * self.sigma_max

  def prior_logp(self, z):
    """Log density of the prior, summed over all but the leading axis."""
    n = math.prod(z.shape[1:])
    sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)
    return (-n / 2.0 * math.log(2 * math.pi * self.sigma_max**2)
            - sq / (2 * self.sigma_max**2))

  def discretize(self, x, t, dt):
    """Euler-Maruyama discretisation over a step from t to t - dt (dt > 0).

    Returns (f, G) with x_{t-dt} = x_t + f + G z for the *forward* process:
    f = 0 and G = sqrt(sigma(t)^2 - sigma(t - dt)^2), the exact variance increment.
    """
    sigma = self.sigma(t)
    sigma_prev = jnp.where(t - dt > 0, self.sigma(t - dt), 0.0)
    f = jnp.zeros_like(x)
    G = jnp.sqrt(sigma**2 - sigma_prev**2)
    return f, G
