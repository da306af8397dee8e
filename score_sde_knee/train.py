"""Data-parallel training: `train_and_evaluate(config, workdir)`.

    python main.py --mode=train --config=configs/ctm.py:cpu --workdir=runs/ctm

The loop is side effects only (data, checkpoints, logs, sample grids); the numerics are
the pure, jitted steps of `train_state`. The workdir gets:
  config.json           the run's config (first start; a resume checks method/condition)
  checkpoints/ preemption/   orbax checkpoints (see `checkpointing`)
  events.out.tfevents.* TensorBoard scalars (loss, grad_norm, lr, eval_loss, steps/s),
                        hparams and sample grids
  samples/step_0002000.png   condition | EMA sample | target, every sample_every steps
A resumed run continues the same data order (input_pipeline) and RNG stream (the key in
the state): stopping and resuming gives the same parameters as one uninterrupted run.
"""
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np

from score_sde_knee import checkpointing
from score_sde_knee import input_pipeline
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee.utils import progress
from score_sde_knee import train_state as ts

DatasetsFn = Callable[..., input_pipeline.Datasets]


class NonFiniteLossError(ValueError):
  """The loss or the gradient norm became NaN or Inf."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       datasets_fn: DatasetsFn | None = None) -> ts.TrainState:
  """Trains config.training.num_train_steps updates in total, resuming from workdir.

  Args:
    config: the run config (configs/<method>.py).
    workdir: where the config, checkpoints, logs and sample grids go (shared by all
      hosts of a multi-host run).
    datasets_fn: (config, start_step=int) -> input_pipeline.Datasets; default
      `input_pipeline.create_datasets`. Tests pass in-memory data here.
  Returns:
    The final train state (replicated over the mesh).
  Raises:
    NonFiniteLossError: the loss became NaN/Inf; the newest checkpoint on disk is the
      last good one.
  """
  workdir = os.fspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise OSError(f'Cannot create the workdir {workdir}: {e.strerror}. Pass a --workdir '
                  'in a writable directory.') from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise PermissionError(f'The workdir {workdir} is not writable. Pass a --workdir in a '
                          'writable directory.')
  checkpointing.check_and_save_config(config, workdir)
  t = config.training
  parallel.check_batch(t.batch_size)
  mesh = parallel.make_mesh()
  model = model_utils.create_model(config)

  ckpt = checkpointing.Checkpoints(workdir, config)
  state = ts.init_train_state(config, model, mesh)
  restored = ckpt.restore(state)
  if restored is None:
    start = 0
  else:
    state, start = restored
    if int(state.step) != start:
      raise ValueError(f'Checkpoint of step {start} in {workdir} holds state.step='
                       f'{int(state.step)}.')
  num_params = model_utils.count_params(state.params)
  logging.info('%s model (%s, %s): %d parameters; %d devices, %d processes; start at step '
               '%d of %d.', config.method, config.condition, config.scale,
               num_params, jax.device_count(), jax.process_count(), start,
               t.num_train_steps)

  datasets = (datasets_fn or input_pipeline.create_datasets)(config, start_step=start)
  if restored is not None and hasattr(datasets.train, 'set_state'):
    ckpt.restore_data(start, datasets.train)  # else create_datasets positioned it at start
  k = _steps_per_call(config, start)
  train_step = (ts.make_train_step(config, model, mesh) if k == 1
                else ts.make_multi_train_step(config, model, mesh))
  eval_step = ts.make_eval_step(config, model, mesh)
  eval_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
  sample_grid = (_make_sample_grid_fn(config, model, mesh) if t.sample_every > 0
                 else None)

  writer = _create_writer(workdir)
  if start == 0:
    writer.write_hparams({**_flatten(config.to_dict()), 'num_params': num_params})
  # Metrics stay on the device until a step that logs, evaluates, samples or saves: no host
  # sync in between, so the host prepares the next batch while the device computes. Every
  # such step first checks all unchecked losses, so no checkpoint ever holds a NaN state.
  unchecked: list[tuple[int, Any]] = []   # (first step, metrics stacked over the call)
  pending: list[dict[str, np.ndarray]] = []
  # Steps/s and the ETA are measured only between syncs (the metrics fetch below): in
  # between, steps are merely dispatched, and a rate taken there (clu's ReportProgress)
  # swung from 3x too fast to 100x too slow. The bar starts at the first sync, so the
  # compilation is not in its rate.
  bar, synced = None, None  # synced: (step, time) of the last sync
  try:
    for step in range(start + k, t.num_train_steps + 1, k):  # updates done after this call
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        if k == 1:
          batch = parallel.global_batch_from_local(next(datasets.train), mesh)
          state, metrics = train_step(state, batch)
          unchecked.append((step, metrics))
        else:
          local = [next(datasets.train) for _ in range(k)]
          batches = parallel.global_batch_from_local(
              jax.tree.map(lambda *xs: np.stack(xs), *local), mesh, stacked=True)
          state, metrics = train_step(state, batches)
          unchecked.append((step - k + 1, metrics))
      last = step == t.num_train_steps
      log, evaluate = _due(step, t.log_every) or last, _due(step, t.eval_every) or last
      sample = sample_grid is not None and (_due(step, t.sample_every) or last)
      if not (log or evaluate or sample or ckpt.due(step)):
        continue
      for first, stacked in jax.device_get(unchecked):  # leaves () or (k,)
        stacked = {name: np.atleast_1d(v) for name, v in stacked.items()}
        for i in range(len(stacked['loss'])):
          m = {name: v[i] for name, v in stacked.items()}
          _check_finite(m, first + i)
          pending.append(m)
      unchecked = []
      now, rate = time.monotonic(), {}
      if synced is not None:
        rate = {'steps_per_sec': (step - synced[0]) / max(now - synced[1], 1e-9)}
      synced = (step, now)
      if bar is None and jax.process_index() == 0:
        bar = progress.Progress(t.num_train_steps, 'train', done=step, unit='step',
                                every=0.0)
      if bar is not None:
        bar.update(step - bar.done, force=True)
      if log:
        writer.write_scalars(step, {**_mean(pending), **rate})
        pending = []
      if evaluate:
        writer.write_scalars(step, _evaluate(eval_step, state, datasets, mesh, eval_rng))
      if sample:
        _write_sample_grid(sample_grid, state, datasets, mesh, config, writer, workdir,
                           step)
      ckpt.maybe_save(step, state, data=datasets.train)
  finally:
    ckpt.close()
    writer.close()  # flushes; and ends the writer's thread
  return state


def _steps_per_call(config: ml_collections.ConfigDict, start: int) -> int:
  """config.training.steps_per_call, checked: every period must be a multiple of it."""
  t = config.training
  k = int(t.steps_per_call)
  periods = {'num_train_steps': t.num_train_steps, 'log_every': t.log_every,
             'eval_every': t.eval_every, 'sample_every': t.sample_every,
             'checkpoint_every': t.checkpoint_every,
             'preemption_every': t.preemption_every, 'resumed step': start}
  bad = {name: v for name, v in periods.items() if v % k}
  if k < 1 or bad:
    raise ValueError(f'config.training.steps_per_call={k}: expected an integer >= 1 that '
                     f'divides every period, but {bad} are not multiples of it.')
  return k


def _due(step: int, every: int) -> bool:
  """Whether a periodic action with period `every` (0 = never) runs after `step`."""
  return every > 0 and step % every == 0


def _check_finite(metrics: dict[str, Any], step: int) -> None:
  bad = {k: float(metrics[k]) for k in ('loss', 'grad_norm')
         if not np.isfinite(metrics[k])}
  if bad:
    raise NonFiniteLossError(
        f'Training diverged at step {step}: {bad}. The newest checkpoint (before this '
        f'step) is kept; lower config.optim.lr or check the data.')


def _mean(metrics: list[dict[str, Any]]) -> dict[str, float]:
  return {f'train_{k}' if k == 'loss' else k: float(np.mean([m[k] for m in metrics]))
          for k in metrics[0]}


def _evaluate(eval_step, state: ts.TrainState, datasets: input_pipeline.Datasets,
              mesh, eval_rng: jax.Array) -> dict[str, float]:
  """Validation loss of the EMA parameters: the same batches and noise every time."""
  losses = []
  for i, local in enumerate(datasets.eval_batches()):
    batch = parallel.global_batch_from_local(local, mesh)
    losses.append(eval_step(state, batch, jax.random.fold_in(eval_rng, i))['loss'])
  if not losses:
    raise ValueError('The validation stream yielded no batch (config.training.eval_batches'
                     ' must be >= 1).')
  return {'eval_loss': float(np.mean(jax.device_get(losses)))}


# --- Sample grid -------------------------------------------------------------------------


def _make_sample_grid_fn(config: ml_collections.ConfigDict, model: Any, mesh):
  """jit((ema_params, cond, rng) -> samples), everything replicated (a few images)."""
  # Imported here: a run needs the samplers (and evaluate's metrics) only for a grid.
  from score_sde_knee import evaluate  # pylint: disable=g-import-not-at-top
  rep = parallel.replicated(mesh)
  return jax.jit(evaluate.make_sample_fn(config, model),
                 in_shardings=(rep, rep, rep), out_shardings=rep)


def _write_sample_grid(sample_grid, state: ts.TrainState,
                       datasets: input_pipeline.Datasets, mesh,
                       config: ml_collections.ConfigDict, writer, workdir: str,
                       step: int) -> None:
  """Samples from the first validation conditions; rows: condition | sample | target."""
  n = min(config.training.num_grid_samples, config.training.batch_size)
  local = next(iter(datasets.eval_batches()))
  batch = parallel.global_batch_from_local(local, mesh)
  # Slicing the global (sharded) batch inside jit yields the same conditions on every host.
  first = jax.jit(lambda b: jax.tree.map(lambda x: x[:n], b),
                  out_shardings=parallel.replicated(mesh))(batch)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  samples = sample_grid(state.ema_params, first['cond'], jax.random.fold_in(rng, step))
  cond, image, samples = jax.device_get((first['cond'], first['image'], samples))
  mosaic = np.concatenate([np.concatenate([c, np.clip(s, 0, 1), x], axis=1)
                           for c, s, x in zip(cond, samples, image)], axis=0)
  writer.write_images(step, {'samples': mosaic[None]})
  if jax.process_index() == 0:
    from score_sde_knee.utils import plots  # pylint: disable=g-import-not-at-top
    plots.save_grid(os.path.join(workdir, 'samples', f'step_{step:07d}.png'),
                        [[c, s, x] for c, s, x in zip(cond, samples, image)],
                        col_titles=['condition', 'sample (EMA)', 'target'])


# --- Logging -----------------------------------------------------------------------------


def _create_writer(workdir: str):
  """TensorBoard event files in workdir + the absl log; processes other than 0 only log.

  clu's default writer where TensorFlow is installed, else the TensorFlow-free
  `event_writer.EventWriter` (same event format).
  """
  from score_sde_knee.utils import event_writer  # pylint: disable=g-import-not-at-top
  return event_writer.create_writer(workdir, just_logging=jax.process_index() > 0)


def _flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested config dict -> {'a.b': scalar}; tuples as strings (TensorBoard hparams)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v if isinstance(v, (bool, int, float, str)) else str(v)
  return out
