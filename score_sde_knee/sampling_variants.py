"""The research variants of the PC sampler (sampling.py): a jump grid, a preconditioned or
underdamped Langevin corrector, and known pixels (inpainting, the air outside the mask).

Each is off at its SamplerSettings default, and pc_sample then runs score_sde's sampler.

Jump grid (`t_jump` < t_start): t_0 = t_start, then t_1..t_{N-1} = linspace(t_jump, eps,
N - 1), so the first step jumps to sigma(t_jump) and the other N - 1 levels sit where the
image forms. Why that is safe with the ancestral predictor: its step is x' = r^2 x + (1 -
r^2) D(x) + noise, D(x) = x + sigma_i^2 s the denoiser, which is exact when D is constant
over the step, as it nearly is at high noise for a conditional model (D ~ E[x0 | cond]).

Corrector variants (langevin.py gives the steps and why): `precond` > 0 replaces each
Langevin step by x + e P s + sqrt(2 e) P^(1/2) z with P = 1 + precond G, G a Gaussian
low-pass of std `precond_width` pixels; `momentum` > 0 makes the corrector underdamped:
a velocity u, at its equilibrium law N(0, P) at the start, travels from level to level,
and the predictor's score evaluation completes the last leapfrog step's second half-kick,
so each Langevin step still costs one evaluation.

Known pixels (`known`, score_sde's inpainting, `get_pc_inpainter`): a mask and values.
The start and the state after each corrector and each predictor step are reset, on the
mask, to the values perturbed to the level the state is at (sigma_i after the corrector,
sigma_{i+1} after the predictor), and the returned mean holds the values themselves.
score_sde perturbs after the predictor to sigma_i, the level before the step; we use the
level the step lands on. `known_air` in CTM and CSM uses it with the mask's zero pixels
and the value 0: the contour is DRR > 0.1, so outside it the radiograph is air, zero in
all but the partial pixels at the edge. Left free, SDEdit draws the leg 1-3 px past its
contour (benchmarks/RESULTS.md).
"""
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from score_sde_knee import langevin
from score_sde_knee import sampler_setting

Array = jax.Array

# The PC sampler's random streams are fold_in(rng, k); k = i < N is predictor step i's own
# (sampling.py). The variants draw from k >= N, so that turning one on leaves every draw
# of the plain sampler, and of the other variants, as it was.
VELOCITY_STREAM = 0      # k = N: the underdamped corrector's initial velocity.
KNOWN_START_STREAM = 1   # k = N + 1: the known pixels' noise at the start.
KNOWN_STEP_STREAM = 2    # k = N + 2 + i: theirs in step i, split (after C, after P).


def pc_grid(t_start: float, eps: float, n_steps: int, t_jump: float = 1.0,
            dtype=jnp.float32) -> Array:
  """The N times of the PC grid, from t_start down to eps, with the jump (module
  docstring) when t_jump < t_start. With N < 3 there is no level between the jump and eps,
  so t_jump is ignored."""
  if t_jump >= t_start or n_steps < 3:
    return jnp.linspace(t_start, eps, n_steps, dtype=dtype)
  return jnp.concatenate([jnp.array([t_start], dtype),
                          jnp.linspace(t_jump, eps, n_steps - 1, dtype=dtype)])


class Corrector(NamedTuple):
  """A Langevin corrector for pc_sample. `run(x, state, t, key, n) -> (x, state)` takes n
  steps at time t; `finish(state, score) -> state` is handed the predictor's score at the
  state run left; `state` (None for an overdamped corrector) goes from level to level."""
  init: Any
  run: Callable[[Array, Any, Array, Array, Any], tuple[Array, Any]]
  finish: Callable[[Any, Array], Any]


def corrector_variant(score_fn, cond: Array | None,
                      settings: sampler_setting.SamplerSettings, x_init: Array,
                      rng: Array) -> Corrector:
  """The preconditioned (settings.precond > 0) and / or underdamped (settings.momentum >
  0) Langevin corrector (module docstring); rng is the sampler's key."""
  boost = (1.0 + settings.precond * langevin.lowpass_gain(x_init.shape[1:3],
                                                           settings.precond_width)
           if settings.precond > 0 else None)
  no_kick = jnp.zeros((x_init.shape[0],) + (1,) * (x_init.ndim - 1), x_init.dtype)

  def run(x, state, t, key, n):
    def body(j, carry):
      x, u, pending = carry
      z = langevin.normal_like(jax.random.fold_in(key, j), x)
      score = score_fn(x, t, cond)
      e = langevin.step_size(score, z, settings.snr, settings.per_sample_step)
      e = e.reshape(e.shape + (1,) * (x.ndim - 1))
      if settings.momentum > 0:
        return langevin.underdamped_step(x, u, pending, score, z, e, settings.momentum,
                                         boost)
      return langevin.langevin_step(x, score, z, e, boost), u, pending
    x, u, pending = jax.lax.fori_loop(0, n, body, (x, None if state is None else state[0],
                                                   no_kick))
    return x, None if state is None else (u, pending)

  if settings.momentum == 0:
    return Corrector(None, run, lambda state, score: state)
  u0 = langevin.normal_like(jax.random.fold_in(rng, settings.n_steps + VELOCITY_STREAM),
                            x_init)
  u0 = u0 if boost is None else langevin.fourier_filter(u0, jnp.sqrt(boost))
  return Corrector((u0, no_kick), run, lambda state, score: (
      langevin.complete_kick(state[0], state[1], score, boost), state[1]))


class KnownPixels:
  """Holds pc_sample's state at known values on a mask (module docstring); known None
  holds nothing."""

  def __init__(self, known: tuple[Array, Array] | None, rng: Array, n_steps: int):
    self.known, self.rng, self.n_steps = known, rng, n_steps

  def _reset(self, x: Array, sigma: Array | float, key: Array | None) -> Array:
    """x with the known pixels at their values perturbed to noise level sigma (key None:
    the values themselves)."""
    if self.known is None:
      return x
    mask, values = self.known
    noisy = values if key is None else values + sigma * langevin.normal_like(key, x)
    return jnp.where(mask, noisy, x)

  def _step_key(self, i: Array, which: int) -> Array | None:
    if self.known is None:
      return None
    stream = self.n_steps + KNOWN_STEP_STREAM + i
    return jax.random.split(jax.random.fold_in(self.rng, stream))[which]

  def start(self, x: Array, sigma: Array) -> Array:
    if self.known is None:
      return x
    return self._reset(x, sigma, jax.random.fold_in(self.rng,
                                                    self.n_steps + KNOWN_START_STREAM))

  def after_corrector(self, x: Array, sigma: Array, i: Array) -> Array:
    return self._reset(x, sigma, self._step_key(i, 0))

  def after_predictor(self, x: Array, sigma: Array, i: Array) -> Array:
    return self._reset(x, sigma, self._step_key(i, 1))

  def mean(self, x: Array) -> Array:
    return self._reset(x, 0.0, None)


def air_pixels(segmentation: Array, margin: int = 0) -> tuple[Array, Array]:
  """`known` for pc_sample: value 0 on the pixels where every channel of the segmentation is
  0 and that lie more than margin + 0.5 pixels (centre to centre) from the nearest
  segmented pixel; margin 0 holds all of them (module docstring, "Known pixels")."""
  leg = jnp.any(segmentation != 0, axis=-1, keepdims=True)
  if margin > 0:  # Dilate by a disk of radius margin + 0.5, as a union of shifts.
    height, width = leg.shape[1:3]
    padded = jnp.pad(leg, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    reach = (margin + 0.5) ** 2
    for dy in range(-margin, margin + 1):
      for dx in range(-margin, margin + 1):
        if dy * dy + dx * dx <= reach:
          leg = leg | padded[:, margin + dy:margin + dy + height,
                             margin + dx:margin + dx + width]
  return ~leg, jnp.zeros((), segmentation.dtype)


def known_air(segmentation: Array,
              settings: sampler_setting.SamplerSettings) -> tuple[Array, Array] | None:
  """The `known` pixels settings.known_air asks for on this segmentation, or None."""
  return air_pixels(segmentation, settings.air_margin) if settings.known_air else None
