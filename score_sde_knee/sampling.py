"""Samplers: predictor-corrector (PC) for the VE SDE, CTM, CSM (SDEdit) and the U-Net pass.

`pc_sample` is score_sde's PC sampler (`get_pc_sampler`: a predictor and a Langevin
corrector per level) as the paper runs it; what SamplerSettings (sampler_setting.py) sets
beside the paper's sampler, a jump grid, a preconditioned or underdamped corrector and
known pixels, is in sampling_variants.py, and the PF-ODE solvers are in ode_sampling.py.

Every sampler is a pure function of a callable score and a PRNG key, so a toy score (the
exact score of a Gaussian) tests it exactly and `jax.jit` compiles it once (the time loop
is a `lax.fori_loop`). Arrays are NHWC: x (B, H, W, C); a score function is
`score_fn(x, t, cond) -> score` with t of shape (B,) in (0, 1] and cond (B, H, W, Cc) or
None; its output has x's shape and is in units of 1 / (image units).

Which noise level the score sees (checked against score_sde's `sampling.py`,
`ReverseDiffusionPredictor`, `LangevinCorrector` and `VESDE.discretize`):
  * Grid: t_i = linspace(t_start, eps, N), i = 0..N-1, sigma_i = sigma(t_i), sigma_N = 0
    (settings.t_jump < t_start moves t_1..t_{N-1}: sampling_variants.py).
  * Predictor step i: the score at t_i, the level x is at before the step; it moves x from
    sigma_i to sigma_{i+1}. score_sde evaluates the network at the continuous t_i too, but
    takes the step's variance from its discrete table, sigma_min (sigma_max /
    sigma_min)^(k / (N-1)) with k = floor(t_i (N-1)), i.e. a grid that ends at sigma_min
    instead of sigma(eps); the two differ by a factor (sigma_max / sigma_min)^eps
    (1.0001 for the paper's values). We use sigma(t_i) for both, so step and score agree.
  * Corrector before predictor step i: the score at t_i, again the level x is at.
    'corrector_first' (score_sde's order): C(t_0) P(t_0) C(t_1) P(t_1) ... C(t_{N-1})
    P(t_{N-1}). 'predictor_first' (the paper: the corrector follows the reverse-SDE step):
    P(t_0) C(t_1) P(t_1) ... C(t_{N-1}) P(t_{N-1}); each predictor step to sigma_{i+1} is
    followed by a corrector at sigma_{i+1}, except the last one, which lands on sigma_N = 0
    where no score exists: N + (N-1) n_corrector score evaluations, against N (1 +
    n_corrector) for 'corrector_first'. (Merely swapping score_sde's two calls would give
    each corrector the score of the level one step above where x is, and end with a
    Langevin step on a state at sigma_N = 0, returning its only partly denoised mean.)
  * The result is the last predictor's noise-free mean, x + sigma_{N-1}^2 s(x, t_{N-1}).
  * Predictor noise. Both predictors move the mean by x + (sigma_i^2 - sigma_{i+1}^2) s.
    'reverse_diffusion' (paper, score_sde's ReverseDiffusionPredictor) then adds noise of
    variance sigma_i^2 - sigma_{i+1}^2; 'ancestral' (score_sde's AncestralSamplingPredictor
    for VE, DDPM's posterior) adds sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2.
    Why it matters at small N: for data at a point x0 (score -(x - x0) / sigma_i^2) with
    r = sigma_{i+1} / sigma_i, x - x0 leaves the step with variance sigma_i^2 (r^4 + 1 -
    r^2) for reverse diffusion and exactly sigma_{i+1}^2 = r^2 sigma_i^2 for ancestral. The
    excess is negligible at N = 500 (r ~ 0.98) but compounds over a coarse grid: at N = 25
    on sigma 0.01..32 (r = 0.72) each reverse-diffusion step leaves 1.2x the intended
    noise std, and the last step's denoising, tuned to sigma_min, cannot remove it. For
    data with spread the ancestral step errs the other way (a little too little noise);
    the Langevin corrector pulls both back (tests/sampling_test.py).

Randomness: step i draws its noise from `fold_in(rng, i)`, split into (predictor key,
corrector key); corrector sub-step j uses `fold_in(corrector key, j)`. The variants draw
from `fold_in(rng, N + k)` (sampling_variants.py, the *_STREAM constants), so turning one
on leaves these draws as they were. CTM and CSM first split their key into (initial-noise
key, loop key). The result depends only on the key, not on how the batch is sharded (JAX's
partitionable threefry).

Data parallel: everything is elementwise over the batch except the batch-wide corrector
step size, a mean over the whole batch. Jit with the batch sharded over a 1-D mesh
(`NamedSharding(mesh, P('data'))`) and XLA inserts that reduction; inside `shard_map`
the mean would be per shard (use per_sample_step=True there).
"""
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from score_sde_knee import langevin
from score_sde_knee import methods
from score_sde_knee import ode_sampling
from score_sde_knee import sampling_variants as variants
from score_sde_knee import sde as sde_lib
from score_sde_knee.sampler_setting import SamplerSettings

Array = jax.Array
ScoreFn = Callable[[Array, Array, Array | None], Array]
PredictFn = Callable[[Array], Array]
SampleFn = Callable[[Array, Array], Array]


class Projection(NamedTuple):
  """A data-consistency step for pc_sample (multiview.py). At predictor step i, after
  the score s at t_i, `apply(x, denoised, i, state) -> (x', state)` is handed x and its
  denoised estimate x + sigma_i^2 s; for DiffusionMBIR's data consistency it replaces the
  estimate by denoised' and returns x' = denoised' + (x - denoised), and the predictor
  step continues from x' with the same score. `state` (init at the start, e.g. a
  warm-start volume) goes from step to step."""
  init: Any
  apply: Callable[[Array, Array, Array, Any], tuple[Array, Any]]


def _check_start(settings: SamplerSettings, t_start: float) -> None:
  if not settings.eps < t_start <= 1.0:
    raise ValueError(f'PC sampler needs eps < t_start <= 1 (CSM: t_start = t0), got '
                     f'eps={settings.eps}, t_start={t_start}')


def langevin_corrector(score_fn: ScoreFn, cond: Array | None,
                       settings: SamplerSettings) -> variants.Corrector:
  """score_sde's LangevinCorrector: n steps x + e s + sqrt(2 e) z, e from the snr."""
  def run(x, state, t, key, n):
    def body(j, x):
      z = langevin.normal_like(jax.random.fold_in(key, j), x)
      score = score_fn(x, t, cond)
      e = langevin.step_size(score, z, settings.snr, settings.per_sample_step)
      return langevin.langevin_step(x, score, z, e.reshape(e.shape + (1,) * (x.ndim - 1)))
    return jax.lax.fori_loop(0, n, body, x), state
  return variants.Corrector(None, run, lambda state, score: state)


def pc_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, x_init: Array, cond: Array | None,
              rng: Array, settings: SamplerSettings, *, t_start: float = 1.0,
              known: tuple[Array, Array] | None = None,
              project: Projection | None = None) -> Array:
  """Predictor-corrector sampling of the reverse VE SDE from t_start down to settings.eps.

  Args:
    score_fn: score_fn(x, t, cond) -> score, x (B, ...), t (B,).
    sde: the VE SDE; gives sigma(t).
    x_init: (B, H, W, C) state at t_start, i.e. with noise level sigma(t_start).
    cond: passed unchanged to score_fn (None for an unconditional score).
    rng: PRNG key (module docstring).
    settings: N = settings.n_steps, the predictor, corrector and variants.
    t_start: first time of the grid, in (eps, 1].
    known: (mask, values), each broadcastable to x: where mask is true the state is held
      at values plus noise of its level (sampling_variants.py); None = no known pixels.
    project: a data-consistency step (Projection) on the denoised estimate of each
      predictor step; None (the default) leaves the sampler as it was.

  Returns:
    (B, H, W, C) noise-free mean of the last predictor step (not clipped), x_init's dtype;
    with `known`, the values on the mask.
  """
  s = settings
  _check_start(s, t_start)
  dtype, batch = x_init.dtype, x_init.shape[0]
  ts = variants.pc_grid(t_start, s.eps, s.n_steps, s.t_jump, dtype)
  sigmas = sde.sigma(ts)
  sigmas_next = jnp.concatenate([sigmas[1:], jnp.zeros((1,), dtype)])
  held = variants.KnownPixels(known, rng, s.n_steps)
  corrector = (variants.corrector_variant(score_fn, cond, s, x_init, rng)
               if s.corrects and (s.precond > 0 or s.momentum > 0) else
               langevin_corrector(score_fn, cond, s))

  def step(i, carry):
    x, _, state, proj_state = carry
    t = jnp.full((batch,), ts[i], dtype)
    key_p, key_c = jax.random.split(jax.random.fold_in(rng, i))
    if s.corrects:
      # 'predictor_first': no corrector before the first predictor step (module docstring).
      n = s.n_steps_each if s.order == 'corrector_first' else jnp.where(
          i == 0, 0, s.n_steps_each)
      x, state = corrector.run(x, state, t, key_c, n)
      x = held.after_corrector(x, sigmas[i], i)
    var = sigmas[i] ** 2 - sigmas_next[i] ** 2
    score = score_fn(x, t, cond)
    if project is not None:  # x moves with its denoised estimate (Projection).
      x, proj_state = project.apply(x, x + sigmas[i] ** 2 * score, i, proj_state)
    state = corrector.finish(state, score)  # Ends an underdamped corrector's last step.
    x_mean = x + var * score
    std = jnp.sqrt(var)
    if s.predictor == 'ancestral':
      std = std * sigmas_next[i] / sigmas[i]
    x = held.after_predictor(x_mean + std * langevin.normal_like(key_p, x), sigmas_next[i], i)
    return x, held.mean(x_mean), state, proj_state

  x_init = held.start(x_init, sigmas[0])
  _, x_mean, _, _ = jax.lax.fori_loop(0, s.n_steps, step, (
      x_init, x_init, corrector.init, None if project is None else project.init))
  return x_mean


def ctm_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, cond: Array, rng: Array,
               settings: SamplerSettings, *, channels: int = 1,
               project: Projection | None = None) -> Array:
  """Conditional score model (paper Alg. 2): from the prior N(0, sigma_max^2 I) at t = 1.

  Args:
    score_fn: conditional score s(x, t, cond).
    cond: (B, H, W, Cc) segmentation.
    settings: as in pc_sample; settings.known_air holds the pixels outside the
      segmentation at air, 0 (sampling_variants.py).
    channels: image channels C of the sample.
    project: as in pc_sample.

  Returns:
    (B, H, W, channels) images clipped to [0, 1].
  """
  key_init, key_loop = jax.random.split(rng)
  # sde.prior_sampling(key_init, shape), drawn with cond's sharding so that on a mesh
  # with explicit axes the loop state is sharded from the start.
  x = sde.sigma_max * langevin.normal_like(key_init, cond, cond.shape[:-1] + (channels,))
  x = pc_sample(score_fn, sde, x, cond, key_loop, settings, t_start=1.0,
                known=variants.known_air(cond, settings), project=project)
  return jnp.clip(x, 0.0, 1.0)


def csm_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, contour: Array, rng: Array,
               settings: SamplerSettings, *, project: Projection | None = None) -> Array:
  """Conditional sampling with an unconditional score (paper Alg. 1, SDEdit).

  The segmentation, perturbed to noise level sigma(settings.t0), is the starting point;
  the unconditional score (called with cond=None) takes it from t0 down to eps.

  Args:
    score_fn: unconditional score s(x, t, None).
    contour: (B, H, W, C) segmentation with the image's channel count, values in [0, 1].
    settings: as in pc_sample, with the start time t0; settings.known_air holds the
      pixels outside the contour at air, 0 (sampling_variants.py).
    project: as in pc_sample.

  Returns:
    (B, H, W, C) images clipped to [0, 1].
  """
  key_init, key_loop = jax.random.split(rng)
  x = contour + sde.sigma(settings.t0) * langevin.normal_like(key_init, contour)
  x = pc_sample(score_fn, sde, x, None, key_loop, settings, t_start=settings.t0,
                known=variants.known_air(contour, settings), project=project)
  return jnp.clip(x, 0.0, 1.0)


def unet_sample(predict_fn: PredictFn, cond: Array) -> Array:
  """U-Net baseline: one forward pass predict_fn(cond), clipped to [0, 1]."""
  return jnp.clip(predict_fn(cond), 0.0, 1.0)


def get_sampler(config: ml_collections.ConfigDict, *,
                score_fn: ScoreFn | None = None,
                predict_fn: PredictFn | None = None,
                sde: sde_lib.VESDE | None = None) -> SampleFn:
  """The one dispatch on config.method: returns sample(cond, rng) -> (B, H, W, 1) images.

  For csm and ctm, SamplerSettings.from_config(config) picks and sets the solver: 'pc'
  (above) or 'heun' / 'dpm2' (ode_sampling.py). csm and ctm need score_fn (a closure over
  parameters); unet needs predict_fn and ignores rng. sde defaults to the VESDE of
  config.sde. The returned function is pure; the caller jits it.
  sampler_setting.nfe(config) counts its evaluations.
  """
  method = methods.get(config.method)
  if method.sampling == 'forward':
    if predict_fn is None:
      raise ValueError(f'get_sampler: config.method={method.name!r} needs predict_fn')
    return lambda cond, rng: unet_sample(predict_fn, cond)

  if score_fn is None:
    raise ValueError(f'get_sampler: config.method={method.name!r} needs score_fn')
  settings = SamplerSettings.from_config(config)
  if sde is None:
    sde = sde_lib.VESDE(sigma_min=float(config.sde.sigma_min),
                        sigma_max=float(config.sde.sigma_max),
                        num_scales=int(config.sde.num_scales))
  sdedit = method.sampling == 'sdedit'
  t_start = settings.t0 if sdedit else 1.0
  # Fail at construction rather than at the first (jitted) call.
  if settings.solver == 'pc':
    _check_start(settings, t_start)
    sample = csm_sample if sdedit else ctm_sample
  else:
    ode_sampling.check_start(sde, t_start)
    sample = ode_sampling.ode_csm_sample if sdedit else ode_sampling.ode_ctm_sample
  return lambda cond, rng: sample(score_fn, sde, cond, rng, settings)
