"""From a config to a network, its parameters, and the score or prediction it gives.

The network (ncsnpp.NCSNpp) knows no method: it maps its input channels, and sigma when it
is noise-conditioned, to one image channel. The method's record (methods.py) says what the
input holds; `get_score_fn` wraps the network into a score as EDM's preconditioning wraps
its backbone: sigma = sde.sigma(t), the segmentation appended as a channel for CTM, and the
output divided by sigma (config.model.scale_by_sigma, the VE score parametrisation).
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from score_sde_knee import methods
from score_sde_knee import ncsnpp
from score_sde_knee import sde as sde_lib

Array = jax.Array
Params = Any

_CPU_FAST_COMPILE = {'xla_backend_optimization_level': 0}


def create_model(config: ml_collections.ConfigDict) -> ncsnpp.NCSNpp:
  """NCSNpp built from config.model and the method's record (typed fields only)."""
  method = methods.get(config.method)
  m = config.model
  return ncsnpp.NCSNpp(
      nf=int(m.nf),
      ch_mult=tuple(int(c) for c in m.ch_mult),
      num_res_blocks=int(m.num_res_blocks),
      attn_resolutions=tuple(int(r) for r in m.attn_resolutions),
      dropout=float(m.dropout),
      fir_kernel=tuple(int(k) for k in m.fir_kernel),
      skip_rescale=bool(m.skip_rescale),
      resblock_type=str(m.resblock_type),
      progressive=str(m.progressive),
      progressive_input=str(m.progressive_input),
      progressive_combine=str(m.progressive_combine),
      init_scale=float(m.init_scale),
      fourier_scale=float(m.fourier_scale),
      out_channels=methods.IMAGE_CHANNELS,
      noise_conditioned=method.noise_conditioned,
  )


def init_params(model: ncsnpp.NCSNpp, rng: Array,
                config: ml_collections.ConfigDict) -> Params:
  """Parameters of `model` for (1, S, S, C_in) inputs, S = config.data.image_size.

  Pure: `jax.eval_shape(lambda r: init_params(model, r, config), rng)` gives the shapes
  without allocating, and it may be called inside a caller's jit. Called eagerly, it is
  jitted so that XLA drops the forward pass that init traces.
  """
  size = int(config.data.image_size)
  channels = methods.get(config.method).input_channels
  x = jnp.zeros((1, size, size, channels), jnp.float32)
  sigma = jnp.ones((1,), jnp.float32)

  def init(key):
    return model.init({'params': key}, x, sigma, train=False)['params']

  if isinstance(rng, jax.core.Tracer):
    # Already traced (eval_shape, or a caller's jit with shardings): compile options may
    # only be given to a top-level jit.
    return init(rng)
  # One random draw per parameter makes a large program that XLA's CPU backend optimises
  # for a long time (~5x longer than with its optimisation off), for a function run once.
  options = _CPU_FAST_COMPILE if jax.default_backend() == 'cpu' else None
  return jax.jit(init, compiler_options=options)(rng)


def _apply(model: ncsnpp.NCSNpp, params: Params, x: Array, sigma: Array | None, train: bool,
           rng: Array | None, compute_dtype: str = 'float32',
           divide_by_sigma: bool = False) -> Array:
  rngs = {'dropout': rng} if rng is not None else {}
  if compute_dtype != 'float32':
    params, x = cast_params(params, compute_dtype), x.astype(compute_dtype)
  out = model.apply({'params': params}, x, sigma, train=train, rngs=rngs)
  if divide_by_sigma:
    # Before the cast back: with a weakly typed sigma (t from Python floats) the division
    # is done in the compute dtype, which the bfloat16 runs made so far reproduce bit for bit.
    out = out / sigma[:, None, None, None]
  return out.astype(jnp.float32)


def cast_params(params: Params, dtype: str) -> Params:
  """Parameters in `dtype` for mixed-precision compute; the gradient flows back to the
  float32 originals through the cast. The Fourier frequencies stay float32: 2 pi W log(sigma)
  reaches hundreds of radians, where bfloat16's 8-bit mantissa is off by whole turns."""
  def cast(path, p):
    keep = any('GaussianFourierProjection' in str(getattr(k, 'key', '')) for k in path)
    return p if keep else p.astype(dtype)
  return jax.tree.map_with_path(cast, params)


def get_score_fn(model: ncsnpp.NCSNpp, sde: sde_lib.VESDE, method: methods.Method,
                 compute_dtype: str = 'float32', *,
                 scale_by_sigma: bool = True) -> Callable[..., Array]:
  """score_fn(params, x, t, cond, *, train=False, rng=None) -> score, all (B, H, W, 1).

  t: (B,) times in (0, 1]; sigma = sde.sigma(t) is what the network sees. cond: the
  segmentation (B, H, W, 1) in data space; appended to x along channels when
  method.cond_input (CTM), ignored otherwise (CSM; may be None). rng: dropout key, needed
  only when train=True and dropout > 0. compute_dtype: 'float32', or 'bfloat16' for mixed
  precision (float32 in and out). scale_by_sigma: the score is the network's output
  divided by sigma (config.model.scale_by_sigma), else the output itself.
  """
  if not method.noise_conditioned:
    raise ValueError(f'get_score_fn: method {method.name!r} has no score (its network sees '
                     'no noise); use get_predict_fn')

  def score_fn(params: Params, x: Array, t: Array, cond: Array | None, *,
               train: bool = False, rng: Array | None = None) -> Array:
    sigma = sde.sigma(t)
    if method.cond_input:
      if cond is None:
        raise ValueError(f'score_fn: method {method.name!r} needs cond (B, H, W, 1), got None')
      x = jnp.concatenate([x, cond.astype(x.dtype)], axis=-1)
    return _apply(model, params, x, sigma, train, rng, compute_dtype, scale_by_sigma)

  return score_fn


def get_predict_fn(model: ncsnpp.NCSNpp,
                   compute_dtype: str = 'float32') -> Callable[..., Array]:
  """predict_fn(params, cond, *, train=False, rng=None) -> image (B, H, W, 1), unclipped."""
  if model.noise_conditioned:
    raise ValueError('get_predict_fn needs a network without noise input '
                     '(noise_conditioned=False, the U-Net)')

  def predict_fn(params: Params, cond: Array, *, train: bool = False,
                 rng: Array | None = None) -> Array:
    return _apply(model, params, cond, None, train, rng, compute_dtype)

  return predict_fn


def count_params(params: Params) -> int:
  """Total number of scalars in a parameter tree."""
  return int(sum(leaf.size for leaf in jax.tree.leaves(params)))
