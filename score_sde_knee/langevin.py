"""Langevin corrector steps for the PC sampler: plain, low-frequency preconditioned, and
underdamped (with momentum).

All act on NHWC x with the score s = grad log p at the current noise level, a step size e
of shape broadcastable to x (`step_size`), and standard normal noise z of x's shape.

Why a preconditioner: a mode of variance A relaxes by a factor 1 - e / A per plain step and
is unstable beyond e = 2 A, so e (sized by snr on the typical, mostly high-frequency,
variance, about sigma^2 for noisy images) leaves the low frequencies of an image, whose
variance is far larger, slow to mix: N = 500 PC gives them 500 steps, a 25-level sampler
24. P = F^-1 diag(boost) F (boost > 0 on the rfft2 grid, broadcastable to (B, H,
W // 2 + 1, C), symmetric in frequency, so P is symmetric positive definite) lengthens the
step where boost > 1 without changing the stationary law of the continuous dynamics. Mode
k stays stable while e boost_k < 2 A_k: where the score's curvature along the low
frequencies is as sharp as the noise's (a poorly trained score at low noise), that caps
boost_k at about 1 / snr^2, whatever the data's spread (a boost scaled to the data's
low-frequency variance over sigma^2 diverged on the CTM model).

Why momentum: overdamped Langevin needs ~A / e steps to move a mode of variance A across
its range, underdamped Langevin ~sqrt(A / e) (it travels instead of diffusing), and its
leapfrog step stays stable up to the same e as the plain step (h = sqrt(2 e) < 2 sqrt(A)).
`underdamped_step` is velocity Verlet for unit temperature with mass P^-1 and time step
h = sqrt(2 e), preceded by a partial velocity refresh u <- a u + sqrt(1 - a^2) P^(1/2) z:
  u <- u + (h_prev / 2) P s(x)   (the previous step's second half-kick, `pending` = h_prev / 2)
  u <- a u + sqrt(1 - a^2) P^(1/2) z
  u <- u + (h / 2) P s(x);  x <- x + h u;  pending <- h / 2.
The second half-kick needs s at the new x, which the next evaluation of the score (the next
corrector step or the predictor) supplies, so each step costs one score evaluation. With
a = 0 it is exactly the plain step x + e P s + sqrt(2 e) P^(1/2) z. The velocity u ~ N(0, P)
at equilibrium whatever the noise level, so it carries over from level to level.
"""
import jax
import jax.numpy as jnp

Array = jax.Array


def normal_like(key: Array, x: Array, shape: tuple[int, ...] | None = None) -> Array:
  """N(0, 1) noise with x's dtype and sharding (so each device draws only its shard)."""
  shape = x.shape if shape is None else shape
  return jax.random.normal(key, shape, x.dtype, out_sharding=jax.typeof(x).sharding)


def lowpass_gain(shape_hw: tuple[int, int], width: float) -> Array:
  """G on the rfft2 grid, shape (H, W // 2 + 1, 1): the transfer function of a Gaussian
  blur of std `width` pixels, exp(-2 pi^2 width^2 |f|^2), f in cycles per pixel."""
  fy = jnp.fft.fftfreq(shape_hw[0])[:, None, None]
  fx = jnp.fft.rfftfreq(shape_hw[1])[None, :, None]
  return jnp.exp(-2.0 * jnp.pi**2 * width**2 * (fy**2 + fx**2))


def fourier_filter(v: Array, mult: Array) -> Array:
  """F^-1 diag(mult) F v over the image axes of NHWC v; mult real, broadcastable to
  (B, H, W // 2 + 1, C), e.g. (H, W // 2 + 1, 1)."""
  f = jnp.fft.rfft2(v, axes=(1, 2))
  return jnp.fft.irfft2(f * mult, s=v.shape[1:3], axes=(1, 2)).astype(v.dtype)


def _precondition(v: Array, mult: Array | None) -> Array:
  return v if mult is None else fourier_filter(v, mult)


def _per_example_norm(a: Array) -> Array:
  return jnp.sqrt(jnp.sum(jnp.square(a.reshape(a.shape[0], -1)), axis=-1))


def step_size(score: Array, z: Array, snr: float, per_sample: bool) -> Array:
  """e = 2 (snr ||z|| / ||s||)^2, shape (B,): one value for the batch unless per_sample."""
  score_norm = _per_example_norm(score)
  noise_norm = _per_example_norm(z)
  if not per_sample:
    # score_sde: means of the per-example norms over the whole (global) batch.
    score_norm = jnp.broadcast_to(jnp.mean(score_norm), score_norm.shape)
    noise_norm = jnp.broadcast_to(jnp.mean(noise_norm), noise_norm.shape)
  return 2.0 * jnp.square(snr * noise_norm / score_norm)


def langevin_step(x: Array, score: Array, z: Array, e: Array,
                  boost: Array | None = None) -> Array:
  """One Langevin step x + e P s + sqrt(2 e) P^(1/2) z; P = identity when boost is None."""
  root = None if boost is None else jnp.sqrt(boost)
  return x + e * _precondition(score, boost) + jnp.sqrt(2.0 * e) * _precondition(z, root)


def complete_kick(u: Array, pending: Array, score: Array,
                  boost: Array | None = None) -> Array:
  """u + pending P s: the second half-kick of the last underdamped step, s at its end."""
  return u + pending * _precondition(score, boost)


def underdamped_step(x: Array, u: Array, pending: Array, score: Array, z: Array, e: Array,
                     momentum: float, boost: Array | None = None
                     ) -> tuple[Array, Array, Array]:
  """One underdamped step (module docstring): returns (x, u, pending).

  Args:
    x, u: position and velocity, NHWC.
    pending: h / 2 of the previous step (0 when its kick was completed), broadcastable to x.
    score: s(x) at the current level; z: N(0, 1) of x's shape; e: the plain step size.
    momentum: a in [0, 1), the fraction of the velocity kept by the refresh.
    boost: the preconditioner's diagonal on the rfft2 grid, or None.
  """
  ps = _precondition(score, boost)
  pz = _precondition(z, None if boost is None else jnp.sqrt(boost))
  u = u + pending * ps
  u = momentum * u + jnp.sqrt(1.0 - momentum**2) * pz
  h = jnp.sqrt(2.0 * e)
  u = u + 0.5 * h * ps
  return x + h * u, u, 0.5 * h
