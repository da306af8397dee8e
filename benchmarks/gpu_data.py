"""The data of the GPU script's short run (benchmarks/gpu_figures.py, part `run`).

`knee_drr_data` builds knee_drr/<config> when it is not there (ArrayRecord: no TensorFlow
needed) and reads it as training does (Grain); `memory_data` makes phantoms in memory, the
fallback where the data set's packages are missing. `beside` runs either in a thread while
the update and the sampler compile.
"""
import copy
import dataclasses
import os
import sys
import threading
import time
from typing import Callable, Iterator

import ml_collections
import numpy as np

from score_sde_knee import parallel
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _copy(config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))


def phantom_views(num: int, size: int, views: int = 60) -> dict[str, np.ndarray]:
  """(num * views, size, size, 1) DRRs and contour+bone masks of phantoms 0..num-1."""
  spacing = 1.0 if size >= 256 else 128.0 / size  # As phantom_256 (1 mm), phantom_64 (2 mm).
  geometry = geometry_lib.ConeBeamGeometry().with_detector(size)
  angles = np.arange(views, dtype=np.float32) * (360.0 / views)
  image, cond = [], []
  for i in range(num):
    p = phantom.make_phantom(i, spacing_mm=spacing)
    scan = drr.scan_volume(p.hu, p.spacing_mm, geometry, angles)
    image.append(scan.image)
    cond.append(scan.contour_bone)
    _log(f'phantom {i + 1}/{num} scanned')
  return {'image': np.concatenate(image)[..., None].astype(np.float32),
          'cond': np.concatenate(cond)[..., None].astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class RunData:
  """What the short run trains on and samples from."""
  train: Iterator[dict[str, np.ndarray]]  # per-host {'image', 'cond'} batches, endless
  held_out: dict[str, np.ndarray]  # the grid's 'image' and 'cond', never trained on
  info: dict  # what the JSON's `data` records
  # every view of one held-out leg, by angle: 'image', 'cond', 'angles_deg', 'patient'
  leg: dict = dataclasses.field(default_factory=dict)


def memory_data(config, phantoms: int, grid: int, views: int = 60) -> RunData:
  """`phantom_views` of phantoms 0..phantoms-1: random batches from all but the last, the
  grid from the last one's views, evenly spaced in angle."""
  if phantoms < 2:
    raise ValueError(f'--phantoms {phantoms}: expected at least 2 (the last is held out).')
  t0 = time.perf_counter()
  data = phantom_views(phantoms, config.data.image_size, views)
  n_train = len(data['image']) - views
  per_host = parallel.check_batch(config.training.batch_size)
  rng = np.random.default_rng(0)

  def batches():
    while True:
      idx = rng.integers(0, n_train, per_host)
      yield {k: v[idx] for k, v in data.items()}
  test = slice(n_train, None, max(views // grid, 1))
  leg = {'image': data['image'][n_train:], 'cond': data['cond'][n_train:],
         'angles_deg': np.arange(views) * (360.0 / views), 'patient': f'phantom {phantoms - 1}'}
  return RunData(batches(), {k: v[test][:grid] for k, v in data.items()},
                 {'data': 'memory', 'phantoms': phantoms, 'views': views,
                  'make_s': time.perf_counter() - t0, 'num_train_examples': n_train,
                  'num_test_examples': views}, leg)


def newest_version() -> str:
  """The newest knee_drr version the builder makes."""
  # pylint: disable-next=g-import-not-at-top
  from datasets.knee_drr import knee_drr_dataset_builder as kb
  return str(max([kb.Builder.VERSION, *kb.Builder.SUPPORTED_VERSIONS]))


def knee_drr_data(config, grid: int) -> RunData:
  """knee_drr/<data.builder_config>:<data.version> in data.data_dir, built there first when
  it is not there; training batches as training reads them, the grid `grid` views evenly
  spaced over the test split."""
  # Imported here: TFDS and Grain are needed on this path alone.
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from datasets.knee_drr import build
  from score_sde_knee import input_pipeline
  from score_sde_knee import run_config
  from score_sde_knee.utils import progress
  # pylint: enable=g-import-not-at-top
  d = config.data
  if not d.data_dir or not d.version:
    raise ValueError(f'config.data.data_dir={d.data_dir!r}, config.data.version='
                     f'{d.version!r}: expected both set (main sets them from --data_dir and '
                     '--data_version).')
  spec = run_config.data_spec(config)
  name = f'{d.name}/{spec}'
  present = os.path.exists(
      os.path.join(d.data_dir, d.name, d.builder_config, d.version, 'dataset_info.json'))
  # The builder's own lines (one per patient scanned, with an ETA) are the progress; TFDS's
  # bars and INFO lines would bury them.
  tfds.disable_progress_bar()
  progress.quiet_library_info()
  _log(f'{name}: ' + ('found in ' if present else 'not there: building it into ') + d.data_dir)
  t0 = time.perf_counter()
  build.build(spec, d.data_dir)
  build_s = time.perf_counter() - t0
  _log(f'{name}: ' + (f'built in {build_s:.0f} s' if not present else 'ready'))
  c = _copy(config)
  c.training.eval_batches = 1  # Read when the streams are made; the short run uses none.
  streams = input_pipeline.create_datasets(c)
  test = input_pipeline.load_split(c, 'test', view_stride=1)
  n_test = len(test['image'])
  if n_test < grid:
    raise ValueError(f'--grid {grid}: the test split of {name} has only {n_test} examples.')
  pick = np.linspace(0, n_test - 1, grid).round().astype(int)
  pids = test['patient_id']
  mine = np.flatnonzero(pids == min(pids))  # the first test patient, by angle
  mine = mine[np.argsort(test['angle_deg'][mine], kind='stable')]
  leg = {'image': test['image'][mine], 'cond': test[c.condition][mine],
         'angles_deg': np.asarray(test['angle_deg'][mine], np.float64),
         'patient': str(pids[mine[0]])}
  return RunData(streams.train, {'image': test['image'][pick], 'cond': test[c.condition][pick]},
                 {'data': 'knee_drr', 'name': name, 'version': d.version,
                  'data_dir': d.data_dir, 'built': not present, 'build_s': build_s,
                  'num_train_examples': streams.num_train_examples,
                  'num_test_examples': n_test,
                  'grid_views': [[str(test['patient_id'][i]), float(test['angle_deg'][i])]
                                 for i in pick]}, leg)


def beside(fn: Callable[[], RunData]) -> Callable[[], RunData]:
  """Starts fn() in a daemon thread; returns what waits for its result. Daemon: a failed
  compile does not wait for a data build that nothing will read."""
  out = {}

  def run():
    try:
      out['value'] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      out['error'] = e
  thread = threading.Thread(target=run, daemon=True)
  thread.start()

  def result() -> RunData:
    thread.join()
    if 'error' in out:
      raise out['error']
    return out['value']
  return result
