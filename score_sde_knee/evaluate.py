"""Paper Table I evaluation: one sample per test image, MAE / PSNR / SSIM / Dice, resumable.

    python main.py --mode=eval --workdir=runs/ctm_c                        # saved config
    python main.py --mode=eval --workdir=runs/csm --condition=contour_bone # CSM: either one
    python main.py --mode=eval --workdir=runs/ctm_c --sampler=fast         # 49 evaluations

Output, one folder per condition (one unconditional CSM model serves both conditions, so
its workdir holds two; every other method holds the one it was trained on):
  workdir/eval/<condition>/batches/batch_00012.npz  finished batches (samples, metrics)
  workdir/eval/<condition>/metrics.json             summary + per-image metrics
  workdir/eval/metrics.json                         the same, for the training condition
  workdir/eval/<condition>/samples.npz              'samples' (n, H, W, 1), 'indices' (n,)
  workdir/eval_samplers/<condition>/<setting>/      the same for --sampler=<setting>

Images: the config.eval.split of knee_drr in file order (deterministic), every
config.eval.view_stride-th view of each patient, the first config.eval.num_images of them
(0 = all), resized to config.data.image_size as in
training. Batch b (config.eval.batch_size images, the last one padded and the padding
dropped) is sampled with key fold_in(fold_in(PRNGKey(config.seed), _EVAL_STREAM), b):
a sample depends on (checkpoint, condition, seed, batch size) only, not on the device
count (checked with 1 and 2 devices), so an interrupted
evaluation resumes at the next unfinished batch and ends with the same numbers. A batch
file is reused only if it was made with the same checkpoint step, sampler settings and
images (its `fingerprint`); otherwise it is sampled again.

Metrics per image (float64, `metrics`): MAE and PSNR (data range 1) against the true
DRR, SSIM (skimage's definition), Dice of the sample's contour (> 0.1) with the
condition's; for contour_bone also Dice of the sample's bone region (Otsu within the
body) with the condition's bone, and that Dice for the true DRR as its reference.
"""
import functools
import json
import os
from collections.abc import Callable
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from score_sde_knee import checkpointing
from score_sde_knee.utils import files
from score_sde_knee import input_pipeline
from score_sde_knee import methods
from score_sde_knee import metrics
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee.utils import progress
from score_sde_knee import run_config
from score_sde_knee import sampler_setting
from score_sde_knee import sampling
from score_sde_knee import train_state as ts

Params = Any
EVAL_DIR = 'eval'
SAMPLERS_DIR = 'eval_samplers'  # --sampler's and the sampler benchmarks' evaluations
_EVAL_STREAM = 3  # fold_in tag: keeps eval noise apart from training (0-2) streams.


# --- Config and checkpoint ---------------------------------------------------------------


def eval_condition(config: ml_collections.ConfigDict) -> str:
  """The segmentation to sample from: config.eval.condition, or the training condition.

  Raises ValueError for an unknown condition, or for a conditional model (ctm, unet)
  asked for a condition other than the one it was trained on.
  """
  condition = config.eval.condition or config.condition
  if condition not in methods.CONDITIONS:
    raise ValueError(f'config.eval.condition must be one of {methods.CONDITIONS} (or empty '
                     f'for the training condition), got {condition!r}')
  if condition not in methods.get(config.method).conditions(config.condition):
    raise ValueError(
        f'The {config.method} model was trained on condition={config.condition!r} and '
        f'cannot be evaluated on {condition!r}; only csm (unconditional) can.')
  return condition


def output_dir(workdir: str, condition: str, step: int | None = None,
               root: str = EVAL_DIR) -> str:
  """workdir/<root>/<condition>: the newest checkpoint's; a `step`'s goes beside it, in
  workdir/<root>/step_<step>/<condition> (root: eval, or a benchmark's own folder)."""
  if step is None:
    return os.path.join(workdir, root, condition)
  return os.path.join(workdir, root, f'step_{step}', condition)


def sampler_dir(workdir: str, condition: str, setting: str, step: int | None = None) -> str:
  """workdir/eval_samplers/[step_S/]<condition>/<setting as a folder name>: where another
  sampler's evaluation goes, beside the run's own (shared by --sampler and the benchmarks)."""
  return os.path.join(output_dir(workdir, condition, step, root=SAMPLERS_DIR),
                      sampler_setting.setting_dir(setting))


def has_checkpoint(workdir: str) -> bool:
  for sub in (checkpointing.KEPT_DIR, checkpointing.PREEMPTION_DIR):
    d = os.path.join(workdir, sub)
    if os.path.isdir(d) and any(name.isdigit() for name in os.listdir(d)):
      return True
  return False


def restore_ema_params(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh,
                       step: int | None = None) -> tuple[Params, int]:
  """(EMA parameters replicated on mesh, step) of checkpoint `step` (default: the newest).

  The whole train state is restored (its structure is what orbax stored) and all but the
  EMA parameters dropped.
  """
  if not has_checkpoint(workdir):
    raise FileNotFoundError(
        f'No checkpoint in {workdir} ({checkpointing.KEPT_DIR}/ or '
        f'{checkpointing.PREEMPTION_DIR}/). Train one first: python main.py --mode=train '
        f'--config=configs/{config.method}.py:{config.condition},{config.scale}'
        f' --workdir={workdir}')
  model = model_utils.create_model(config)
  abstract = jax.eval_shape(lambda r: ts.create_train_state(config, r, model),
                            jax.random.PRNGKey(0))
  rep = parallel.replicated(mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                          abstract)
  ckpt = checkpointing.Checkpoints(workdir, config)
  try:
    state, step = ckpt.restore(abstract, step)
  finally:
    ckpt.close()
  return state.ema_params, int(step)


def make_sample_fn(config: ml_collections.ConfigDict,
                   model: Any = None) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
  """sample(params, cond, rng) -> (B, H, W, 1) images in [0, 1]; pure, the caller jits it.

  cond (B, H, W, 1) is the segmentation: CTM's condition, CSM's SDEdit start y, the
  U-Net's input.
  """
  model = model_utils.create_model(config) if model is None else model
  method = methods.get(config.method)
  if method.sampling == 'forward':
    predict = model_utils.get_predict_fn(model)
    return lambda params, cond, rng: sampling.get_sampler(
        config, predict_fn=lambda c: predict(params, c))(cond, rng)
  sde = ts.make_sde(config)
  score = model_utils.get_score_fn(model, sde, method,
                                   scale_by_sigma=bool(config.model.scale_by_sigma))
  return lambda params, cond, rng: sampling.get_sampler(
      config, score_fn=lambda x, t, c: score(params, x, t, c), sde=sde)(cond, rng)


# Sampler fields added after sample caches were written, at the values that reproduce them.
_UNRECORDED_AT = {f: run_config.ADDED_FIELDS[f'sampling.{f}']
                  for f in ('t_jump', 'precond', 'precond_width', 'momentum')}


def sampler_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What, besides the checkpoint and the images, decides the samples (for metrics.json).

  config.sampling (every field, so other solvers' settings are recorded too), N =
  config.sde.num_scales, the seed, and t0 = the start time actually used (1 for ctm).
  """
  sampling_kind = methods.get(config.method).sampling
  if sampling_kind == 'forward':
    return {'method': 'forward', 'N': None, 'snr': None, 'order': None,
            'per_sample_step': None, 't0': None, 'eps': None, 'seed': int(config.seed)}
  settings = {**config.sampling.to_dict(), 'N': int(config.sde.num_scales),
              'seed': int(config.seed)}
  # Left out at those values, so the caches (keyed on these settings) stay valid.
  for field, no_op in _UNRECORDED_AT.items():
    if settings.get(field) == no_op:
      del settings[field]
  if sampling_kind == 'conditional':  # from pure noise: config.sampling.t0 is SDEdit's
    settings['t0'] = 1.0
  return json.loads(json.dumps(settings))  # plain JSON types (tuples -> lists)


# --- Metrics -----------------------------------------------------------------------------


def image_metrics(samples: np.ndarray, images: np.ndarray, cond: np.ndarray,
                  condition: str) -> dict[str, np.ndarray]:
  """Per-image metrics, each (B,) float64: mae, psnr, ssim, dice (+ dice_bone, ...).

  samples, images, cond: (B, H, W, 1) in [0, 1]; cond the condition's segmentation.
  """
  out = {'mae': metrics.mae(samples, images), 'psnr': metrics.psnr(samples, images),
         'ssim': metrics.ssim(samples, images),
         'dice': metrics.mask_adherence(samples, cond)['dice_contour']}
  if condition == 'contour_bone':
    bone = np.asarray(cond) >= 0.75
    out['dice_bone'] = metrics.dice(metrics.bone_mask(samples), bone)
    out['dice_bone_truth'] = metrics.dice(metrics.bone_mask(images), bone)
  return out


# --- Evaluation --------------------------------------------------------------------------


def evaluate(config: ml_collections.ConfigDict, workdir: str, *,
             max_batches: int | None = None,
             out_dir: str | None = None,
             step: int | None = None,
             sampler: str | None = None) -> dict[str, Any] | None:
  """Samples the eval split with a checkpoint's EMA parameters; writes metrics.

  Args:
    config: the run config (usually the workdir's saved one).
    workdir: the training run's directory.
    max_batches: sample at most this many new batches, then stop without a summary (to
      split a long evaluation into jobs; a later call resumes).
    out_dir: where batches and metrics go instead of workdir/eval/<condition> (e.g. to
      compare samplers on one checkpoint without replacing the run's own evaluation).
    step: the checkpoint to evaluate (default: the newest); results then go to
      workdir/eval/step_<step>/<condition> unless out_dir says otherwise.
    sampler: a preset (paper, fast, fast-air) or a setting `solver:n[:name=value,...]` to
      sample with instead of the config's; results then go to sampler_dir(...) unless
      out_dir says otherwise, so the run's own evaluation is never replaced.
  Returns:
    The metrics.json content, or None if stopped by max_batches before the end.
  """
  workdir = os.fspath(workdir)
  condition = eval_condition(config)
  if sampler:
    config, setting = sampler_setting.apply(config, sampler, condition)
    out_dir = sampler_dir(workdir, condition, setting, step) if out_dir is None else out_dir
  e = config.eval
  mesh = parallel.make_mesh()
  batch_size = int(e.batch_size)
  if batch_size <= 0 or batch_size % jax.device_count():
    raise ValueError(f'config.eval.batch_size={batch_size} must be a positive multiple of '
                     f'the number of devices {jax.device_count()}.')
  own_dir = out_dir is None and step is None  # the run's own evaluation
  out_dir = output_dir(workdir, condition, step) if out_dir is None else os.fspath(out_dir)
  params, step = restore_ema_params(config, workdir, mesh, step)
  data = input_pipeline.load_split(config, e.split, int(e.num_images))
  n = len(data['image'])
  num_batches = -(-n // batch_size)
  settings = sampler_settings(config)

  dat = parallel.data_sharding(mesh)
  sample = jitted_sample_fn(config, mesh)
  base_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), _EVAL_STREAM)

  def fingerprint(indices: np.ndarray) -> str:
    return json.dumps({'checkpoint_step': step, 'condition': condition, 'sampler': settings,
                       'batch_size': batch_size, 'data': run_config.data_spec(config),
                       'split': e.split, 'image_size': int(config.data.image_size),
                       'view_stride': int(e.view_stride),
                       'indices': indices.tolist()}, sort_keys=True)

  batches, todo = [], []
  for b in range(num_batches):
    indices = np.arange(b * batch_size, min(n, (b + 1) * batch_size))
    done = _load_batch(_batch_path(out_dir, b), fingerprint(indices))
    batches.append(done)
    if done is None:
      todo.append(b)
  bar = progress.Progress(n, f'eval {config.method}/{condition}', unit='image',
                          done=sum(len(x['indices']) for x in batches if x is not None),
                          quiet=jax.process_index() > 0)
  if todo:
    logging.info('eval %s/%s, checkpoint step %d: %d of %d batches to sample.',
                 config.method, condition, step, len(todo), num_batches)
  for count, b in enumerate(todo):
    if max_batches is not None and count >= max_batches:
      return None
    indices = np.arange(b * batch_size, min(n, (b + 1) * batch_size))
    padded = np.concatenate([indices, np.full(batch_size - len(indices), indices[-1])])
    cond = global_array(data[condition][padded], dat)
    out = fetch(sample(params, cond, jax.random.fold_in(base_rng, b)))[:len(indices)]
    result = {'samples': out.astype(np.float32), 'indices': indices,
              **image_metrics(out, data['image'][indices], data[condition][indices],
                              condition)}
    if jax.process_index() == 0:
      files.write_npz(_batch_path(out_dir, b), fingerprint=np.array(fingerprint(indices)),
                      **result)
    batches[b] = result
    bar.update(len(indices))

  summary = _summarise(config, condition, step, settings, data, batches)
  if jax.process_index() == 0:
    files.write_json(os.path.join(out_dir, 'metrics.json'), summary)
    if own_dir and condition == config.condition:  # the run's own condition: documented place
      files.write_json(os.path.join(workdir, EVAL_DIR, 'metrics.json'), summary)
    files.write_npz(os.path.join(out_dir, 'samples.npz'),
                    samples=np.concatenate([x['samples'] for x in batches]),
                    indices=np.concatenate([x['indices'] for x in batches]))
  logging.info('eval %s/%s: n=%d, MAE %.4f +- %.4f, PSNR %.2f +- %.2f dB -> %s',
               config.method, condition, n, summary['mae_mean'], summary['mae_std'],
               summary['psnr_mean'], summary['psnr_std'], out_dir)
  return summary


def jitted_sample_fn(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                     per_example: bool = False):
  """jit(make_sample_fn) with params replicated and the batch split over 'data'.

  per_example=False: (params, cond (B, S, S, 1), rng) -> (B, S, S, 1), one key for the
    batch (the PC corrector's step size is batch-wide, as in score_sde).
  per_example=True: (params, cond, keys (B, 2)) -> (B, S, S, 1), every sample drawn on
    its own from its own key (vmapped), whatever else is in the batch.
  Cached by the config minus eval.*, so evaluating both CSM conditions, or resuming, in
  one process compiles once.
  """
  return _jitted_sample_fn(_sampler_key(config), mesh, per_example)


@functools.lru_cache(maxsize=4)
def _jitted_sample_fn(config_json: str, mesh: jax.sharding.Mesh, per_example: bool):
  config = ml_collections.ConfigDict(json.loads(config_json))
  sample = make_sample_fn(config)
  rep, dat = parallel.replicated(mesh), parallel.data_sharding(mesh)
  if not per_example:
    return jax.jit(sample, in_shardings=(rep, dat, rep), out_shardings=dat)
  one = lambda params, cond, key: sample(params, cond[None], key)[0]
  return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)), in_shardings=(rep, dat, dat),
                 out_shardings=dat)


def _sampler_key(config: ml_collections.ConfigDict) -> str:
  """The config minus what the sampler does not read: eval.* (e.g. CSM's condition) and
  the seed (the key is an argument), so repeated draws with other seeds compile once."""
  d = config.to_dict()
  d.pop('eval', None)
  d.pop('seed', None)
  return json.dumps(d, sort_keys=True)


def _batch_path(out_dir: str, b: int) -> str:
  return os.path.join(out_dir, 'batches', f'batch_{b:05d}.npz')


def _load_batch(path: str, fingerprint: str) -> dict[str, np.ndarray] | None:
  """A finished batch's arrays, or None if absent, unreadable or made differently."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as z:
      if str(z['fingerprint']) != fingerprint:
        logging.info('%s was made with other settings or another checkpoint: resampling.',
                     path)
        return None
      return {k: z[k] for k in z.files if k != 'fingerprint'}
  except (OSError, ValueError, KeyError) as err:
    logging.warning('Ignoring unreadable %s (%s).', path, err)
    return None


def global_array(x: np.ndarray, sharding: jax.sharding.NamedSharding) -> jax.Array:
  """A global array from a host array every process holds in full."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def fetch(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _summarise(config: ml_collections.ConfigDict, condition: str, step: int,
               settings: dict[str, Any], data: dict[str, np.ndarray],
               batches: list[dict[str, np.ndarray]]) -> dict[str, Any]:
  names = [k for k in batches[0] if k not in ('samples', 'indices')]
  per = {k: np.concatenate([x[k] for x in batches]) for k in names + ['indices']}
  summary: dict[str, Any] = {
      'method': config.method, 'condition': condition,
      'trained_condition': config.condition, 'scale': config.scale,
      'data': f'{config.data.name}/{run_config.data_spec(config)}',
      'image_size': int(config.data.image_size), 'split': config.eval.split,
      'view_stride': int(config.eval.view_stride),
      'n': int(len(per['indices'])), 'checkpoint_step': step, 'sampler': settings,
      'batch_size': int(config.eval.batch_size)}
  for k in names:
    s = metrics.summarise(per[k])
    summary[f'{k}_mean'], summary[f'{k}_std'] = s['mean'], s['std']
  summary['per_image'] = [
      {'index': int(i), 'patient_id': str(data['patient_id'][i]),
       'angle_deg': float(data['angle_deg'][i]),
       **{k: float(per[k][j]) for k in names}}
      for j, i in enumerate(per['indices'])]
  return summary
