"""Grain over ArrayRecord against the earlier tf.data pipeline over tfrecord; prints JSON.

    python -m benchmarks.input_pipeline [--sizes 64,256] [--batches 200] [--repeats 2]
        [--data_dir DIR] [--version 2.0.0] [--step_batches 20]

For each size (64: knee_drr/phantom_64 read as the cpu config reads it, batch 16; 256:
phantom_256 as the paper config, batch 16) the data set is built as tfrecord if missing and
ArrayRecord files are added beside (`datasets.knee_drr.build`), so both pipelines read the
same examples from the same data dir:
- grain: `score_sde_knee.input_pipeline.create_datasets` (ArrayRecord, no TensorFlow);
- tfdata: the tf.data pipeline training used before (its read, decode, TFDS auto-cache,
  per-epoch seeded shuffle, batch and prefetch, reproduced below) over the tfrecord files.
Each run is a fresh process (so its peak RSS is its own), grain and tfdata alternating:
`--batches` batches of `next(train)` timed after 5 warm-up batches; batches/s, images/s and
peak RSS (MB) before the pipeline's imports, after them, and at the end.

At 64 px only (a 256 px step takes minutes on a CPU), the cpu-scale CTM train step
(`train_state.make_train_step`) is timed over `--step_batches` steps after 2 warm-up
steps, fed (a) the same host batch every step (no pipeline), (b) Grain, (c) tf.data, one
process each, alternating `--repeats` times; `fed_ratio` = median seconds per step fed /
without a pipeline, and `fed` says whether that is within 10 % (the noise of shared cores;
other load on them moves a step by far more, so run it on a quiet machine).
"""
import argparse
import datetime
import glob
import importlib.metadata
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Iterator

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from benchmarks import machine
from configs import ctm
from datasets.knee_drr import build  # also registers knee_drr with TFDS
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import run_config
from score_sde_knee import train_state as ts
from score_sde_knee.utils import xla_cpu

PIPELINES = ('grain', 'tfdata')
SCALES = {64: 'cpu', 256: 'paper'}  # image size -> the config whose data fields are read
WARMUP_BATCHES = 5
WARMUP_STEPS = 2
# config.data.shuffle_buffer of the tf.data pipeline, per scale (the field is gone).
_TF_SHUFFLE_BUFFER = {'paper': 2000, 'cpu': 1000, 'test': 16}
# Seeds of epoch e on host h in the tf.data pipeline: seed * _SEED_MUL + e * _EPOCH_MUL + h.
_SEED_MUL = 1_000_003
_EPOCH_MUL = 7_919
_TFDS_AUTOCACHE_BYTES = 250 * 2**20  # TFDS caches smaller data sets read in file order


def config_for(size: int, data_dir: str, version: str) -> ml_collections.ConfigDict:
  """The CTM contour_bone config whose data fields read knee_drr/phantom_<size>."""
  if size not in SCALES:
    raise ValueError(f'--sizes: {size} is not one of {sorted(SCALES)}')
  c = ctm.get_config(f'contour_bone,{SCALES[size]}')
  c.data.data_dir, c.data.version = data_dir, version
  assert c.data.builder_config == f'phantom_{size}' and c.data.image_size == size, c.data
  return c


def ensure_data(spec: str, data_dir: str) -> None:
  """Builds knee_drr/<spec> as tfrecord unless built, then adds ArrayRecord files."""
  # Asked for tfrecord, TFDS refuses a data set that has ArrayRecord files: only build
  # what is not there.
  if not tfds.builder(f'knee_drr/{spec}', data_dir=data_dir or None).is_prepared():
    build.build(spec, data_dir or None, file_format='tfrecord')
  build.convert(spec, data_dir or None)


def make_iterator(pipeline: str, config: ml_collections.ConfigDict) -> Iterator[dict]:
  """The training stream of `pipeline` (grain | tfdata): per-host numpy batches."""
  if pipeline == 'grain':
    from score_sde_knee import input_pipeline  # pylint: disable=g-import-not-at-top
    return input_pipeline.create_datasets(config).train
  if pipeline == 'tfdata':
    return _tf_train_iterator(config)
  raise ValueError(f'pipeline {pipeline!r}: expected one of {PIPELINES}')


def _max_rss_mb() -> float:
  """This process's peak RSS so far: VmHWM, which starts afresh at exec. (ru_maxrss of a
  child counts its parent's RSS at the fork: the data build's here.)"""
  try:
    with open('/proc/self/status', encoding='utf-8') as f:
      kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
  except (OSError, StopIteration):
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return round(kb / 1024, 1)


def measure(pipeline: str, config: ml_collections.ConfigDict, batches: int) -> dict:
  """Times `batches` batches of one pipeline after WARMUP_BATCHES; peak RSS on the way:
  before the pipeline's own imports (JAX and TFDS, which both use, already in), after them
  (TensorFlow, or Grain and the input pipeline) and at the end."""
  rss_before = _max_rss_mb()
  # pylint: disable=g-import-not-at-top,unused-import
  if pipeline == 'tfdata':
    import tensorflow  # noqa: F401
  else:
    from score_sde_knee import input_pipeline  # noqa: F401  (imports Grain)
  # pylint: enable=g-import-not-at-top,unused-import
  rss_imported = _max_rss_mb()
  t0 = time.perf_counter()
  it = make_iterator(pipeline, config)
  for _ in range(WARMUP_BATCHES):
    batch = next(it)
  start_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  dt = time.perf_counter() - t0
  b = int(batch['image'].shape[0])
  return {'pipeline': pipeline, 'batch_size': b, 'image_shape': list(batch['image'].shape[1:]),
          'batches_timed': batches, 'start_s': round(start_s, 3),
          'batches_per_s': round(batches / dt, 2), 'images_per_s': round(batches * b / dt, 1),
          'rss_before_mb': rss_before, 'rss_imported_mb': rss_imported,
          'max_rss_mb': _max_rss_mb(), 'pipeline_rss_mb': round(_max_rss_mb() - rss_before, 1)}


def step_time(feeder: str, config: ml_collections.ConfigDict, steps: int) -> dict:
  """Seconds per train step fed by `feeder` (none | grain | tfdata), as training feeds it:
  dispatched asynchronously, waited for once after the timed loop."""
  mesh = parallel.make_mesh()
  model = model_utils.create_model(config)
  state = ts.init_train_state(config, model, mesh)
  step_fn = ts.make_train_step(config, model, mesh)
  if feeder == 'none':
    rng = np.random.default_rng(0)
    b, s = parallel.check_batch(config.training.batch_size), config.data.image_size
    fixed = {'image': rng.random((b, s, s, 1), dtype=np.float32),
             'cond': (rng.integers(0, 3, (b, s, s, 1)) / 2).astype(np.float32)}
    next_batch = lambda: fixed
  else:
    it = make_iterator(feeder, config)
    next_batch = lambda: next(it)
  for _ in range(WARMUP_STEPS):  # compiles
    state, metrics = step_fn(state, parallel.global_batch_from_local(next_batch(), mesh))
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_fn(state, parallel.global_batch_from_local(next_batch(), mesh))
  jax.block_until_ready(metrics)
  dt = time.perf_counter() - t0
  return {'feeder': feeder, 'steps_timed': steps, 'step_s': round(dt / steps, 4),
          'loss': float(metrics['loss']), 'max_rss_mb': _max_rss_mb()}


# ---- the tf.data pipeline training used before Grain ------------------------------------

def _tf_train_iterator(config: ml_collections.ConfigDict) -> Iterator[dict]:
  """Its train stream on one host: as its create_datasets built it, train split only."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow only reads data
  spec = run_config.data_spec(config)
  builder = tfds.builder(f'knee_drr/{spec}', data_dir=config.data.data_dir or None)
  if not builder.is_prepared():
    raise FileNotFoundError(f'knee_drr/{spec} is not built in {builder.data_dir}: '
                            f'{build.build_command(spec, config.data.data_dir)} '
                            f'--file_format tfrecord')
  n = builder.info.splits['train'].num_examples
  stream = _tf_train_stream(_tf_read(builder, 'train', config), n,
                            per_host=config.training.batch_size, seed=config.seed,
                            prefetch=config.data.prefetch,
                            shuffle_buffer=_TF_SHUFFLE_BUFFER[config.scale])
  return stream.as_numpy_iterator()


def _tf_train_stream(base, n: int, *, per_host: int, seed: int, prefetch: int,
                     shuffle_buffer: int, start_step: int = 0, process_index: int = 0):
  """Epoch e: `base` shuffled with a seed of (seed, e, host); epochs concatenated, batched."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  first_epoch, offset = divmod(start_step * per_host, n)
  buffer = max(1, min(shuffle_buffer, n))

  def epoch(e):
    epoch_seed = (tf.constant(seed * _SEED_MUL + process_index, tf.int64)
                  + tf.cast(e, tf.int64) * _EPOCH_MUL)
    return base.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
  ds = ds.skip(offset).batch(per_host, drop_remainder=True).prefetch(prefetch)
  return ds.with_options(_tf_options())


def _tf_read(builder, split: str, config: ml_collections.ConfigDict):
  """One pass over `split`'s tfrecord files in file order, mapped to {'image', 'cond'}:
  what `builder.as_dataset(split, shuffle_files=False)` did before the data set also had
  ArrayRecord files (TFDS then reads those)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  pattern = os.path.join(os.fspath(builder.data_dir), f'knee_drr-{split}.tfrecord-*')
  files = sorted(glob.glob(pattern))
  if len(files) != builder.info.splits[split].num_shards:
    raise FileNotFoundError(
        f'{pattern}: {len(files)} files, expected {builder.info.splits[split].num_shards}; '
        f'the tf.data side reads tfrecord files: build the data set as tfrecord into an '
        f'empty --data_dir (this benchmark then adds the ArrayRecord files).')
  ds = tf.data.TFRecordDataset(files).map(builder.info.features.deserialize_example,
                                          num_parallel_calls=tf.data.AUTOTUNE)
  if builder.info.dataset_size <= _TFDS_AUTOCACHE_BYTES:  # what TFDS did (try_autocache)
    ds = ds.cache()
  ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_tf_options())
  return (ds.map(_tf_preprocess_fn(config), num_parallel_calls=tf.data.AUTOTUNE)
          .with_options(_tf_options()))


def _tf_options():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = False  # as before: its thread made iterator deletion hang
  return options


def _tf_preprocess_fn(config: ml_collections.ConfigDict):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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


# ---- driver ------------------------------------------------------------------------------

def _child(args: argparse.Namespace) -> None:
  kind, name = args.child.split(':')
  config = config_for(args.size, args.data_dir, args.version)
  out = (measure(name, config, args.batches) if kind == 'pipeline'
         else step_time(name, config, args.step_batches))
  print(json.dumps(out))


def _run_child(child: str, size: int, args: argparse.Namespace) -> dict:
  cmd = [sys.executable, '-m', 'benchmarks.input_pipeline', '--child', child,
         '--size', str(size), '--data_dir', args.data_dir, '--version', args.version,
         '--batches', str(args.batches), '--step_batches', str(args.step_batches)]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f'{child} at {size} px failed with status {done.returncode}:\n'
                       f'{done.stderr[-3000:]}')
  out = json.loads(done.stdout.strip().splitlines()[-1])
  print(f'{child} {size} px: {out}', file=sys.stderr)
  return out


def _median(runs: list[dict], key: str) -> float:
  return round(statistics.median(r[key] for r in runs), 2)


def _versions() -> dict:
  out = {}
  for name, dists in [('jax', ['jax']), ('grain', ['grain']),
                      ('tensorflow', ['tensorflow', 'tensorflow-cpu']),
                      ('tensorflow_datasets', ['tensorflow-datasets']),
                      ('array_record', ['array-record'])]:
    for d in dists:
      try:
        out[name] = importlib.metadata.version(d)
        break
      except importlib.metadata.PackageNotFoundError:
        out[name] = None
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='64,256', help='comma-separated: 64 and/or 256')
  p.add_argument('--batches', type=int, default=200, help='timed batches per pipeline run')
  p.add_argument('--repeats', type=int, default=2, help='runs per pipeline, alternating')
  p.add_argument('--data_dir', default='', help='TFDS data dir (default: TFDS default)')
  p.add_argument('--version', default='2.0.0', help='knee_drr version')
  p.add_argument('--step_batches', type=int, default=20,
                 help='timed train steps per feeder at 64 px (0 = none)')
  p.add_argument('--child', default='', help=argparse.SUPPRESS)
  p.add_argument('--size', type=int, default=64, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    return _child(args)
  sizes = [int(s) for s in args.sizes.split(',') if s]
  if args.batches < 1 or args.repeats < 1 or args.step_batches < 0:
    p.error('--batches and --repeats must be >= 1, --step_batches >= 0')
  for s in sizes:
    if s not in SCALES:
      p.error(f'--sizes: {s} is not one of {sorted(SCALES)}')
  out = {'what': 'training input pipeline: Grain over ArrayRecord against the earlier '
                 'tf.data pipeline over tfrecord, one fresh process per run',
         'command': 'python -m benchmarks.input_pipeline '
                    + ' '.join(sys.argv[1:] if argv is None else argv),
         'date': datetime.date.today().isoformat(),
         'machine': {'cpu': machine.cpu_model(), 'cores': os.cpu_count(),
                     'load_avg_1m': round(os.getloadavg()[0], 2)},
         'versions': _versions(), 'knee_drr_version': args.version, 'sizes': {}}
  for size in sizes:
    spec = f'phantom_{size}:{args.version}'
    print(f'knee_drr/{spec}: making sure it has tfrecord and ArrayRecord files',
          file=sys.stderr)
    ensure_data(spec, args.data_dir)
    runs = {name: [] for name in PIPELINES}
    for _ in range(args.repeats):
      for name in PIPELINES:
        runs[name].append(_run_child(f'pipeline:{name}', size, args))
    medians = {name: {k: _median(r, k) for k in ('batches_per_s', 'images_per_s',
                                                 'max_rss_mb', 'pipeline_rss_mb')}
               for name, r in runs.items()}
    out['sizes'][str(size)] = {
        'data': f'knee_drr/{spec}', 'runs': runs, 'medians': medians,
        'grain_over_tfdata_batches_per_s': round(
            medians['grain']['batches_per_s'] / medians['tfdata']['batches_per_s'], 3)}
  if 64 in sizes and args.step_batches:
    feeds = {f: [] for f in ('none',) + PIPELINES}
    for _ in range(args.repeats):
      for f, runs in feeds.items():
        runs.append(_run_child(f'step:{f}', 64, args))
    step_s = {f: statistics.median(r['step_s'] for r in runs) for f, runs in feeds.items()}
    ratios = {f: round(step_s[f] / step_s['none'], 3) for f in PIPELINES}
    out['step_64'] = {'config': 'configs/ctm.py:contour_bone,cpu', 'runs': feeds,
                      'median_step_s': {f: round(s, 4) for f, s in step_s.items()},
                      'fed_ratio': ratios, 'fed': {f: r <= 1.1 for f, r in ratios.items()}}
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  xla_cpu.configure()  # what main.py runs; before JAX starts
  main()
