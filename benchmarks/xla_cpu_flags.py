"""XLA:CPU with and without score_sde_knee.utils.xla_cpu's flag; prints one JSON object.

    python -m benchmarks.xla_cpu_flags [--scale cpu] [--rounds 2] [--steps 6] [--repeats 3]

XLA reads XLA_FLAGS once per process, so each variant runs in its own child process, and
the variants alternate (default, fast_conv, default, fast_conv, ...) so that a change in
the machine's load hits both. Each child times, after compilation and one warm-up call,
the whole training update (benchmarks/train_options.py's `baseline`, synthetic batches)
and one forward pass of the score network at the training batch (a sampler step's network
evaluation). The figures are medians over rounds of each child's median (`*_s`) and of
each child's fastest timing (`*_min_s`, less sensitive to other load on a shared host);
`speedup` is default / fast_conv of each.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # pylint: disable=g-import-not-at-top
from score_sde_knee import methods
from score_sde_knee.utils import xla_cpu

VARIANTS = {'default': '', 'fast_conv': xla_cpu.FAST_CONV_FLAG}
FIGURES = ('update_s', 'forward_s', 'update_min_s', 'forward_min_s')


def child(scale: str, method: str, steps: int, repeats: int) -> dict:
  """Runs in the child process: the update and the forward pass under this XLA_FLAGS."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import train as train_bench  # pylint: disable=g-import-not-at-top
  from benchmarks import train_options
  from score_sde_knee import model_utils
  from score_sde_knee import parallel
  from score_sde_knee import train_state as ts

  update = train_options.run_variant('baseline', scale, method, steps, repeats, None)
  config = default.get_config(scale, method=method)
  mesh = parallel.make_mesh()
  model = model_utils.create_model(config)
  state = ts.init_train_state(config, model, mesh)
  batch = train_bench._batch(config, np.random.default_rng(0))
  # The network's input as the score function builds it (ctm: the condition appended).
  x = (np.concatenate([batch['image'], batch['cond']], -1) if methods.get(method).cond_input
       else batch['image'])
  sigma = np.full((x.shape[0],), 1.0, np.float32)
  forward = jax.jit(lambda p, x, s: model.apply({'params': p}, x, s))
  jax.block_until_ready(forward(state.ema_params, x, sigma))
  times = []
  for _ in range(repeats * steps):
    t0 = time.perf_counter()
    jax.block_until_ready(forward(state.ema_params, x, sigma))
    times.append(time.perf_counter() - t0)
  return {'update_s': update['seconds_per_update'], 'forward_s': statistics.median(times),
          'update_min_s': update['seconds_per_update_min'], 'forward_min_s': min(times),
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def run_child(variant: str, a: argparse.Namespace) -> dict:
  env = dict(os.environ, XLA_FLAGS=VARIANTS[variant], TF_CPP_MIN_LOG_LEVEL='2')
  cmd = [sys.executable, '-m', 'benchmarks.xla_cpu_flags', '--child', '--scale', a.scale,
         '--method', a.method, '--steps', str(a.steps), '--repeats', str(a.repeats)]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f'variant {variant} (XLA_FLAGS={VARIANTS[variant]!r}) failed with '
                       f'status {done.returncode}:\n{done.stderr[-2000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--scale', default='cpu', choices=default.SCALES)
  p.add_argument('--method', default='ctm', choices=methods.NAMES)
  p.add_argument('--rounds', type=int, default=2, help='child processes per variant')
  p.add_argument('--steps', type=int, default=6, help='updates per timing')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.child:
    print(json.dumps(child(a.scale, a.method, a.steps, a.repeats)))
    return
  runs = {v: [] for v in VARIANTS}
  t0 = time.monotonic()
  for r in range(a.rounds):
    for v in VARIANTS:
      print(f'round {r + 1}/{a.rounds}: {v} (elapsed {time.monotonic() - t0:.0f} s)',
            file=sys.stderr, flush=True)
      runs[v].append(run_child(v, a))
  out = {'benchmark': 'xla_cpu_flags', 'scale': a.scale, 'method': a.method,
         'rounds': a.rounds, 'flag': xla_cpu.FAST_CONV_FLAG,
         'load_avg_1m': os.getloadavg()[0], 'variants': {}}
  for v, rs in runs.items():
    out['variants'][v] = {k: statistics.median(r[k] for r in rs) for k in FIGURES}
    out['variants'][v]['runs'] = rs
  d, f = out['variants']['default'], out['variants']['fast_conv']
  out['speedup'] = {k: d[k] / f[k] for k in FIGURES}
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  main()
