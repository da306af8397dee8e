"""The train state, the optimiser, and the pure train / eval steps.

Data parallel without pmap: the steps are jitted with the state replicated and the
batch split along its leading axis over a 1-D 'data' mesh (`parallel`). The loss is a
mean over the GLOBAL batch, so XLA's all-reduce averages the per-device gradients, and
the noise of every example is drawn from one key at the global batch shape (JAX's
partitionable threefry), so 1 device and 4 devices compute the same step.
"""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from score_sde_knee import losses
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import sde as sde_lib

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
LossFn = Callable[..., tuple[jax.Array, dict[str, Any]]]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs to continue exactly.

  step: int32 scalar, the number of optimiser updates done.
  params / ema_params: the model parameters and their exponential moving average
    (rate config.model.ema_rate; used for validation and sampling).
  opt_state: optax state of `make_optimizer(config)`.
  rng: uint32[2] base key; step s uses fold_in(rng, s), so the stream resumes exactly.
  """
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array


def make_sde(config: ml_collections.ConfigDict) -> sde_lib.VESDE:
  return sde_lib.VESDE(sigma_min=config.sde.sigma_min, sigma_max=config.sde.sigma_max,
                       num_scales=config.sde.num_scales)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """lr * min((count + 1) / warmup, 1): score_sde's linear warm-up; update 1 uses lr/warmup."""
  lr, warmup = config.optim.lr, config.optim.warmup
  if warmup <= 0:
    return optax.constant_schedule(lr)
  return lambda count: lr * jnp.minimum((count + 1) / warmup, 1.0)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam with the warm-up schedule."""
  o = config.optim
  return optax.chain(
      optax.clip_by_global_norm(o.grad_clip),
      optax.adam(learning_rate_schedule(config), b1=o.beta1, b2=o.beta2, eps=o.eps))


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array,
                       model: Any = None) -> TrainState:
  """Fresh parameters (EMA = parameters), optimiser state, and the training key."""
  model = model_utils.create_model(config) if model is None else model
  params_rng, train_rng = jax.random.split(rng)
  params = model_utils.init_params(model, params_rng, config)
  # Jitted: one program instead of an eager op per leaf. The EMA is a copy, not an alias,
  # because the train step donates both trees.
  opt_state, ema_params = jax.jit(lambda p: (make_optimizer(config).init(p),
                                             jax.tree.map(jnp.copy, p)))(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=ema_params,
                    opt_state=opt_state, rng=train_rng)


def train_step(state: TrainState, batch: Batch, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               ema_rate: float) -> tuple[TrainState, Metrics]:
  """One update on a global batch. Pure: jit it (see `make_train_step`).

  Metrics (scalars): loss (before the update), grad_norm (before clipping), lr (of
  this update), plus the loss's scalar aux terms.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def objective(params):
    return loss_fn(params, batch, rng, True)

  (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # EMA warm-up (as TF's ExponentialMovingAverage with num_updates): a plain 0.999 EMA
  # still holds 37 % of the untrained initial weights after 1000 steps, which ruins the
  # samples of short CPU runs; from step ~9000 on the rate is exactly ema_rate.
  step = state.step.astype(jnp.float32)
  decay = jnp.minimum(ema_rate, (1.0 + step) / (10.0 + step))
  ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                            state.ema_params, params)
  metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads),
             'lr': jnp.asarray(schedule(state.step), jnp.float32)}
  metrics.update(_scalar_aux(aux))
  new_state = state.replace(step=state.step + 1, params=params, ema_params=ema_params,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, rng: jax.Array, *,
              loss_fn: LossFn) -> Metrics:
  """Validation loss of the EMA parameters on one global batch (noise drawn from rng)."""
  loss, aux = loss_fn(state.ema_params, batch, rng, False)
  return {'loss': loss, **_scalar_aux(aux)}


def _scalar_aux(aux: Any) -> Metrics:
  if not isinstance(aux, dict):
    return {}
  return {k: v for k, v in aux.items() if k != 'loss' and jnp.ndim(v) == 0}


def make_loss_fn(config: ml_collections.ConfigDict, model: Any) -> LossFn:
  return losses.get_loss_fn(model, make_sde(config), config)


def make_train_step(config: ml_collections.ConfigDict, model: Any,
                    mesh: jax.sharding.Mesh, *, donate: bool = True):
  """jit(train_step) with the state replicated and donated, the batch split on 'data'.

  donate=False only for benchmarks/train_options.py (what donation saves).
  """
  fn = functools.partial(train_step, loss_fn=make_loss_fn(config, model),
                         tx=make_optimizer(config),
                         schedule=learning_rate_schedule(config),
                         ema_rate=config.model.ema_rate)
  rep, dat = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(fn, in_shardings=(rep, dat), out_shardings=(rep, rep),
                 donate_argnums=0 if donate else ())


def make_multi_train_step(config: ml_collections.ConfigDict, model: Any,
                          mesh: jax.sharding.Mesh):
  """jit of config.training.steps_per_call (k) train steps in one call, via lax.scan.

  (state, batches with leaves (k, B, ...)) -> (state, metrics with leaves (k,)). One
  dispatch and one program for k updates: on a GPU, small models stop waiting on the host.
  Unrolled: as a rolled while loop the same updates ran 15x slower on XLA:CPU
  (benchmarks/RESULTS.md); unrolling costs k times the compile time instead.
  """
  fn = functools.partial(train_step, loss_fn=make_loss_fn(config, model),
                         tx=make_optimizer(config),
                         schedule=learning_rate_schedule(config),
                         ema_rate=config.model.ema_rate)
  rep = parallel.replicated(mesh)
  dat = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.DATA_AXIS))
  return jax.jit(lambda state, batches: jax.lax.scan(fn, state, batches, unroll=True),
                 in_shardings=(rep, dat), out_shardings=(rep, rep), donate_argnums=0)


def make_eval_step(config: ml_collections.ConfigDict, model: Any,
                   mesh: jax.sharding.Mesh):
  """jit(eval_step): (state, batch, rng) -> metrics."""
  fn = functools.partial(eval_step, loss_fn=make_loss_fn(config, model))
  rep, dat = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(fn, in_shardings=(rep, dat, rep), out_shardings=rep)


def init_train_state(config: ml_collections.ConfigDict, model: Any,
                     mesh: jax.sharding.Mesh) -> TrainState:
  """`create_train_state(config, PRNGKey(config.seed))` replicated on the mesh.

  Every process of a multi-host run computes the same state from the same seed.
  """
  state = create_train_state(config, jax.random.PRNGKey(config.seed), model)
  return parallel.replicate(state, mesh)
