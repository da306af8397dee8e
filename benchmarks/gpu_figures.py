"""Paper-scale figures on one accelerator, in one prepared run; prints one JSON object.

    python -m benchmarks.gpu_figures --out DIR                  # paper scale, a GPU job
    python -m benchmarks.gpu_figures --scale cpu --run_train_s 60 --data_dir DIR --out DIR
    python -m benchmarks.gpu_figures --parts run --data memory --phantoms 3 --out DIR

Made for a short loan of a GPU machine, one call (benchmarks/gpu_run.sh is the device
command; benchmarks/RESULTS.md, "GPU: NVIDIA H200", what it measured on an H200, where each
paper-scale program takes 45-140 s to compile):
  flops    XLA's FLOP count of one update and of one network evaluation, from the
           lowered programs (no compile: runs anywhere, the same on every backend).
  peaks    measured float32 and bfloat16 matmul throughput (n x n, median of repeats): the
           denominators of the utilisation figures.
  train    one CTM update (config --scale, batch --batch), float32 and bfloat16 compute:
           compile time, median s per update, images/s, XLA's FLOP count of the update
           (of the lowered program: the compiled one on a GPU misses cuDNN's convolutions)
           and model FLOP utilisation (achieved FLOP/s over the measured bfloat16 peak).
  sampler  one PC step (reverse-diffusion predictor + one Langevin corrector: two network
           evaluations) on --sample_batch images: images/s at N = 500, and the time of one
           Table I column (330 images), at N = 500 and with the 49-NFE momentum setting.
  run      a short training run at the config's size, float32, warm-up shortened to
           --warmup updates, for --run_train_s seconds after its compile (default: to the
           end of --budget_s less a reserve for sampling, or 150 s without a budget); then
           --grid held-out views sampled with the 49-NFE setting: PSNR / MAE against their
           DRRs, and out/gpu_run_grid.png. --data knee_drr (default): the data set
           knee_drr/<--builder_config>:<--data_version> (the scale's config, the newest
           version), built into --data_dir first when it is not there, read as training
           reads it (input_pipeline.create_datasets); the grid is --grid views evenly spaced
           over its test split (input_pipeline.load_split). The build runs beside the two
           compiles, which need only shapes. --data memory: --phantoms phantoms x 60 views
           scanned in memory (phantom.make_phantom + drr.scan_volume), the last held out.
  leg      from the run's model: every view of one held-out leg (the first test patient;
           with --data memory the last phantom) sampled at once, independently and as
           projections of one volume (benchmarks/gpu_leg.py): seconds per leg, compiles,
           PSNR and consistency error per set, out/gpu_leg.png. With a budget, the run
           leaves LEG_RESERVE_S for it.
Compile times are reported beside each figure: on a GPU they, not the timed calls, take
most of the run. The JSON is rewritten after each part, so a run cut short keeps them.
Peak device memory is the process's peak so far, read after each part (None on a CPU).
The JSON's `data` says what the run trained on: the data set's name and version, whether it
was built and in how many seconds, the train and test example counts. Needs no TensorFlow,
clu or orbax; --data knee_drr needs TFDS, Grain and ArrayRecord, which the lent GPU
machine's image lacks (benchmarks/gpu_wheels.sh fetches their wheels, gpu_run.sh installs
them). Loss and progress go to stderr as the run goes.
"""
import argparse
import json
import math
import os
import sys
import time
from typing import Callable

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import ml_collections
import numpy as np

from benchmarks import gpu_data  # pylint: disable=g-import-not-at-top
from benchmarks import gpu_leg
from benchmarks import train as train_bench
from benchmarks import train_options
from benchmarks import train_peers
from benchmarks.drr_peers import time_calls
from configs import default
from score_sde_knee import demo
from score_sde_knee.utils import files
from score_sde_knee import methods
from score_sde_knee import metrics
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import sampler_setting
from score_sde_knee import sampling
from score_sde_knee import train_state as ts
from score_sde_knee.utils import plots
from score_sde_knee.utils import xla_cpu

COLUMN_IMAGES = 330   # One Table I column: the paper's test split.
PARTS = ('flops', 'peaks', 'train', 'sampler', 'run', 'leg')


def _log(msg: str) -> None:
  print(f'[gpu_figures {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def _copy(config) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(config.to_dict())


def _fast_config(config) -> ml_collections.ConfigDict:
  """config with the demo's 49-NFE sampler (the setting README recommends for CTM)."""
  return sampler_setting.configure(config, sampler_setting.preset(
      demo.DEMO_SAMPLER, config.method, config.condition))


def config_for(scale: str, batch: int | None):
  config = default.get_config(scale, method='ctm')
  config.condition = 'contour_bone'
  if batch:
    config.training.batch_size = batch
  return config


def bench_train(config, mesh, steps: int, repeats: int, bf16_peak: float) -> dict:
  """Per compute dtype: compile, then the median over repeats of `steps` updates."""
  b = config.training.batch_size
  # pylint: disable-next=protected-access
  local = train_bench._batch(config, np.random.default_rng(0))
  batch = parallel.global_batch_from_local(local, mesh)
  out = {}
  for dtype in ('float32', 'bfloat16'):
    c = _copy(config)
    c.training.compute_dtype = dtype
    model = model_utils.create_model(c)
    state = ts.init_train_state(c, model, mesh)
    t0 = time.perf_counter()
    lowered = ts.make_train_step(c, model, mesh).lower(state, batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    holder = [state]

    def run():
      for _ in range(steps):
        holder[0], m = compiled(holder[0], batch)
      return float(m['loss'])  # Waits for the last update.
    sec = time_calls(run, repeats)[0]['seconds'] / steps  # After one warm-up call.
    # Counted before the backend's passes: XLA:GPU's compiled count leaves out the
    # convolutions it hands to cuDNN (92 of 10,400 GFLOP on an H200, RESULTS.md).
    flops = float(train_options.xla_cost(lowered).get('flops', 0.0))
    out[dtype] = {'compile_s': round(compile_s, 2), 'step_s': sec,
                  'images_per_s': b / sec, 'gflop_per_update': flops / 1e9,
                  'mfu_vs_bf16_peak': flops / sec / 1e9 / bf16_peak,
                  # pylint: disable-next=protected-access
                  'peak_device_bytes': train_bench._peak_device_bytes()}
    _log(f'train {dtype}: {sec * 1e3:.1f} ms per update, {b / sec:.1f} images/s')
    out['num_params'] = model_utils.count_params(holder[0].params)
    holder.clear()  # Frees this dtype's state before the next one is built.
    del state
  return out


def count_flops(config, mesh) -> dict:
  """XLA's FLOP count of one update at the config's batch and of one network evaluation
  (batch 1), from the lowered programs: no compile, so it runs on any machine, and the
  count does not depend on the backend (XLA:GPU's compiled one leaves out cuDNN's
  convolutions)."""
  model = model_utils.create_model(config)
  state = ts.init_train_state(config, model, mesh)
  # pylint: disable-next=protected-access
  local = train_bench._batch(config, np.random.default_rng(0))
  batch = parallel.global_batch_from_local(local, mesh)
  update = ts.make_train_step(config, model, mesh).lower(state, batch)
  score = model_utils.get_score_fn(model, ts.make_sde(config), methods.get(config.method),
                                   scale_by_sigma=bool(config.model.scale_by_sigma))
  one = jax.numpy.zeros((1,) + local['image'].shape[1:], jax.numpy.float32)
  forward = jax.jit(score).lower(state.ema_params, one, jax.numpy.ones((1,)), one)
  return {'batch': config.training.batch_size,
          'gflop_per_update': train_options.xla_cost(update)['flops'] / 1e9,
          'gflop_per_network_eval': train_options.xla_cost(forward)['flops'] / 1e9}


def bench_sampler(config, batch: int, repeats: int) -> dict:
  """One PC step (2 network evaluations; train_peers' timed step) on `batch` images, and
  from it the Table I column times."""
  c = _copy(config)
  c.training.batch_size = batch
  rng = np.random.default_rng(0)
  data = train_bench._batch(c, rng)  # pylint: disable=protected-access
  data['noise'] = rng.standard_normal(data['image'].shape, dtype=np.float32)
  pc = train_peers.bench_ours(c, ['pc'], repeats, data)['pc']
  sec, compile_s = pc['seconds'], pc['compile_seconds']
  n = int(config.sde.num_scales)
  column_s = math.ceil(COLUMN_IMAGES / batch) * n * sec
  fast_nfe = sampler_setting.nfe(_fast_config(config))
  _log(f'PC step at batch {batch}: {sec * 1e3:.1f} ms; a Table I column ~{column_s / 60:.1f} min')
  return {'batch': batch, 'compile_s': round(compile_s, 2), 'pc_step_s': sec,
          'network_evals_per_s': 2 * batch / sec, 'images_per_s_at_N': batch / (n * sec),
          'N': n, 'column_images': COLUMN_IMAGES, 'column_s_at_N': column_s,
          'fast_nfe': fast_nfe, 'column_s_fast_estimate': column_s * fast_nfe / (2 * n - 1),
          'peak_device_bytes': train_bench._peak_device_bytes()}  # pylint: disable=protected-access


RESERVE_S = 30.0  # After training: the grid's sampling, its PNG and the JSON.
# And the leg part's, when it runs: two compiles of a 60-view sampler and two draws (an
# estimate from the H200's 45-140 s compiles of the paper-scale programs, not a measurement).
LEG_RESERVE_S = 330.0
DEFAULT_TRAIN_S = 150.0  # The short run's training seconds when no budget bounds it.


def short_run(config, mesh, get_data: Callable[[], gpu_data.RunData], train_s: float,
              warmup: int, grid: int, out: str, deadline: float | None = None,
              on_data: Callable[[dict], None] | None = None, reserve_s: float = RESERVE_S,
              keep: dict | None = None) -> dict:
  """Compiles the update and the grid's sampler while get_data() runs beside them (shapes
  are all a compile needs), calls on_data(its info), then trains for `train_s` seconds (at
  least one update; fewer where `deadline`, a perf_counter time, comes first, less
  reserve_s) and samples the `grid` held-out views. `keep` receives what the leg part
  samples with: the sampler's config, the model, the EMA params and the held-out leg."""
  data_result = gpu_data.beside(get_data)
  c = _copy(config)
  c.optim.warmup = warmup
  model = model_utils.create_model(c)
  state = ts.init_train_state(c, model, mesh)
  b = c.training.batch_size
  t0 = time.perf_counter()
  like = parallel.global_batch_from_local(  # Data of the batch's shapes, for the compile.
      train_bench._batch(c, np.random.default_rng(0)), mesh)  # pylint: disable=protected-access
  step_fn = ts.make_train_step(c, model, mesh).lower(state, like).compile()
  train_compile_s = time.perf_counter() - t0

  # evaluate.make_sample_fn builds the same function but imports TensorFlow, which the
  # device lacks.
  fast = _fast_config(c)
  fast_sde = ts.make_sde(fast)
  score = model_utils.get_score_fn(model, fast_sde, methods.CTM,
                                   scale_by_sigma=bool(fast.model.scale_by_sigma))
  sample = jax.jit(lambda params, cond, key: sampling.get_sampler(
      fast, score_fn=lambda x, t, cc: score(params, x, t, cc), sde=fast_sde)(cond, key))
  size = c.data.image_size
  t0 = time.perf_counter()
  compiled_sample = sample.lower(state.ema_params, jax.numpy.zeros((grid, size, size, 1)),
                                 jax.random.key(0)).compile()
  sample_compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  data = data_result()
  data_after_compiles_s = time.perf_counter() - t0
  if on_data:
    on_data(data.info)
  if len(data.held_out['cond']) != grid:
    raise ValueError(f'--grid {grid}: the data hold {len(data.held_out["cond"])} held-out '
                     'views for the grid.')
  _log(f'data ready {data_after_compiles_s:.0f} s after the compiles')
  data_wait_s = 0.0

  def batch():
    nonlocal data_wait_s
    t = time.perf_counter()
    local = next(data.train)
    data_wait_s += time.perf_counter() - t
    return parallel.global_batch_from_local(local, mesh)

  cond = jax.numpy.asarray(data.held_out['cond'])
  losses, step, t_start = [], 0, time.perf_counter()
  if deadline is not None:
    train_s = max(min(train_s, deadline - reserve_s - t_start), 0.0)
  while time.perf_counter() < t_start + train_s or step == 0:
    state, m = step_fn(state, batch())
    step += 1
    if step % 25 == 0:
      losses.append((step, float(m['loss'])))
      el = time.perf_counter() - t_start
      _log(f'run step {step}: loss {losses[-1][1]:.3f}, {b * step / el:.1f} images/s, '
           f'{max(t_start + train_s - time.perf_counter(), 0):.0f} s of training left')
  jax.block_until_ready(state)
  train_s = time.perf_counter() - t_start
  t0 = time.perf_counter()
  samples = np.asarray(compiled_sample(state.ema_params, cond, jax.random.key(0)))
  sampled_s = time.perf_counter() - t0
  truth = data.held_out['image']
  rows = [[np.asarray(cond[i]), samples[i], truth[i]] for i in range(len(samples))]
  png = os.path.join(out, 'gpu_run_grid.png')
  plots.save_grid(png, rows, col_titles=['contour+bone mask', 'sample (49 NFE)', 'DRR'])
  if keep is not None:
    keep.update(config=fast, model=model, params=state.ema_params, leg=data.leg)
  return {'steps': step, 'train_compile_s': train_compile_s, 'train_s': train_s,
          'images_per_s': b * step / train_s, 'data_wait_s': data_wait_s,
          'data_after_compiles_s': data_after_compiles_s,
          'warmup': warmup, 'lr': float(c.optim.lr), 'loss_every_25': losses,
          'sample_compile_s': sample_compile_s, 'sample_s': sampled_s,
          'samples': len(samples), 'psnr': float(metrics.psnr(samples, truth).mean()),
          'mae': float(metrics.mae(samples, truth).mean()), 'grid_png': png,
          'peak_device_bytes': train_bench._peak_device_bytes()}  # pylint: disable=protected-access


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--scale', default='paper', choices=default.SCALES)
  p.add_argument('--batch', type=int, default=16, help='train batch (paper: 16)')
  p.add_argument('--sample_batch', type=int, default=66, help='images per PC call')
  p.add_argument('--steps', type=int, default=5, help='updates per timed call')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--matmul_n', type=int, default=8192)
  p.add_argument('--data', default='knee_drr', choices=('knee_drr', 'memory'),
                 help="the short run's data: the knee_drr data set (built when absent) or "
                      'phantoms scanned in memory')
  p.add_argument('--data_dir', default='/tmp/tfds',
                 help='--data knee_drr: its TFDS data dir, where it is built when absent')
  p.add_argument('--builder_config', default='',
                 help="--data knee_drr: its config (default: the scale's, phantom_256 at "
                      'paper scale, phantom_64 below)')
  p.add_argument('--data_version', default='',
                 help='--data knee_drr: its version (default: the newest the builder makes)')
  p.add_argument('--phantoms', type=int, default=8,
                 help='--data memory: phantoms scanned, the last held out')
  p.add_argument('--warmup', type=int, default=100, help='the short run lr warm-up')
  p.add_argument('--grid', type=int, default=4, help='held-out views sampled')
  p.add_argument('--run_train_s', type=float, default=None,
                 help='training seconds of the short run (after its compile; default: '
                      'what --budget_s leaves, or 150 without it)')
  p.add_argument('--budget_s', type=float, default=None,
                 help="the whole run's seconds: the short run trains for what is left of "
                      'them after its compiles (at most --run_train_s), less a reserve')
  p.add_argument('--parts', default=','.join(PARTS))
  p.add_argument('--out', required=True)
  a = p.parse_args(argv)
  start = time.perf_counter()
  parts = set(a.parts.split(','))
  if parts - set(PARTS):
    raise SystemExit(f'--parts: unknown part(s) {sorted(parts - set(PARTS))}; '
                     f'expected a comma-separated subset of {",".join(PARTS)}')
  os.makedirs(a.out, exist_ok=True)
  xla_cpu.configure()
  mesh = parallel.make_mesh()
  config = config_for(a.scale, a.batch)
  result = {'device': jax.devices()[0].device_kind, 'backend': jax.default_backend(),
            'num_devices': jax.device_count(), 'jax': jax.__version__, 'scale': a.scale,
            'image_size': config.data.image_size, 'batch': config.training.batch_size,
            'data': {'data': a.data}}
  save = lambda: files.write_json(os.path.join(a.out, 'gpu_figures.json'), result)

  def part(name, fn):
    # One device call, one try: a part that fails is recorded and the next one still runs.
    if name not in parts:
      return None
    _log(f'part {name} starts at {time.perf_counter() - start:.0f} s')
    try:
      result[name] = fn()
    except Exception as e:  # pylint: disable=broad-except
      result.setdefault('errors', {})[name] = f'{type(e).__name__}: {e}'[:2000]
      _log(f'part {name} failed: {type(e).__name__}: {e}')
    save()
    return result.get(name)

  def run_part():
    if a.data == 'memory':
      get_data = lambda: gpu_data.memory_data(config, a.phantoms, a.grid)
    else:
      d = config.data
      d.data_dir = a.data_dir
      d.builder_config = a.builder_config or d.builder_config
      d.version = a.data_version or gpu_data.newest_version()
      result['data'].update(name=f'{d.name}/{d.builder_config}:{d.version}')
      save()  # A run stopped while building still says what it was building.
      get_data = lambda: gpu_data.knee_drr_data(config, a.grid)

    def on_data(info):  # Recorded before training: a run cut short keeps it.
      result['data'] = info
      save()
    train_s = a.run_train_s
    if train_s is None:  # Device time is short: a budget's run trains until its deadline.
      train_s = math.inf if a.budget_s is not None else DEFAULT_TRAIN_S
    return short_run(config, mesh, get_data, train_s, a.warmup, a.grid, a.out,
                     deadline=None if a.budget_s is None else start + a.budget_s,
                     on_data=on_data, keep=kept,
                     reserve_s=RESERVE_S + (LEG_RESERVE_S if 'leg' in parts else 0.0))

  def leg_part():
    if 'params' not in kept:
      raise ValueError("the leg part samples from the run part's model: run both "
                       '(--parts run,leg), and the run must succeed')
    return gpu_leg.run(kept['config'], kept['model'], kept['params'], kept['leg'], a.out)

  flops = part('flops', lambda: count_flops(config, mesh))
  peaks = part('peaks', lambda: {d: train_options.matmul_peak(d, a.matmul_n, a.repeats)
                                 for d in ('float32', 'bfloat16')})
  peak = peaks['bfloat16'] if peaks else float('nan')
  part('train', lambda: bench_train(config, mesh, a.steps, a.repeats, peak))
  sampler = part('sampler', lambda: bench_sampler(config, a.sample_batch, a.repeats))
  if flops and sampler:  # The sampler's utilisation, as the update's.
    sampler['mfu_vs_bf16_peak'] = (sampler['network_evals_per_s'] *
                                   flops['gflop_per_network_eval'] / peak)
    save()
  kept = {}  # the run part's model, for the leg part
  part('run', run_part)
  part('leg', leg_part)
  result['wall_s'] = time.perf_counter() - start
  save()
  print(json.dumps(result, indent=1))
  return result


if __name__ == '__main__':
  main()
