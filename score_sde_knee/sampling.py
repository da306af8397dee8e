"""Samplers: predictor-corrector (PC) for the VE SDE, CTM, CSM (SDEdit) and the U-Net pass.

Every sampler is a pure function of a callable score and a PRNG key, so a toy score (the
exact score of a Gaussian) tests it exactly and `jax.jit` compiles it once (the time loop
is a `lax.fori_loop`). Arrays are NHWC: x (B, H, W, C); a score function is
`score_fn(x, t, cond) -> score` with t of shape (B,) in (0, 1] and cond (B, H, W, Cc) or
None; its output has x's shape and is in units of 1 / (image units).

Which noise level the score sees (checked against score_sde's `sampling.py`,
`ReverseDiffusionPredictor`, `LangevinCorrector` and `VESDE.discretize`):
  * Grid: t_i = linspace(t_start, eps, N), i = 0..N-1, sigma_i = sigma(t_i), sigma_N = 0.
    With t_jump < t_start: t_0 = t_start, then t_1..t_{N-1} = linspace(t_jump, eps, N - 1),
    so the first step jumps to sigma(t_jump) and the other N - 1 levels sit where the image
    forms. Why that is safe with the ancestral predictor: its step is x' = r^2 x + (1 - r^2)
    D(x) + noise, D(x) = x + sigma_i^2 s the denoiser, which is exact when D is constant over
    the step, as it nearly is at high noise for a conditional model (D ~ E[x0 | cond]).
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

Known pixels (`known`, score_sde's inpainting, `get_pc_inpainter`): a mask and values.
The start and the state after each corrector and each predictor step are reset, on the
mask, to the values perturbed to the level the state is at (sigma_i after the corrector,
sigma_{i+1} after the predictor), and the returned mean holds the values themselves.
score_sde perturbs after the predictor to sigma_i, the level before the step; we use the
level the step lands on. `known_air` in CTM and CSM uses it with the mask's zero pixels
and the value 0: the contour is DRR > 0.1, so outside it the radiograph is air, zero in
all but the partial pixels at the edge. Left free, SDEdit draws the leg 1-3 px past its
contour (benchmarks/RESULTS.md, session 23).

Randomness: step i draws its noise from `fold_in(rng, i)`, split into (predictor key,
corrector key); corrector sub-step j uses `fold_in(corrector key, j)`; an underdamped
corrector's initial velocity uses `fold_in(rng, N)`; the known pixels' noise at the
start uses `fold_in(rng, N + 1)`, and in step i `fold_in(rng, N + 2 + i)`, split into
(after the corrector, after the predictor). CTM and CSM first
split their key into (initial-noise key, loop key). The result depends only on the key,
not on how the batch is sharded (JAX's partitionable threefry).

Data parallel: everything is elementwise over the batch except the batch-wide corrector
step size, a mean over the whole batch. Jit with the batch sharded over a 1-D mesh
(`NamedSharding(mesh, P('data'))`) and XLA inserts that reduction; inside `shard_map`
the mean would be per shard (use per_sample_step=True there).
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from score_sde_knee import fast_sampling
from score_sde_knee import langevin
from score_sde_knee import sde as sde_lib

Array = jax.Array
ScoreFn = Callable[[Array, Array, Array | None], Array]
PredictFn = Callable[[Array], Array]
SampleFn = Callable[[Array, Array], Array]

ORDERS = ('predictor_first', 'corrector_first')
PREDICTORS = ('reverse_diffusion', 'ancestral')
METHODS = ('csm', 'ctm', 'unet')
SAMPLING_METHODS = ('pc',) + fast_sampling.SOLVERS  # config.sampling.method.


def _check_pc_args(t_start: float, eps: float, n_steps: int, snr: float,
                   n_corrector: int, order: str, predictor: str = 'reverse_diffusion',
                   t_jump: float = 1.0, precond: float = 0.0,
                   precond_width: float = 4.0, momentum: float = 0.0) -> None:
  if order not in ORDERS:
    raise ValueError(f'sampling order must be one of {ORDERS}, got {order!r}')
  if predictor not in PREDICTORS:
    raise ValueError(f'sampling predictor must be one of {PREDICTORS}, got {predictor!r}')
  if not 0.0 < eps < t_start <= 1.0:
    raise ValueError(
        f'PC sampler needs 0 < eps < t_start <= 1 (eps = last time, t_start = first), got '
        f'eps={eps}, t_start={t_start}')
  if int(n_steps) != n_steps or n_steps < 1:
    raise ValueError(f'PC sampler n_steps (N) must be an integer >= 1, got {n_steps}')
  if int(n_corrector) != n_corrector or n_corrector < 0:
    raise ValueError(f'PC sampler n_corrector must be an integer >= 0, got {n_corrector}')
  if snr < 0:
    raise ValueError(f'Langevin corrector snr must be >= 0, got {snr}')
  if not eps < t_jump <= 1.0:
    raise ValueError(f'PC sampler t_jump must be in (eps, 1] = ({eps}, 1], got {t_jump}')
  if precond < 0 or precond_width <= 0:
    raise ValueError(f'Langevin preconditioner needs precond >= 0 and precond_width > 0 '
                     f'(pixels), got precond={precond}, precond_width={precond_width}')
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f'Langevin corrector momentum must be in [0, 1), got {momentum}')


def pc_grid(t_start: float, eps: float, n_steps: int, t_jump: float = 1.0,
            dtype=jnp.float32) -> Array:
  """The N times of the PC grid (see the module docstring), from t_start down to eps.

  With N < 3 there is no level between the jump and eps, so t_jump is ignored.
  """
  if t_jump >= t_start or n_steps < 3:
    return jnp.linspace(t_start, eps, n_steps, dtype=dtype)
  return jnp.concatenate([jnp.array([t_start], dtype),
                          jnp.linspace(t_jump, eps, n_steps - 1, dtype=dtype)])


def _normal_like(key: Array, x: Array, shape: tuple[int, ...] | None = None) -> Array:
  """N(0, 1) noise with x's dtype and sharding (so each device draws only its shard)."""
  shape = x.shape if shape is None else shape
  return jax.random.normal(key, shape, x.dtype, out_sharding=jax.typeof(x).sharding)


def _bcast(v: Array, x: Array) -> Array:
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def pc_sample(score_fn: ScoreFn,
              sde: sde_lib.VESDE,
              x_init: Array,
              cond: Array | None,
              rng: Array,
              *,
              t_start: float = 1.0,
              eps: float = 1e-5,
              n_steps: int | None = None,
              snr: float = 0.4,
              n_corrector: int = 1,
              order: str = 'predictor_first',
              per_sample_step: bool = False,
              predictor: str = 'reverse_diffusion',
              t_jump: float = 1.0,
              precond: float = 0.0,
              precond_width: float = 4.0,
              momentum: float = 0.0,
              known: tuple[Array, Array] | None = None) -> Array:
  """Predictor-corrector sampling of the reverse VE SDE from t_start down to eps.

  Args:
    score_fn: score_fn(x, t, cond) -> score, x (B, ...), t (B,).
    sde: the VE SDE; gives sigma(t).
    x_init: (B, H, W, C) state at t_start, i.e. with noise level sigma(t_start).
    cond: passed unchanged to score_fn (None for an unconditional score).
    rng: PRNG key (see the module docstring for how it is used).
    t_start, eps: first and last time of the grid, 0 < eps < t_start <= 1.
    n_steps: N predictor steps (default sde.num_scales).
    snr: Langevin signal-to-noise ratio r; 0 turns the corrector off.
    n_corrector: Langevin steps per predictor step; 0 turns the corrector off.
    order: 'predictor_first' (paper) or 'corrector_first' (score_sde).
    per_sample_step: one corrector step size per example instead of one per batch.
    predictor: 'reverse_diffusion' (paper) or 'ancestral' (see the module docstring).
    t_jump: the grid's second time when below t_start (module docstring); meant for the
      ancestral predictor, whose step stays exact over a jump at high noise.
    precond, precond_width: > 0 preconditions the Langevin corrector with P = 1 +
      precond G, G a Gaussian low-pass of std precond_width pixels: the lowest frequencies
      take (1 + precond) times the step (langevin.py).
    momentum: > 0 makes the corrector underdamped (langevin.underdamped_step): each
      Langevin step keeps this fraction of a velocity that the predictor steps carry from
      level to level.
    known: (mask, values), each broadcastable to x: where mask is true the state is held
      at values plus noise of its level (module docstring); None = no known pixels.

  Returns:
    (B, H, W, C) noise-free mean of the last predictor step (not clipped), x_init's dtype;
    with `known`, the values on the mask.
  """
  n_steps = sde.num_scales if n_steps is None else n_steps
  _check_pc_args(t_start, eps, n_steps, snr, n_corrector, order, predictor, t_jump,
                 precond, precond_width, momentum)
  dtype = x_init.dtype
  batch = x_init.shape[0]
  ts = pc_grid(t_start, eps, n_steps, t_jump, dtype)
  sigmas = sde.sigma(ts)
  sigmas_next = jnp.concatenate([sigmas[1:], jnp.zeros((1,), dtype)])
  use_corrector = n_corrector > 0 and snr > 0

  boost = (1.0 + precond * langevin.lowpass_gain(x_init.shape[1:3], precond_width)
           if precond > 0 else None)
  underdamped = use_corrector and momentum > 0
  no_kick = jnp.zeros((batch,) + (1,) * (x_init.ndim - 1), dtype)

  def reset(x, sigma, key):
    """x with the known pixels at their values perturbed to noise level sigma (key None:
    the values themselves)."""
    if known is None:
      return x
    mask, values = known
    return jnp.where(mask, values if key is None else values + sigma * _normal_like(key, x), x)

  def corrector(x, u, t, key, n):
    def body(j, carry):
      x, u, pending = carry
      z = _normal_like(jax.random.fold_in(key, j), x)
      score = score_fn(x, t, cond)
      e = _bcast(langevin.step_size(score, z, snr, per_sample_step), x)
      if underdamped:
        return langevin.underdamped_step(x, u, pending, score, z, e, momentum, boost)
      return langevin.langevin_step(x, score, z, e, boost), u, pending
    return jax.lax.fori_loop(0, n, body, (x, u, no_kick))

  def step(i, carry):
    x, _, u = carry
    t = jnp.full((batch,), ts[i], dtype)
    key_p, key_c = jax.random.split(jax.random.fold_in(rng, i))
    # Drawn only with known pixels: the plain sampler's loop stays as it was.
    key_kc, key_kp = (None, None) if known is None else jax.random.split(
        jax.random.fold_in(rng, n_steps + 2 + i))
    pending = no_kick
    if use_corrector:
      n = n_corrector
      if order == 'predictor_first':
        # No corrector before the first predictor step: see the module docstring.
        n = jnp.where(i == 0, 0, n_corrector)
      x, u, pending = corrector(x, u, t, key_c, n)
      x = reset(x, sigmas[i], key_kc)
    var = sigmas[i] ** 2 - sigmas_next[i] ** 2
    score = score_fn(x, t, cond)
    if underdamped:  # The predictor's score ends the corrector's last leapfrog step.
      u = langevin.complete_kick(u, pending, score, boost)
    x_mean = x + var * score
    std = jnp.sqrt(var)
    if predictor == 'ancestral':
      std = std * sigmas_next[i] / sigmas[i]
    x = reset(x_mean + std * _normal_like(key_p, x), sigmas_next[i], key_kp)
    return x, reset(x_mean, 0.0, None), u

  # The velocity starts at its equilibrium law N(0, P); fold_in(rng, N) is no step's key.
  u0 = None
  if underdamped:
    u0 = _normal_like(jax.random.fold_in(rng, n_steps), x_init)
    u0 = u0 if boost is None else langevin.fourier_filter(u0, jnp.sqrt(boost))
  if known is not None:
    x_init = reset(x_init, sigmas[0], jax.random.fold_in(rng, n_steps + 1))
  _, x_mean, _ = jax.lax.fori_loop(0, n_steps, step, (x_init, x_init, u0))
  return x_mean


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


def ctm_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, cond: Array, rng: Array, *,
               channels: int = 1, known_air: bool = False, air_margin: int = 0,
               **pc_kwargs: Any) -> Array:
  """Conditional score model (paper Alg. 2): from the prior N(0, sigma_max^2 I) at t = 1.

  Args:
    score_fn: conditional score s(x, t, cond).
    cond: (B, H, W, Cc) segmentation.
    channels: image channels C of the sample.
    known_air: hold the pixels outside the segmentation at air, 0 (module docstring),
      all but those within air_margin pixels of it.
    **pc_kwargs: keyword arguments of `pc_sample` other than t_start.

  Returns:
    (B, H, W, channels) images clipped to [0, 1].
  """
  key_init, key_loop = jax.random.split(rng)
  # sde.prior_sampling(key_init, shape), drawn with cond's sharding so that on a mesh
  # with explicit axes the loop state is sharded from the start.
  x = sde.sigma_max * _normal_like(key_init, cond, cond.shape[:-1] + (channels,))
  x = pc_sample(score_fn, sde, x, cond, key_loop, t_start=1.0,
                known=air_pixels(cond, air_margin) if known_air else None, **pc_kwargs)
  return jnp.clip(x, 0.0, 1.0)


def csm_sample(score_fn: ScoreFn, sde: sde_lib.VESDE, contour: Array, rng: Array, *,
               t0: float = 0.4, known_air: bool = False, air_margin: int = 0,
               **pc_kwargs: Any) -> Array:
  """Conditional sampling with an unconditional score (paper Alg. 1, SDEdit).

  The segmentation, perturbed to noise level sigma(t0), is the starting point; the
  unconditional score (called with cond=None) takes it from t0 down to eps.

  Args:
    score_fn: unconditional score s(x, t, None).
    contour: (B, H, W, C) segmentation with the image's channel count, values in [0, 1].
    t0: start time in (eps, 1].
    known_air: hold the pixels outside the contour at air, 0 (module docstring), all but
      those within air_margin pixels of it.
    **pc_kwargs: keyword arguments of `pc_sample` other than t_start.

  Returns:
    (B, H, W, C) images clipped to [0, 1].
  """
  key_init, key_loop = jax.random.split(rng)
  x = contour + sde.sigma(t0) * _normal_like(key_init, contour)
  x = pc_sample(score_fn, sde, x, None, key_loop, t_start=t0,
                known=air_pixels(contour, air_margin) if known_air else None, **pc_kwargs)
  return jnp.clip(x, 0.0, 1.0)


def unet_sample(predict_fn: PredictFn, cond: Array) -> Array:
  """U-Net baseline: one forward pass predict_fn(cond), clipped to [0, 1]."""
  return jnp.clip(predict_fn(cond), 0.0, 1.0)


def get_sampler(config: ml_collections.ConfigDict, *,
                score_fn: ScoreFn | None = None,
                predict_fn: PredictFn | None = None,
                sde: sde_lib.VESDE | None = None) -> SampleFn:
  """The one dispatch on config.method: returns sample(cond, rng) -> (B, H, W, 1) images.

  For csm and ctm, config.sampling.method picks the solver: 'pc' uses config.sampling
  (snr, n_steps_each, order, per_sample_step, predictor, t_jump, precond, precond_width,
  momentum, known_air, air_margin, t0, eps) and config.sde.num_scales as N (a saved config
  without the fields added later, predictor, t_jump, precond, momentum, known_air,
  air_margin, gets run_config.ADDED_FIELDS' values);
  'heun' / 'dpm2' (fast_sampling.py) use (ode_steps, rho, s_churn, s_tmin, s_tmax,
  s_noise, t0). csm and ctm need score_fn (a closure over parameters); unet needs
  predict_fn and ignores rng. sde defaults to the VESDE of config.sde. The returned
  function is pure; the caller jits it. fast_sampling.nfe(config) counts its evaluations.
  """
  method = config.method
  if method not in METHODS:
    raise ValueError(f'config.method must be one of {METHODS}, got {method!r}')
  if method == 'unet':
    if predict_fn is None:
      raise ValueError("get_sampler: config.method='unet' needs predict_fn")
    return lambda cond, rng: unet_sample(predict_fn, cond)

  if score_fn is None:
    raise ValueError(f'get_sampler: config.method={method!r} needs score_fn')
  p = config.sampling
  if p.method not in SAMPLING_METHODS:
    raise ValueError(
        f'config.sampling.method must be one of {SAMPLING_METHODS}, got {p.method!r}')
  if sde is None:
    sde = sde_lib.VESDE(sigma_min=float(config.sde.sigma_min),
                        sigma_max=float(config.sde.sigma_max),
                        num_scales=int(config.sde.num_scales))
  if p.method in fast_sampling.SOLVERS:
    if p.known_air:
      raise ValueError(f'config.sampling.known_air needs sampling.method pc, got {p.method!r}')
    ode_kwargs = dict(n_steps=int(p.ode_steps), rho=float(p.rho), solver=str(p.method),
                      s_churn=float(p.s_churn), s_tmin=float(p.s_tmin),
                      s_tmax=float(p.s_tmax), s_noise=float(p.s_noise))
    # Fail at construction rather than at the first (jitted) call.
    fast_sampling.check_ode_args(
        sde, float(p.t0) if method == 'csm' else 1.0, **{
            k: ode_kwargs[k] for k in ('n_steps', 'rho', 'solver', 's_churn', 's_noise')})
    if method == 'ctm':
      return lambda cond, rng: fast_sampling.ode_ctm_sample(score_fn, sde, cond, rng,
                                                            **ode_kwargs)
    return lambda cond, rng: fast_sampling.ode_csm_sample(score_fn, sde, cond, rng,
                                                          t0=float(p.t0), **ode_kwargs)
  pc_kwargs = dict(eps=float(p.eps), n_steps=int(config.sde.num_scales), snr=float(p.snr),
                   n_corrector=int(p.n_steps_each), order=str(p.order),
                   per_sample_step=bool(p.per_sample_step),
                   predictor=str(p.predictor), t_jump=float(p.t_jump),
                   precond=float(p.precond), precond_width=float(p.precond_width),
                   momentum=float(p.momentum))
  t0 = float(p.t0)
  # Fail at construction rather than at the first (jitted) call.
  _check_pc_args(t0 if method == 'csm' else 1.0,
                 **{k: v for k, v in pc_kwargs.items() if k != 'per_sample_step'})
  air = dict(known_air=bool(p.known_air), air_margin=int(p.air_margin))
  if method == 'ctm':
    return lambda cond, rng: ctm_sample(score_fn, sde, cond, rng, **air, **pc_kwargs)
  return lambda cond, rng: csm_sample(score_fn, sde, cond, rng, t0=t0, **air, **pc_kwargs)
