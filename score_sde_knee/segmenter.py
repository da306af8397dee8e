"""A small U-Net that segments knee radiographs into air, soft tissue and bone.

What it is for: measuring whether synthetic radiographs help a segmentation model trained
on little data. It trains on the union of any knee_drr-style data sets (real, or exported
by `main.py --mode=sample --export_tfds`) and reports the per-image Dice of the bone and of
the whole leg on a test split (labels, metrics, augmentation and batches:
score_sde_knee/segmenter_data.py).

    python -m score_sde_knee.segmenter \\
        --train ~/tensorflow_datasets/knee_drr/phantom_64/1.1.0,synth/knee_drr_synthetic/1.0.0 \\
        --test ~/tensorflow_datasets/knee_drr/phantom_64/1.1.0 --workdir runs/seg --steps 2000

writes runs/seg/metrics.json (the config, the data, per-image dice_bone and dice_leg and
their mean and std over test images) and prints a one-line summary. Training checkpoints
params and optimizer state to runs/seg/checkpoints every `checkpoint_every` steps and at
the end; a rerun resumes from the newest one exactly (batch i is a function of i).

Loss: pixel cross-entropy plus dice_weight x (1 - soft Dice), the soft Dice averaged over
the three classes and the images, each class smoothed by 1 pixel so that a class absent
from both prediction and truth costs nothing. The default dice_weight 0.5 is a common
choice: on a small problem the weight made no difference (knee_drr/phantom_64 2.0.0 at
image_size 32, 20 training views, 300 steps of batch 8 with augmentation, 30 test views,
seeds 0 and 1: test bone Dice 0.9645-0.9666 and leg Dice 0.9975-0.9981 for weights 0, 0.5
and 1, the seeds differing more than the weights).
"""
import argparse
import dataclasses
import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
from flax import struct
from flax.training import train_state
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from score_sde_knee import input_pipeline
from score_sde_knee import layers
from score_sde_knee import segmenter_data as sd
from score_sde_knee.utils import files
from score_sde_knee.utils import progress

CONFIG_FILE = 'segmenter_config.json'
CHECKPOINT_DIR = 'checkpoints'
METRICS_FILE = 'metrics.json'
# Fields a resumed run may change: they do not alter the checkpoints' meaning.
_MAY_CHANGE = ('steps', 'checkpoint_every')


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
  """Training settings. image_size 0 trains at the data's stored size; otherwise images
  and masks are area-resized to image_size x image_size first."""
  steps: int = 2000
  batch_size: int = 16
  lr: float = 1e-3
  features: int = 16
  levels: int = 3
  dice_weight: float = 0.5
  seed: int = 0
  augment: bool = True
  image_size: int = 0
  checkpoint_every: int = 500


# ---------------------------------------------------------------------------------------------
# Model and loss
# ---------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
  """Two 3x3 conv-GroupNorm-swish layers."""
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(2):
      x = nn.swish(layers.group_norm(layers.conv3x3(x, self.features)))
    return x


class SegUNet(nn.Module):
  """(B, H, W, 1) image -> (B, H, W, num_classes) logits.

  Level l (0 .. levels - 1) works at 1 / 2**l of the input size with features * 2**l
  channels; stride-2 convolutions go down, stride-2 transposed convolutions come back up
  and the skip of the same level is concatenated before the block.
  """
  features: int = 16
  levels: int = 3
  num_classes: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.levels < 1:
      raise ValueError(f'SegUNet: levels={self.levels}; expected >= 1.')
    f = 2 ** (self.levels - 1)
    if x.ndim != 4 or x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f'SegUNet: the input has shape {x.shape}; expected (B, H, W, C) with '
                       f'H and W divisible by 2**(levels-1) = {f} (levels={self.levels}).')
    skips = []
    for level in range(self.levels):
      if level:
        x = nn.Conv(self.features * 2**level, (3, 3), strides=(2, 2), padding='SAME')(x)
      x = ConvBlock(self.features * 2**level)(x)
      skips.append(x)
    for level in reversed(range(self.levels - 1)):
      x = nn.ConvTranspose(self.features * 2**level, (2, 2), strides=(2, 2))(x)
      x = ConvBlock(self.features * 2**level)(jnp.concatenate([x, skips[level]], axis=-1))
    return layers.conv1x1(x, self.num_classes)


def segmentation_loss(logits: jax.Array, labels: jax.Array,
                      dice_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean pixel cross-entropy + dice_weight * (1 - soft Dice); see the module doc."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  probs = jax.nn.softmax(logits)
  onehot = jax.nn.one_hot(labels, logits.shape[-1])
  inter = jnp.sum(probs * onehot, axis=(1, 2))
  total = jnp.sum(probs, axis=(1, 2)) + jnp.sum(onehot, axis=(1, 2))
  soft_dice = jnp.mean((2 * inter + 1) / (total + 1))
  loss = ce + dice_weight * (1 - soft_dice)
  acc = jnp.mean(jnp.argmax(logits, -1) == labels)
  return loss, {'loss': loss, 'ce': ce, 'soft_dice': soft_dice, 'accuracy': acc}


class SegTrainState(train_state.TrainState):
  dice_weight: float = struct.field(pytree_node=False, default=0.5)


@jax.jit
def train_step(state: SegTrainState,
               batch: dict[str, jax.Array]) -> tuple[SegTrainState, dict[str, jax.Array]]:
  """One Adam step on {'image': (B, H, W, 1) float32, 'labels': (B, H, W) int32}."""
  def loss_fn(params):
    logits = state.apply_fn({'params': params}, batch['image'])
    return segmentation_loss(logits, batch['labels'], state.dice_weight)
  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), metrics


# Cached so that equal configs share one model and one optimizer object: the train state's
# static fields then compare equal and train_step compiles once per shape.
@functools.lru_cache(maxsize=None)
def _model(features: int, levels: int) -> SegUNet:
  return SegUNet(features=features, levels=levels, num_classes=sd.NUM_CLASSES)


@functools.lru_cache(maxsize=None)
def _optimizer(lr: float) -> optax.GradientTransformation:
  return optax.adam(lr)


@functools.lru_cache(maxsize=None)
def _init_fn(features: int, levels: int):
  return jax.jit(_model(features, levels).init)


def create_state(config: SegmenterConfig, image_size: int) -> SegTrainState:
  """A fresh train state for image_size x image_size images, initialised from config.seed."""
  model = _model(config.features, config.levels)
  x = jnp.zeros((1, image_size, image_size, 1), jnp.float32)
  # The 'rbg' generator: XLA:CPU compiles the init of this U-Net in ~2 s with it and in
  # ~12 s with threefry (~0.8 s per layer). Its bits are fixed for a seed on one backend,
  # which is all a resume needs; another backend may draw other initial weights.
  key = jax.random.key(config.seed, impl='rbg')
  params = _init_fn(config.features, config.levels)(key, x)['params']
  state = SegTrainState.create(apply_fn=model.apply, params=params,
                               tx=_optimizer(config.lr), dice_weight=config.dice_weight)
  # An array step (not TrainState's Python 0) checkpoints and compiles like later ones.
  return state.replace(step=jnp.zeros((), jnp.int32))


@functools.lru_cache(maxsize=None)
def _predict_fn(features: int, levels: int):
  model = _model(features, levels)
  return jax.jit(lambda params, x: jnp.argmax(model.apply({'params': params}, x), -1))


def predict(params: Any, config: SegmenterConfig, images: Any) -> np.ndarray:
  """(B, H, W, 1) images -> int32 (B, H, W) labels."""
  fn = _predict_fn(config.features, config.levels)
  return np.asarray(fn(params, jnp.asarray(images, jnp.float32)), np.int32)


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------


def _saved_config_diff(workdir: str, config: SegmenterConfig) -> dict[str, Any] | None:
  """Fields (saved, now) where the workdir's config differs from `config`; None if none saved."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  saved = files.read_json(path)
  return {k: (saved.get(k), v) for k, v in dataclasses.asdict(config).items()
          if k not in _MAY_CHANGE and saved.get(k) != v}


def _restore(manager: ocp.CheckpointManager, step: int, like: SegTrainState) -> SegTrainState:
  """Checkpoint `step`, in the structure, shapes and shardings of the state `like`."""
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        like)
  return manager.restore(step, args=ocp.args.StandardRestore(target))


def _check_saved_config(workdir: str, config: SegmenterConfig) -> None:
  diff = _saved_config_diff(workdir, config)
  if diff:
    raise ValueError(f'{os.path.join(workdir, CONFIG_FILE)}: the workdir was trained with '
                     f'another config (field: (saved, now)): {diff}. Use another --workdir.')
  files.write_json(os.path.join(workdir, CONFIG_FILE), dataclasses.asdict(config))


def train_segmenter(config: SegmenterConfig, sources: Sequence[Any],
                    workdir: str | None = None) -> Any:
  """Trains config.steps steps on the union of `sources`; returns the params.

  sources: random-access sources (len() and [i] -> a knee_drr example dict), sampled
  uniformly over their union. With a workdir, resumes from its newest checkpoint.
  """
  batches = sd.train_batches(sources, batch_size=config.batch_size, seed=config.seed,
                             augment_=config.augment, image_size=config.image_size)
  size = int(batches[0]['image'].shape[1])
  state = create_state(config, size)
  start, manager = 0, None
  if workdir:
    _check_saved_config(workdir, config)
    manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    latest = manager.latest_step()
    if latest is not None and latest > config.steps:
      manager.close()
      raise ValueError(f'{workdir}: holds a checkpoint of step {latest}, past steps='
                       f'{config.steps}. Pass steps >= {latest} or another --workdir.')
    if latest is not None:
      state, start = _restore(manager, latest, state), int(latest)
  iterator = iter(batches.to_iter_dataset(grain.ReadOptions(num_threads=4,
                                                            prefetch_buffer_size=8)))
  input_pipeline.position(iterator, start)
  bar = progress.Progress(config.steps, 'segmenter training', done=min(start, config.steps),
                          unit='step')
  for step in range(start + 1, config.steps + 1):
    state, metrics = train_step(state, next(iterator))
    if step % 50 == 0 or step == config.steps:
      bar.desc = f"segmenter training (loss {float(metrics['loss']):.4f})"
    if manager is not None and (step % config.checkpoint_every == 0 or step == config.steps):
      if not np.isfinite(float(metrics['loss'])):
        raise FloatingPointError(f'segmenter training: the loss at step {step} is not '
                                 f'finite ({float(metrics["loss"])}); lower --lr.')
      manager.save(step, args=ocp.args.StandardSave(state))
    bar.update()
  if manager is not None:
    manager.wait_until_finished()
    manager.close()
  return state.params


def restore_params(config: SegmenterConfig, workdir: str, image_size: int) -> Any:
  """The params of the newest checkpoint under `workdir`, a run of `config` on image_size
  images; reads only.

  Raises:
    FileNotFoundError: no segmenter config or no checkpoint there.
    ValueError: the workdir was trained with another config.
  """
  diff = _saved_config_diff(workdir, config)
  if diff is None:
    raise FileNotFoundError(f'{workdir}: no {CONFIG_FILE}; expected a segmenter workdir.')
  if diff:
    raise ValueError(f'{os.path.join(workdir, CONFIG_FILE)}: trained with another config '
                     f'(field: (saved, now)): {diff}.')
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    latest = manager.latest_step()
    if latest is None:
      raise FileNotFoundError(f'{os.path.join(workdir, CHECKPOINT_DIR)}: no checkpoint.')
    return _restore(manager, latest, create_state(config, image_size)).params
  finally:
    manager.close()


def evaluate_segmenter(params: Any, config: SegmenterConfig, source: Any,
                       batch_size: int = 32) -> dict[str, Any]:
  """Per-image Dice over every example of `source`, in its order.

  Returns 'dice_bone' and 'dice_leg' (n,) float64, their '<name>_mean' and '<name>_std'
  (ddof=0), and 'num_images'.
  """
  n = len(source)
  if not n:
    raise ValueError('evaluate_segmenter: the source is empty.')
  bone, leg = [], []
  for lo in range(0, n, batch_size):
    exs = [sd.example_arrays(source[i], config.image_size)
           for i in range(lo, min(lo + batch_size, n))]
    images = np.stack([e['image'] for e in exs])
    # A short last batch is padded to batch_size: one compiled shape for every batch.
    pad = np.zeros((batch_size - len(exs),) + images.shape[1:], np.float32)
    pred = predict(params, config, np.concatenate([images, pad]))[:len(exs)]
    true = np.stack([e['labels'] for e in exs])
    bone.append(sd.dice(pred, true, sd.BONE))
    leg.append(sd.dice(pred, true, sd.LEG))
  out: dict[str, Any] = {'num_images': n}
  for name, values in (('dice_bone', np.concatenate(bone)), ('dice_leg', np.concatenate(leg))):
    s = sd.summary(values)
    out[name], out[f'{name}_mean'], out[f'{name}_std'] = values, s['mean'], s['std']
  return out


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def open_source(path: str, split: str) -> Any:
  """The random-access source of `split` of the TFDS version directory `path`.

  Raises:
    FileNotFoundError: path is not a built TFDS version directory.
    ValueError: no such split, no contour_bone feature, or not readable with random access.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(os.path.join(path, 'dataset_info.json')):
    raise FileNotFoundError(f'{path}: no dataset_info.json; expected a TFDS version '
                            'directory such as <data_dir>/knee_drr/phantom_64/1.1.0.')
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise ValueError(f'{path}: no split {split!r} (splits: {sorted(builder.info.splits)}).')
  features = sorted(builder.info.features.keys())
  if 'image' not in features or 'contour_bone' not in features:
    raise ValueError(f"{path}: features {features}; expected 'image' and 'contour_bone'.")
  from datasets.knee_drr import build  # pylint: disable=g-import-not-at-top
  if not build.has_array_record(builder):
    raise ValueError(f'{path}: built as {builder.info.file_format.value}, which cannot be '
                     'read with random access; it must hold ArrayRecord files (for knee_drr: '
                     'python -m datasets.knee_drr.build <config>:<version> --convert).')
  return builder.as_data_source(split=split)


def run(config: SegmenterConfig, train_dirs: Sequence[str], test_dir: str, workdir: str,
        split_train: str = 'train', split_test: str = 'test') -> dict[str, Any]:
  """Trains on train_dirs, evaluates on test_dir and writes workdir/metrics.json."""
  train_sources = [open_source(p, split_train) for p in train_dirs]
  test_source = open_source(test_dir, split_test)
  params = train_segmenter(config, train_sources, workdir)
  result = evaluate_segmenter(params, config, test_source)
  record = {'config': dataclasses.asdict(config), 'train': list(train_dirs),
            'split_train': split_train, 'test': test_dir, 'split_test': split_test,
            'num_train_examples': [len(s) for s in train_sources],
            **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in result.items()}}
  files.write_json(os.path.join(workdir, METRICS_FILE), record)
  return record


def _bool(text: str) -> bool:
  if text.lower() not in ('true', 'false', '1', '0'):
    raise argparse.ArgumentTypeError(f'{text!r}: expected true or false')
  return text.lower() in ('true', '1')


def main(argv=None):
  defaults = SegmenterConfig()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--train', required=True, help='comma-separated TFDS version directories '
                 'to train on (their union)')
  p.add_argument('--test', required=True, help='TFDS version directory to evaluate on')
  p.add_argument('--split_train', default='train', help='split of the --train data sets')
  p.add_argument('--split_test', default='test', help='split of the --test data set')
  p.add_argument('--workdir', required=True, help='checkpoints and metrics.json go here')
  for field in dataclasses.fields(SegmenterConfig):
    value = getattr(defaults, field.name)
    if isinstance(value, bool):
      p.add_argument(f'--{field.name}', type=_bool, default=value,
                     help=f'true or false (default {value})')
    else:
      p.add_argument(f'--{field.name}', type=type(value), default=value,
                     help=f'(default {value})')
  a = p.parse_args(argv)
  config = SegmenterConfig(**{f.name: getattr(a, f.name)
                              for f in dataclasses.fields(SegmenterConfig)})
  try:
    r = run(config, [s for s in a.train.split(',') if s], a.test, a.workdir,
            a.split_train, a.split_test)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  print(f"dice_bone {r['dice_bone_mean']:.4f} ± {r['dice_bone_std']:.4f}, dice_leg "
        f"{r['dice_leg_mean']:.4f} ± {r['dice_leg_std']:.4f} over {r['num_images']} test "
        f"images ({os.path.join(a.workdir, METRICS_FILE)})")


if __name__ == '__main__':
  from score_sde_knee.utils import xla_cpu  # pylint: disable=g-import-not-at-top
  xla_cpu.configure()
  progress.quiet_library_info()
  main()
