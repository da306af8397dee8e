"""benchmarks/gpu_figures.py on the CPU at the test scale: every part runs and its JSON holds."""
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import gpu_figures
from benchmarks import train_options


def test_xla_flop_count_of_a_matmul_is_two_n_cubed():
  # Utilisation divides XLA's FLOP count of an update by the matmul peak, which
  # train_options.matmul_peak computes as 2 n^3 / s: both must count a multiply-add as two.
  n = 48
  a = jax.numpy.ones((n, n), jax.numpy.float32)
  compiled = jax.jit(lambda x: x @ x).lower(a).compile()
  assert train_options.xla_cost(compiled)['flops'] == 2 * n**3


def test_lowered_flop_count_of_a_convolution_is_the_hand_count():
  # Utilisation takes the count of the lowered update: the compiled one on a GPU leaves out
  # the convolutions cuDNN runs. A 3x3 'SAME' conv: 2 * Cin * Cout per tap that lands
  # inside the image; along a side of h pixels 3h - 2 of them (the border drops one).
  n, h, w, cin, cout = 2, 8, 8, 3, 5
  x = jax.numpy.ones((n, h, w, cin), jax.numpy.float32)
  k = jax.numpy.ones((3, 3, cin, cout), jax.numpy.float32)
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  flops = train_options.xla_cost(jax.jit(conv).lower(x, k))['flops']
  assert flops == 2 * n * (3 * h - 2) * (3 * w - 2) * cin * cout


def test_phantom_views_are_normalised_drrs_with_three_level_masks():
  data = gpu_figures.phantom_views(2, 16, views=6)
  assert data['image'].shape == data['cond'].shape == (12, 16, 16, 1)
  assert data['image'].min() >= 0.0 and data['image'].max() == pytest.approx(1.0)
  assert set(np.unique(data['cond'])) <= {0.0, 0.5, 1.0}
  assert (data['cond'] == 1.0).any() and (data['cond'] == 0.0).any()
  # Two patients, not one patient twice.
  assert not np.allclose(data['image'][:6], data['image'][6:])


def test_whole_run_at_test_scale_writes_consistent_json_and_grid(tmp_path):
  out = str(tmp_path / 'gpu')
  r = gpu_figures.main(['--scale', 'test', '--batch', '4', '--sample_batch', '4',
                        '--steps', '2', '--repeats', '2', '--matmul_n', '32',
                        '--phantoms', '2', '--grid', '2', '--run_train_s', '0', '--out', out])
  with open(os.path.join(out, 'gpu_figures.json')) as f:
    assert json.load(f)['wall_s'] == pytest.approx(r['wall_s'])
  peak = r['peaks']['bfloat16']
  for dtype in ('float32', 'bfloat16'):
    t = r['train'][dtype]
    assert t['images_per_s'] == pytest.approx(4 / t['step_s'])
    assert t['gflop_per_update'] > 0
    assert t['mfu_vs_bf16_peak'] == pytest.approx(t['gflop_per_update'] / t['step_s'] / peak)
  f = r['flops']
  assert f['batch'] == 4 and f['gflop_per_network_eval'] > 0
  # An update is a forward and a backward pass per image: two to four evaluations' worth.
  assert 2 < f['gflop_per_update'] / (4 * f['gflop_per_network_eval']) < 4
  s = r['sampler']
  assert s['mfu_vs_bf16_peak'] == pytest.approx(
      s['network_evals_per_s'] * f['gflop_per_network_eval'] / peak)
  assert s['N'] == 4  # The test preset's num_scales.
  assert s['column_s_at_N'] == pytest.approx(math.ceil(330 / 4) * 4 * s['pc_step_s'])
  assert s['fast_nfe'] == 17 + 16 * 2  # Ancestral predictor at 17 levels, 2 corrector steps.
  assert r['peaks']['float32'] > 0 and peak > 0
  run = r['run']
  assert run['steps'] >= 1 and run['samples'] == 2  # No training time: one update still.
  assert math.isfinite(run['psnr']) and 0 < run['mae'] < 1
  assert os.path.getsize(run['grid_png']) > 1000


def test_unknown_part_is_a_clear_error(tmp_path):
  with pytest.raises(SystemExit, match='unknown part'):
    gpu_figures.main(['--scale', 'test', '--parts', 'peaks,trian', '--out', str(tmp_path)])


def test_a_failing_part_is_recorded_and_the_next_still_runs(tmp_path, monkeypatch):
  # One device call allows one try: a part that breaks must not take the others with it.
  def broken(*args, **kwargs):
    raise RuntimeError('no bfloat16 here')
  monkeypatch.setattr(gpu_figures, 'bench_train', broken)
  out = str(tmp_path / 'gpu')
  r = gpu_figures.main(['--scale', 'test', '--parts', 'train,peaks', '--matmul_n', '32',
                        '--repeats', '1', '--out', out])
  assert r['errors'] == {'train': 'RuntimeError: no bfloat16 here'}
  assert 'train' not in r and r['peaks']['float32'] > 0
  with open(os.path.join(out, 'gpu_figures.json')) as f:
    assert json.load(f)['errors'] == r['errors']


def test_short_run_trains_only_until_the_deadline(tmp_path):
  config = gpu_figures.config_for('test', 4)
  data = gpu_figures.phantom_views(2, config.data.image_size, views=4)
  mesh = gpu_figures.parallel.make_mesh()
  # A deadline already past: one update however long --run_train_s asks for.
  r = gpu_figures.short_run(config, mesh, data, 4, 3600.0, 10, 2, str(tmp_path),
                            deadline=0.0)
  assert r['steps'] == 1 and r['train_s'] < 600


def test_device_script_runs_its_part_and_writes_the_grid(tmp_path):
  # benchmarks/gpu_run.sh is what a GPU machine runs, once: here at the test scale, with this
  # interpreter as the device's python3.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'python3').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
  (bin_dir / 'python3').chmod(0o755)
  out = tmp_path / 'out'
  out.mkdir()
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', OUT=str(out),
             GPU_BUDGET_S='40', GPU_GRACE_S='400',
             GPU_ARGS='--scale test --batch 4 --phantoms 2 --grid 2')
  p = subprocess.run(['bash', 'benchmarks/gpu_run.sh'], cwd=root, env=env,
                     capture_output=True, text=True, timeout=600, check=False)
  assert 'gpu_figures rc 0' in p.stdout, p.stdout + p.stderr
  with open(out / 'gpu_figures.json') as f:
    r = json.load(f)
  assert r['run']['steps'] >= 1 and 'train' not in r and 'errors' not in r
  assert os.path.getsize(out / 'gpu_run_grid.png') > 1000


@pytest.mark.parametrize('args, train_s', [
    (['--budget_s', '500'], math.inf),  # gpu_run.sh's call: train until the deadline.
    ([], gpu_figures.DEFAULT_TRAIN_S),
    (['--budget_s', '500', '--run_train_s', '60'], 60.0)])
def test_run_trains_for_what_the_budget_leaves_unless_told(tmp_path, monkeypatch, args,
                                                           train_s):
  # A 500 s budget once stopped the run at the old 150 s default, leaving half the device
  # time idle.
  seen = {}

  def short_run(config, mesh, data, held_out, train_s, *rest, deadline=None):
    seen.update(train_s=train_s, deadline=deadline)
    return {}
  monkeypatch.setattr(gpu_figures, 'short_run', short_run)
  monkeypatch.setattr(gpu_figures, 'phantom_views', lambda *a: {})
  gpu_figures.main(['--scale', 'test', '--parts', 'run', '--out', str(tmp_path)] + args)
  assert seen['train_s'] == train_s
  assert (seen['deadline'] is None) == ('--budget_s' not in args)
