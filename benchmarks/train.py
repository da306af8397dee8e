"""Speed and memory of one data-parallel train step; prints one JSON object.

    python -m benchmarks.train                                  # cpu scale, ctm, 3 steps
    python -m benchmarks.train --configs=cpu,paper --steps=2 --method=ctm [--batch=16]

For each scale: the parameter count, the compile time of the jitted train step (the
program `train.train_and_evaluate` runs), images/s over `--steps` timed steps after one
warm-up step, and peak memory: the process's ru_maxrss (host; cumulative over the scales
measured so far, so run one scale per process for a clean figure) and, where the backend
reports it, the device's peak_bytes_in_use. Synthetic batches; the data pipeline is not
timed. The paper scale (256 px, batch 16) is a GPU job: on a CPU compile and each step
take minutes.
"""
import argparse
import json
import os
import resource
import sys
import time

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from configs import default  # pylint: disable=g-import-not-at-top
from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import train_state as ts
from score_sde_knee.utils import xla_cpu


def _batch(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
  b = parallel.check_batch(config.training.batch_size)
  s = config.data.image_size
  return {'image': rng.random((b, s, s, 1), dtype=np.float32),
          'cond': (rng.integers(0, 3, (b, s, s, 1)) / 2).astype(np.float32)}


def _peak_device_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def bench(method: str, scale: str, steps: int, batch: int | None) -> dict:
  config = default.get_config(scale, method=method)
  if batch:
    config.training.batch_size = batch
  mesh = parallel.make_mesh()
  model = model_utils.create_model(config)
  t0 = time.perf_counter()
  state = ts.init_train_state(config, model, mesh)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  batches = [parallel.global_batch_from_local(_batch(config, rng), mesh) for _ in range(2)]
  step_fn = ts.make_train_step(config, model, mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batches[0]).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = compiled(state, batches[0])      # warm-up
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for i in range(steps):
    state, metrics = compiled(state, batches[i % 2])
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t0) / steps
  return {
      'method': method, 'scale': scale, 'image_size': config.data.image_size,
      'batch_size': config.training.batch_size,
      'num_params': model_utils.count_params(state.params),
      'init_s': round(init_s, 3), 'compile_s': round(compile_s, 3),
      'step_s': round(step_s, 4),
      'images_per_s': round(config.training.batch_size / step_s, 3),
      'steps_timed': steps, 'loss': float(metrics['loss']),
      'peak_host_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      'peak_device_bytes': _peak_device_bytes(),
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--configs', default='cpu', help='comma-separated scales: cpu,paper,test')
  p.add_argument('--method', default='ctm', choices=methods.NAMES)
  p.add_argument('--steps', type=int, default=3, help='timed steps after one warm-up')
  p.add_argument('--batch', type=int, default=0, help='global batch (0 = the config\'s)')
  args = p.parse_args(argv)
  if args.steps < 1:
    p.error('--steps must be >= 1')
  scales = [s for s in args.configs.split(',') if s]
  for s in scales:
    if s not in default.SCALES:
      p.error(f'unknown scale {s!r}: expected some of {default.SCALES}')
  results = [bench(args.method, s, args.steps, args.batch or None) for s in scales]
  device = jax.devices()[0]
  print(json.dumps({
      'benchmark': 'train_step', 'device': f'{device.platform}: {device.device_kind}',
      'num_devices': jax.device_count(), 'jax': jax.__version__,
      'load_avg_1m': round(os.getloadavg()[0], 2), 'results': results}, indent=2))


if __name__ == '__main__':
  xla_cpu.configure()  # what main.py runs; before JAX starts
  main()
