"""Training speed options side by side in one process; prints one JSON object.

    python -m benchmarks.train_options [--scale cpu] [--steps 12] [--repeats 3]

Variants of the loop `train.train_and_evaluate` runs, on synthetic batches made on the host
each step (as the input pipeline hands them over):
  sync        one update per call and the metrics fetched every step (the earlier loop:
              a host sync per step for the NaN check)
  baseline    the same without the per-step fetch (the loop now: metrics are fetched at
              log / eval / checkpoint steps only)
  no_donate   baseline without donating the state's buffers to the step
  scan4       config.training.steps_per_call = 4 (4 updates per call, lax.scan unrolled)
  bf16        config.training.compute_dtype = 'bfloat16' (float32 parameters)
--profile adds where one update's time goes (forward, backward, optimiser, host batch)
with XLA's FLOP counts and the measured matmul peaks (benchmarks/README.md).
Each variant: compile, one warm-up call, then --repeats timings of --steps updates; the
median seconds per update, and the ratio to `sync`. Peak memory of no_donate vs baseline
is reported where the backend gives it (GPU); on the CPU XLA reports none.
"""
import argparse
import json
import os
import statistics
import sys
import time

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks import train as train_bench  # pylint: disable=g-import-not-at-top
from configs import default
from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import train_state as ts
from score_sde_knee.utils import xla_cpu

VARIANTS = ('sync', 'baseline', 'no_donate', 'scan4', 'bf16')


def run_variant(name: str, scale: str, method: str, steps: int, repeats: int,
                batch: int | None) -> dict:
  config = default.get_config(scale, method=method)
  if batch:
    config.training.batch_size = batch
  k = 4 if name == 'scan4' else 1
  if name == 'bf16':
    config.training.compute_dtype = 'bfloat16'
  steps = max(k, steps - steps % k)
  mesh = parallel.make_mesh()
  model = model_utils.create_model(config)
  state = ts.init_train_state(config, model, mesh)
  if k == 1:
    fn = ts.make_train_step(config, model, mesh, donate=name != 'no_donate')
  else:
    config.training.steps_per_call = k
    fn = ts.make_multi_train_step(config, model, mesh)
  rng = np.random.default_rng(0)

  def one_call(state):
    if k == 1:
      batch = parallel.global_batch_from_local(train_bench._batch(config, rng), mesh)
    else:
      local = [train_bench._batch(config, rng) for _ in range(k)]
      batch = parallel.global_batch_from_local(
          jax.tree.map(lambda *xs: np.stack(xs), *local), mesh, stacked=True)
    state, metrics = fn(state, batch)
    if name == 'sync':
      jax.device_get(metrics)
    return state, metrics

  t0 = time.perf_counter()
  state, metrics = one_call(state)          # compile + warm-up
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps // k):
      state, metrics = one_call(state)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - t0) / steps)
  loss = np.asarray(jax.device_get(metrics['loss'])).ravel()[-1]
  stats = jax.local_devices()[0].memory_stats() or {}
  return {'variant': name, 'seconds_per_update': statistics.median(times),
          'seconds_per_update_min': min(times), 'first_call_s': first,
          'updates_timed': steps * repeats, 'final_loss': float(loss),
          'peak_device_bytes': stats.get('peak_bytes_in_use')}


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 5) -> float:
  """Measured GFLOP/s of an n x n matmul: the machine's practical peak for this dtype."""
  a = jax.numpy.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / statistics.median(times) / 1e9


def xla_cost(compiled) -> dict:
  """XLA's cost analysis of a compiled or lowered function ('flops': a multiply-add
  counts 2)."""
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}


def profile(scale: str, method: str, repeats: int, batch: int | None) -> dict:
  """Where a step's time goes: forward, forward + backward, the whole update; XLA's FLOP
  count of each, and the achieved GFLOP/s against the measured float32 matmul peak."""
  config = default.get_config(scale, method=method)
  if batch:
    config.training.batch_size = batch
  mesh = parallel.make_mesh()
  model = model_utils.create_model(config)
  state = ts.init_train_state(config, model, mesh)
  loss_fn = ts.make_loss_fn(config, model)
  batch_ = parallel.global_batch_from_local(
      train_bench._batch(config, np.random.default_rng(0)), mesh)
  rng = jax.random.key(0)
  parts = {
      'forward (loss)': jax.jit(lambda p, b: loss_fn(p, b, rng, True)[0]),
      'forward + backward': jax.jit(jax.grad(lambda p, b: loss_fn(p, b, rng, True)[0])),
      'whole update (+ clip, Adam, EMA)': ts.make_train_step(config, model, mesh,
                                                              donate=False),
  }
  out = {}
  for name, fn in parts.items():
    args = (state, batch_) if name.startswith('whole') else (state.params, batch_)
    compiled = fn.lower(*args).compile()
    cost = xla_cost(compiled)
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    flops = float(cost.get('flops', 0.0))
    out[name] = {'seconds': sec, 'gflop': flops / 1e9, 'gflop_per_s': flops / sec / 1e9,
                 'bytes_accessed_gb': float(cost.get('bytes accessed', 0.0)) / 1e9}
  host = time.perf_counter()
  for _ in range(10):
    parallel.global_batch_from_local(train_bench._batch(config, np.random.default_rng(0)),
                                     mesh)
  out['host batch (make + transfer)'] = {'seconds': (time.perf_counter() - host) / 10}
  peak = {d: matmul_peak(d) for d in ('float32', 'bfloat16')}
  step = out['whole update (+ clip, Adam, EMA)']
  return {'parts': out, 'matmul_peak_gflop_per_s': peak,
          'utilisation_of_f32_peak': step['gflop_per_s'] / peak['float32']}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--scale', default='cpu', choices=default.SCALES)
  p.add_argument('--method', default='ctm', choices=methods.NAMES)
  p.add_argument('--steps', type=int, default=12, help='updates per timing (multiple of 4)')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--batch', type=int, default=0, help="global batch (0 = the config's)")
  p.add_argument('--variants', default=','.join(VARIANTS))
  p.add_argument('--profile', action='store_true',
                 help='also time forward / backward / update separately, with FLOPs')
  a = p.parse_args(argv)
  names = [v for v in a.variants.split(',') if v]
  for v in names:
    if v not in VARIANTS:
      p.error(f'unknown variant {v!r}: expected some of {VARIANTS}')
  results = []
  for v in names:
    print(f'variant {v} ...', file=sys.stderr, flush=True)
    results.append(run_variant(v, a.scale, a.method, a.steps, a.repeats, a.batch or None))
  ref = next((r for r in results if r['variant'] == 'sync'), results[0])
  for r in results:
    r['speedup_vs_' + ref['variant']] = ref['seconds_per_update'] / r['seconds_per_update']
  device = jax.devices()[0]
  prof = profile(a.scale, a.method, a.repeats, a.batch or None) if a.profile else None
  print(json.dumps({'profile': prof,
      'benchmark': 'train_options', 'scale': a.scale, 'method': a.method,
      'device': f'{device.platform}: {device.device_kind}', 'jax': jax.__version__,
      'load_avg_1m': round(os.getloadavg()[0], 2), 'results': results}, indent=1))


if __name__ == '__main__':
  xla_cpu.configure()  # what main.py runs; before JAX starts
  main()
