"""Data parallelism: 1 vs 4 devices, and 2 processes x 2 devices, give the same training.

Each configuration runs in its own Python process (the device count is fixed when JAX
starts): this file is also the worker, `python tests/parallel_test.py --devices=N ...`.
All workers train the ctm test config (shrunk further) for a few steps on the same fixed
synthetic global batches; a multi-host worker feeds only its own slice of each batch.
"""
import argparse
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 2
# Float reductions are ordered differently across device counts: equal up to rounding
# (measured: within 1/20 of this tolerance), while two steps move half of the parameters
# by over 100 times it (lr 1e-4 and 2e-4 under the warm-up).
RTOL, ATOL = 1e-6, 1e-7


# --- Worker ------------------------------------------------------------------------------


def _global_batch(step: int, batch_size: int, size: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(1000 + step)
  return {'image': rng.random((batch_size, size, size, 1), dtype=np.float32),
          'cond': (rng.integers(0, 3, (batch_size, size, size, 1)) / 2).astype(np.float32)}


def _worker(args) -> None:
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={args.devices}'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=g-import-not-at-top
  from score_sde_knee import parallel  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    assert parallel.maybe_initialize_distributed(
        f'127.0.0.1:{args.port}', args.num_processes, args.process_id, env={})
  from configs import ctm  # pylint: disable=g-import-not-at-top
  from score_sde_knee import model_utils  # pylint: disable=g-import-not-at-top
  from score_sde_knee import train_state  # pylint: disable=g-import-not-at-top

  config = ctm.get_config('test')
  # The smallest NCSN++ (one level, no attention): this tests the parallel machinery, and
  # compiling the test config's two levels would take 3x longer in each of 4 processes.
  config.model.nf, config.model.ch_mult, config.model.attn_resolutions = 4, (1,), ()
  mesh = parallel.make_mesh()
  assert jax.device_count() == args.devices * args.num_processes
  per_host = parallel.check_batch(config.training.batch_size)
  model = model_utils.create_model(config)
  state = train_state.init_train_state(config, model, mesh)
  step_fn = train_state.make_train_step(config, model, mesh)
  leaves = lambda s: [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(s.params)]
  initial = leaves(state)  # a copy on the host: the train step donates the state
  lo = jax.process_index() * per_host
  for step in range(NUM_STEPS):
    full = _global_batch(step, config.training.batch_size, config.data.image_size)
    local = {k: v[lo:lo + per_host] for k, v in full.items()}
    state, _ = step_fn(state, parallel.global_batch_from_local(local, mesh))
  final = leaves(state)
  np.savez(args.out, **{f'initial_{i}': x for i, x in enumerate(initial)},
           **{f'final_{i}': x for i, x in enumerate(final)})


def _main():
  p = argparse.ArgumentParser()
  p.add_argument('--devices', type=int, required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--num_processes', type=int, default=1)
  p.add_argument('--process_id', type=int, default=0)
  p.add_argument('--port', type=int, default=0)
  _worker(p.parse_args())


# --- Tests -------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(out: str, devices: int, **kw) -> subprocess.Popen:
  cmd = [sys.executable, os.path.abspath(__file__), f'--devices={devices}', f'--out={out}']
  cmd += [f'--{k}={v}' for k, v in kw.items()]
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _finish(procs: list[subprocess.Popen], timeout: float = 300) -> None:
  try:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, f'worker {p.args} failed:\n{out[-4000:]}'


def _load(path: str) -> dict[str, list[np.ndarray]]:
  with np.load(path) as f:
    n = len(f.files) // 2
    return {k: [f[f'{k}_{i}'] for i in range(n)] for k in ('initial', 'final')}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Initial and final parameters of: 1 device; 4 devices; 2 processes x 2 devices
  (process 0 and 1)."""
  d = tmp_path_factory.mktemp('parallel')
  port = _free_port()
  paths = {'one': str(d / 'one.npz'), 'four': str(d / 'four.npz'),
           'host0': str(d / 'host0.npz'), 'host1': str(d / 'host1.npz')}
  _finish([_start(paths['one'], 1), _start(paths['four'], 4)])
  _finish([_start(paths[f'host{i}'], 2, num_processes=2, process_id=i, port=port)
           for i in range(2)])
  return {k: _load(v) for k, v in paths.items()}


def _assert_trees_close(a, b, what):
  assert len(a) == len(b)
  for i, (x, y) in enumerate(zip(a, b)):
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=f'{what}: leaf {i}')


def test_the_steps_moved_the_parameters_far_beyond_the_tolerance(runs):
  # Otherwise the comparisons below would pass for runs that skipped their steps.
  for name, run in runs.items():
    _assert_trees_close(run['initial'], runs['one']['initial'], f'{name}: initial')
    final, initial = (np.concatenate([x.ravel() for x in run[k]]) for k in ('final', 'initial'))
    ratio = np.abs(final - initial) / (ATOL + RTOL * np.abs(final))
    assert np.median(ratio) > 30, f'{name}: the median parameter moved {np.median(ratio):.3g} x tol'


def test_one_and_four_devices_agree(runs):
  _assert_trees_close(runs['one']['final'], runs['four']['final'], '1 vs 4 devices')


def test_two_hosts_agree_with_each_other_and_with_one_host(runs):
  for x, y in zip(runs['host0']['final'], runs['host1']['final']):
    np.testing.assert_array_equal(x, y)
  _assert_trees_close(runs['host0']['final'], runs['four']['final'],
                      '2 hosts x 2 vs 1 host x 4')


def test_check_batch():
  from score_sde_knee import parallel
  assert parallel.check_batch(16, num_devices=4, num_processes=2) == 8
  with pytest.raises(ValueError, match=r'6.*4'):
    parallel.check_batch(6, num_devices=4, num_processes=1)
  with pytest.raises(ValueError, match='positive'):
    parallel.check_batch(0, num_devices=1, num_processes=1)


def test_global_batch_from_local_single_process():
  import jax
  from score_sde_knee import parallel
  mesh = parallel.make_mesh()
  x = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
  g = parallel.global_batch_from_local({'x': x}, mesh)['x']
  assert g.shape == (2, 3)
  assert g.sharding.spec == jax.sharding.PartitionSpec('data')
  np.testing.assert_array_equal(np.asarray(g), x)


def test_maybe_initialize_distributed_single_process_is_noop():
  from score_sde_knee import parallel
  assert not parallel.maybe_initialize_distributed(env={})
  assert not parallel.maybe_initialize_distributed(env={'JAX_NUM_PROCESSES': '1'})
  with pytest.raises(ValueError, match='JAX_PROCESS_ID'):
    parallel.maybe_initialize_distributed(env={'JAX_NUM_PROCESSES': '2',
                                               'JAX_COORDINATOR_ADDRESS': 'h:1'})
  with pytest.raises(ValueError, match='integer'):
    parallel.maybe_initialize_distributed(env={'JAX_NUM_PROCESSES': 'two'})


if __name__ == '__main__':
  _main()
