"""benchmarks/gpu_figures.py on the CPU at the test scale: every part runs and its JSON holds."""
import json
import math
import os

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
  peak = r['matmul_gflop_per_s']['bfloat16']
  for dtype in ('float32', 'bfloat16'):
    t = r['train'][dtype]
    assert t['images_per_s'] == pytest.approx(4 / t['step_s'])
    assert t['gflop_per_update'] > 0
    assert t['mfu_vs_bf16_peak'] == pytest.approx(t['gflop_per_update'] / t['step_s'] / peak)
  s = r['sampler']
  assert s['N'] == 4  # The test preset's num_scales.
  assert s['column_s_at_N'] == pytest.approx(math.ceil(330 / 4) * 4 * s['pc_step_s'])
  assert s['fast_nfe'] == 17 + 16 * 2  # Ancestral predictor at 17 levels, 2 corrector steps.
  assert r['matmul_gflop_per_s']['float32'] > 0 and peak > 0
  run = r['run']
  assert run['steps'] >= 1 and run['samples'] == 2  # No training time: one update still.
  assert math.isfinite(run['psnr']) and 0 < run['mae'] < 1
  assert os.path.getsize(run['grid_png']) > 1000


def test_unknown_part_is_a_clear_error(tmp_path):
  with pytest.raises(SystemExit, match='unknown part'):
    gpu_figures.main(['--scale', 'test', '--parts', 'peaks,trian', '--out', str(tmp_path)])
