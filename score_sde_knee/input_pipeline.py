"""tf.data input pipeline: per-host shards of `knee_drr`, as {'image', 'cond'} batches.

Every host reads its own shard (`tfds.split_for_jax_process`) and yields its own share
of the global batch, `config.training.batch_size // jax.process_count()` examples;
`parallel.global_batch_from_local` joins the shares.

Resumable data order. The training stream is a function of the step, so a run resumed
at step s sees exactly the batches an uninterrupted run would see from step s on:
epoch e is the host's shard shuffled with a seed derived from (config.seed, e, host)
(`reshuffle_each_iteration=False`, deterministic tf.data), epochs are concatenated,
and a resume at step s starts at epoch s * b // n and skips (s * b) % n examples
(b the per-host batch, n the shard size). Nothing is stored in the checkpoint, and the
skip costs at most one epoch of reading. A batch may hold the end of one epoch and the
start of the next.

Arrays: 'image' (B, H, W, 1) float32 in [0, 1]; 'cond' (B, H, W, 1) float32, the
config.condition segmentation with values {0, 0.5, 1} (fractional where an area resize
to config.data.image_size averages a boundary).

`load_split` reads a whole split (or a fixed subset of views) into numpy in file order,
with both segmentations and the patient and angle of each image: what evaluation,
reports and sampling from the test masks use.
"""
import dataclasses
from typing import Callable, Iterable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from score_sde_knee import run_config

Batch = dict[str, np.ndarray]

# Seeds of epoch e on host h: seed * _SEED_MUL + e * _EPOCH_MUL + h (int64, no overflow
# for any realistic seed).
_SEED_MUL = 1_000_003
_EPOCH_MUL = 7_919


@dataclasses.dataclass(frozen=True)
class Datasets:
  """What training reads.

  train: infinite iterator of per-host batches, positioned at the requested step.
  eval_batches: returns a fresh iterable of config.training.eval_batches per-host
    validation batches, the same ones every call (validation loss is comparable).
  num_train_examples: this host's shard size of the train split.
  """
  train: Iterator[Batch]
  eval_batches: Callable[[], Iterable[Batch]]
  num_train_examples: int


def hide_gpus_from_tf() -> None:
  """TensorFlow is only the data loader: keep it off the GPUs so JAX has all the memory."""
  tf.config.set_visible_devices([], 'GPU')


def create_datasets(config: ml_collections.ConfigDict, *, start_step: int = 0,
                    process_index: int | None = None,
                    process_count: int | None = None) -> Datasets:
  """Builds the training and validation streams of `knee_drr/<config.data.builder_config>`.

  Args:
    config: the run config (data.*, training.batch_size / eval_batches, condition, seed).
    start_step: the global step the first training batch is for (resume).
    process_index, process_count: this host and the number of hosts (default: JAX's).
  Raises:
    FileNotFoundError: the data set has not been built.
    ValueError: the batch does not split over hosts, or a host's shard is empty.
  """
  hide_gpus_from_tf()
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  batch = config.training.batch_size
  if batch % process_count:
    raise ValueError(f'config.training.batch_size={batch} must be a multiple of the number '
                     f'of processes {process_count}.')
  per_host = batch // process_count
  builder = _builder(config)
  train_split = tfds.split_for_jax_process('train', process_index=process_index,
                                           process_count=process_count,
                                           drop_remainder=True)
  val_split = tfds.split_for_jax_process('validation', process_index=process_index,
                                         process_count=process_count, drop_remainder=True)
  train_base = _read(builder, train_split, config)
  val_base = _read(builder, val_split, config)
  n = _num_examples(train_base, f'{_name(config)} {train_split}')
  if _num_examples(val_base, f'{val_split}') == 0:
    raise ValueError(f'The validation split of {_name(config)} has no examples for host '
                     f'{process_index} of {process_count}.')

  train = train_stream(train_base, n, per_host=per_host, seed=config.seed,
                       start_step=start_step, process_index=process_index,
                       prefetch=config.data.prefetch,
                       shuffle_buffer=config.data.shuffle_buffer)
  val = (val_base.repeat().batch(per_host, drop_remainder=True)
         .take(config.training.eval_batches).cache())
  return Datasets(train=train.as_numpy_iterator(),
                  eval_batches=val.as_numpy_iterator, num_train_examples=n)


def train_stream(base: tf.data.Dataset, n: int, *, per_host: int, seed: int,
                 start_step: int, process_index: int = 0, prefetch: int = 2,
                 shuffle_buffer: int = 2000) -> tf.data.Dataset:
  """The infinite, step-addressable training stream of per-host batches (see module doc).

  `base` must yield the same `n` examples in the same order every time it is iterated.
  """
  if n <= 0:
    raise ValueError(f'The training shard of host {process_index} is empty.')
  consumed = start_step * per_host
  first_epoch, offset = divmod(consumed, n)
  buffer = max(1, min(shuffle_buffer, n))

  def epoch(e):
    epoch_seed = (tf.constant(seed * _SEED_MUL + process_index, tf.int64)
                  + tf.cast(e, tf.int64) * _EPOCH_MUL)
    return base.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  ds = ds.skip(offset).batch(per_host, drop_remainder=True).prefetch(prefetch)
  return ds.with_options(_options())


def load_split(config: ml_collections.ConfigDict, split: str, num_images: int = 0,
               view_stride: int | None = None) -> dict[str, np.ndarray]:
  """Examples of a split in file order, as numpy: every view_stride-th view, then the first
  num_images (0 = all).

  view_stride (None = config.eval.view_stride, default 1): keeps, for each patient, the
  views whose rank by angle is a multiple of it (6 with 60 views: 0, 36, ..., 324 deg), so
  a subset covers every test patient and every side of the knee.
  Returns 'image', 'contour', 'contour_bone' (n, S, S, 1) float32 with S =
  config.data.image_size (area-resized as in training), 'patient_id' (n,) str,
  'angle_deg' (n,) float32.
  """
  hide_gpus_from_tf()
  name = _name(config)
  builder = _builder(config)
  if not builder.is_prepared():
    raise _not_built(builder, config)
  if split not in builder.info.splits:
    raise ValueError(f'{name} has no split {split!r} (splits: {sorted(builder.info.splits)})')
  # One pass, so no cache: TFDS' automatic one, cut short by take(), warned on every eval.
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(options=_options(),
                                                      try_autocache=False))
  stride = int(config.eval.view_stride if view_stride is None else view_stride)
  if stride < 1:
    raise ValueError(f'config.eval.view_stride={stride}: expected an integer >= 1.')
  if num_images > 0 and stride == 1:
    ds = ds.take(num_images)
  size = int(config.data.image_size)
  out = {k: [] for k in ('image', 'contour', 'contour_bone', 'patient_id', 'angle_deg')}
  for ex in tfds.as_numpy(ds):
    for k in ('image', 'contour', 'contour_bone'):
      x = np.asarray(ex[k], np.float32)
      if x.shape[:2] != (size, size):
        x = tf.image.resize(x, (size, size), method='area').numpy()
      out[k].append(x)
    out['patient_id'].append(ex['patient_id'].decode())
    out['angle_deg'].append(np.float32(ex['angle_deg']))
  if not out['image']:
    raise ValueError(f'The {split} split of {name} has no examples.')
  out = {k: np.stack(v) if k != 'patient_id' else np.array(v) for k, v in out.items()}
  if stride > 1:
    keep = np.sort(_every_nth_view(out['patient_id'], out['angle_deg'], stride))
    out = {k: v[keep[:num_images] if num_images > 0 else keep] for k, v in out.items()}
  return out


def _every_nth_view(patient_id: np.ndarray, angle_deg: np.ndarray, n: int) -> np.ndarray:
  """Indices of the views whose rank by angle within their patient is a multiple of n."""
  keep = []
  for pid in np.unique(patient_id):
    idx = np.flatnonzero(patient_id == pid)
    keep.extend(idx[np.argsort(angle_deg[idx], kind='stable')][::n])
  return np.asarray(keep, dtype=np.int64)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  # No autotuning thread: deleting an iterator waits for it, and in about half the CPU
  # demos on an AMD EPYC host that wait left the process idle for ~50 s after training
  # (gdb: ~RootDataset::Iterator blocked on the thread in Model::OptimizeLoop). The
  # pipeline is not what limits speed (~1000 batches/s either way against ~1.5 training
  # steps/s; benchmarks/RESULTS.md).
  options.autotune.enabled = False
  return options


def _name(config: ml_collections.ConfigDict) -> str:
  return f'{config.data.name}/{run_config.data_spec(config)}'  # knee_drr/phantom_64:1.1.0


def _not_built(builder: tfds.core.DatasetBuilder,
               config: ml_collections.ConfigDict) -> FileNotFoundError:
  from datasets.knee_drr import build  # pylint: disable=g-import-not-at-top
  return FileNotFoundError(
      f'The data set {_name(config)} is not built in {builder.data_dir}. Build it first: '
      f'{build.build_command(run_config.data_spec(config), config.data.data_dir)}')


def _builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  # Importing the builder module registers 'knee_drr' with TFDS.
  # pylint: disable-next=g-import-not-at-top,unused-import
  import datasets.knee_drr.knee_drr_dataset_builder
  name = _name(config)
  try:
    return tfds.builder(name, data_dir=config.data.data_dir or None)
  except AssertionError as e:  # TFDS's way of saying 'no such version'
    raise ValueError(f'{name}: {e} (config.data.version='
                     f"{config.data.get('version', '')!r})") from None


def _read(builder: tfds.core.DatasetBuilder, split: str,
          config: ml_collections.ConfigDict) -> tf.data.Dataset:
  """One pass over `split` in file order, mapped to {'image', 'cond'}."""
  read_config = tfds.ReadConfig(options=_options())
  # Caught, not checked up front with is_prepared() as load_split does: under
  # tfds.testing.mock_data (the tests) a data set is served without being prepared.
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
  except AssertionError as e:
    if 'could not find data' not in str(e):
      raise
    raise _not_built(builder, config) from None
  # Options again here, not only through read_config, which TFDS may not apply (its
  # mock_data does not): every stream built on this read is then deterministic and untuned.
  return (ds.map(_preprocess_fn(config), num_parallel_calls=tf.data.AUTOTUNE)
          .with_options(_options()))


def _preprocess_fn(config: ml_collections.ConfigDict):
  size = config.data.image_size
  condition = config.condition

  def resize(x):
    x = tf.cast(x, tf.float32)
    if x.shape[0] != size or x.shape[1] != size:
      x = tf.image.resize(x, (size, size), method='area')
    return x

  def preprocess(example):
    if condition not in example:
      raise ValueError(f'config.condition={condition!r} is not a feature of the data set '
                       f'(features: {sorted(example)}).')
    return {'image': resize(example['image']), 'cond': resize(example[condition])}

  return preprocess


def _num_examples(ds: tf.data.Dataset, what: str) -> int:
  n = int(ds.cardinality())
  if n == tf.data.INFINITE_CARDINALITY:
    raise ValueError(f'{what}: expected a finite data set.')
  if n == tf.data.UNKNOWN_CARDINALITY:
    n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
  return n
