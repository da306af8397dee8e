"""Grain input pipeline over knee_drr's ArrayRecord files: per-host {'image', 'cond'} batches.

No TensorFlow: `tfds.data_source` reads the ArrayRecord shards with random access and Grain
shuffles, shards, batches and prefetches them.

Every host reads its own contiguous shard of the split (the first n // hosts examples for
host 0, and so on; the rest are dropped) and yields its own share of the global batch,
`config.training.batch_size // jax.process_count()` examples;
`parallel.global_batch_from_local` joins the shares.

Resumable data order. The training stream is a `grain.MapDataset`: the host's shard,
shuffled with a seed derived from (config.seed, host) and reshuffled every epoch, epochs
concatenated, cut into batches. Batch i is a function of i alone (a batch may hold the end
of one epoch and the start of the next), so a run resumed at step s sees exactly the batches
an uninterrupted run would from step s on. The iterator's state (the index of the next
batch) is saved with every checkpoint (`checkpointing.Checkpoints`) and restored from it;
`create_datasets(start_step=s)` positions a fresh iterator at s, which is the same place.

Arrays: 'image' (B, H, W, 1) float32 in [0, 1]; 'cond' (B, H, W, 1) float32, the
config.condition segmentation with values {0, 0.5, 1} (fractional where an area resize
to config.data.image_size averages a boundary).

`load_split` reads a whole split (or a fixed subset of views) into numpy in file order,
with both segmentations and the patient and angle of each image: what evaluation,
reports and sampling from the test masks use.
"""
import dataclasses
from typing import Any, Callable, Iterable, Iterator, Sequence

import grain
import jax
import ml_collections
import numpy as np

from score_sde_knee import run_config
from score_sde_knee.utils import resize

Batch = dict[str, np.ndarray]

# The shuffle seed of host h: seed * _SEED_MUL + h (Grain reseeds every epoch from it).
_SEED_MUL = 1_000_003


@dataclasses.dataclass(frozen=True)
class Datasets:
  """What training reads.

  train: infinite iterator of per-host batches, positioned at the requested step; a Grain
    iterator (get_state / set_state) when read from knee_drr, any iterator in tests.
  eval_batches: returns a fresh iterable of config.training.eval_batches per-host
    validation batches, the same ones every call (validation loss is comparable).
  num_train_examples: this host's shard size of the train split.
  """
  train: Iterator[Batch]
  eval_batches: Callable[[], Iterable[Batch]]
  num_train_examples: int


def create_datasets(config: ml_collections.ConfigDict, *, start_step: int = 0,
                    process_index: int | None = None,
                    process_count: int | None = None) -> Datasets:
  """Builds the training and validation streams of `knee_drr/<config.data.builder_config>`.

  Args:
    config: the run config (data.*, training.batch_size / eval_batches, condition, seed).
    start_step: the global step the first training batch is for (resume).
    process_index, process_count: this host and the number of hosts (default: JAX's).
  Raises:
    FileNotFoundError: the data set has not been built, or was built as tfrecord.
    ValueError: the batch does not split over hosts, or a host's shard is empty.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  batch = config.training.batch_size
  if batch % process_count:
    raise ValueError(f'config.training.batch_size={batch} must be a multiple of the number '
                     f'of processes {process_count}.')
  per_host = batch // process_count
  builder = _builder(config)
  shards = {}
  for split in ('train', 'validation'):
    shards[split] = host_shard(_source(builder, split, config), process_index, process_count)
    if not len(shards[split]):
      raise ValueError(f'The {split} split of {_name(config)} has no examples for host '
                       f'{process_index} of {process_count}.')
  return datasets_from_sources(config, shards['train'], shards['validation'],
                               per_host=per_host, start_step=start_step,
                               process_index=process_index)


def datasets_from_sources(config: ml_collections.ConfigDict, train: Sequence[Any],
                          validation: Sequence[Any], *, per_host: int, start_step: int = 0,
                          process_index: int = 0) -> Datasets:
  """The streams of `create_datasets` over this host's own examples: random-access
  sequences (a host shard, or any subset of a split) of knee_drr examples."""
  preprocess = _preprocess_fn(config)
  train_ds = train_dataset(grain.MapDataset.source(train), per_host=per_host,
                           seed=config.seed, process_index=process_index).map(preprocess)
  iterator = iter(train_ds.to_iter_dataset(grain.ReadOptions(
      num_threads=int(config.data.read_threads),
      prefetch_buffer_size=int(config.data.prefetch))))
  position(iterator, start_step)
  val = (grain.MapDataset.source(validation).repeat()
         .batch(per_host, drop_remainder=True).map(preprocess))
  val_batches = [val[i] for i in range(config.training.eval_batches)]
  return Datasets(train=iterator, eval_batches=lambda: iter(val_batches),
                  num_train_examples=len(train))


def host_shard(source: Sequence[Any], process_index: int,
               process_count: int) -> grain.MapDataset:
  """Host process_index's contiguous, equal share of source (the remainder dropped)."""
  n = len(source) // process_count
  return grain.MapDataset.source(source)[process_index * n:(process_index + 1) * n]


def train_dataset(shard: grain.MapDataset, *, per_host: int, seed: int,
                  process_index: int = 0) -> grain.MapDataset:
  """The infinite, step-addressable training stream of per-host batches (see module doc):
  element i is the batch of step i."""
  if not len(shard):
    raise ValueError(f'The training shard of host {process_index} is empty.')
  return (shard.shuffle(seed=seed * _SEED_MUL + process_index)
          .repeat(reseed_each_epoch=True).batch(per_host, drop_remainder=True))


def position(iterator: grain.DatasetIterator, step: int) -> None:
  """Moves an iterator of `train_dataset` so that its next batch is the one of `step`."""
  state = iterator.get_state()
  if set(state) != {'next_index'}:  # Grain's state of an iterator over a MapDataset
    raise RuntimeError(f'Unexpected Grain iterator state {state}: cannot position it.')
  iterator.set_state({'next_index': int(step)})


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
  stride = int(config.eval.view_stride if view_stride is None else view_stride)
  if stride < 1:
    raise ValueError(f'config.eval.view_stride={stride}: expected an integer >= 1.')
  source = _source(_builder(config), split, config)
  if not len(source):
    raise ValueError(f'The {split} split of {_name(config)} has no examples.')
  examples = [source[i] for i in range(len(source))]
  keep = np.arange(len(examples))
  if stride > 1:
    keep = np.sort(_every_nth_view(np.array([_text(ex['patient_id']) for ex in examples]),
                                   np.array([ex['angle_deg'] for ex in examples], np.float32),
                                   stride))
  if num_images > 0:
    keep = keep[:num_images]
  size = int(config.data.image_size)
  examples = [examples[i] for i in keep]
  out = {k: np.stack([resize.area_resize(np.asarray(ex[k], np.float32), size)
                      for ex in examples]) for k in ('image', 'contour', 'contour_bone')}
  out['patient_id'] = np.array([_text(ex['patient_id']) for ex in examples])
  out['angle_deg'] = np.array([ex['angle_deg'] for ex in examples], np.float32)
  return out


def _text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def _every_nth_view(patient_id: np.ndarray, angle_deg: np.ndarray, n: int) -> np.ndarray:
  """Indices of the views whose rank by angle within their patient is a multiple of n."""
  keep = []
  for pid in np.unique(patient_id):
    idx = np.flatnonzero(patient_id == pid)
    keep.extend(idx[np.argsort(angle_deg[idx], kind='stable')][::n])
  return np.asarray(keep, dtype=np.int64)


def _name(config: ml_collections.ConfigDict) -> str:
  return f'{config.data.name}/{run_config.data_spec(config)}'  # knee_drr/phantom_64:1.1.0


def _builder(config: ml_collections.ConfigDict):
  # Importing the builder module registers 'knee_drr' with TFDS.
  # pylint: disable-next=g-import-not-at-top,unused-import
  import datasets.knee_drr.knee_drr_dataset_builder
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = _name(config)
  try:
    builder = tfds.builder(name, data_dir=config.data.data_dir or None)
  except AssertionError as e:  # TFDS's way of saying 'no such version'
    raise ValueError(f'{name}: {e} (config.data.version='
                     f"{config.data.get('version', '')!r})") from None
  from datasets.knee_drr import build  # pylint: disable=g-import-not-at-top
  spec, data_dir = run_config.data_spec(config), config.data.data_dir
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'The data set {name} is not built in {builder.data_dir}. Build it first: '
        f'{build.build_command(spec, data_dir)}')
  if not build.has_array_record(builder):
    raise FileNotFoundError(
        f'The data set {name} in {builder.data_dir} was built as '
        f'{builder.info.file_format.value}, which Grain cannot read; add ArrayRecord '
        f'files beside it (the existing files are kept): '
        f'{build.build_command(spec, data_dir)} --convert')
  return builder


def _source(builder, split: str, config: ml_collections.ConfigDict):
  if split not in builder.info.splits:
    raise ValueError(f'{_name(config)} has no split {split!r} '
                     f'(splits: {sorted(builder.info.splits)})')
  return builder.as_data_source(split=split)


def _preprocess_fn(config: ml_collections.ConfigDict) -> Callable[[dict], Batch]:
  """A decoded example (or a batch of them) -> {'image', 'cond'} resized to image_size."""
  size = int(config.data.image_size)
  condition = config.condition

  def preprocess(example: dict) -> Batch:
    if condition not in example:
      raise ValueError(f'config.condition={condition!r} is not a feature of the data set '
                       f'(features: {sorted(example)}).')
    return {'image': resize.area_resize(np.asarray(example['image'], np.float32), size),
            'cond': resize.area_resize(np.asarray(example[condition], np.float32), size)}

  return preprocess
