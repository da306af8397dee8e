"""benchmarks/gpu_figures.py on the CPU at the test scale: every part runs and its JSON holds.

The short run reads the tiny knee_drr of conftest's `data_dir` fixture."""
import json
import math
import os
import subprocess
import sys

import jax
import pytest

from benchmarks import gpu_data
from benchmarks import gpu_figures
from benchmarks import train_options
from datasets.knee_drr import knee_drr_dataset_builder as kb
from helpers import TINY
from helpers import read_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = str(kb.Builder.VERSION)  # The version the fixture builds.
TINY_ARGS = ['--builder_config', TINY.name, '--data_version', VERSION]


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


def test_whole_run_at_test_scale_writes_consistent_json_and_grid(tmp_path, data_dir):
  out = str(tmp_path / 'gpu')
  r = gpu_figures.main(['--scale', 'test', '--batch', '4', '--sample_batch', '4',
                        '--steps', '2', '--repeats', '2', '--matmul_n', '32',
                        '--data_dir', data_dir, *TINY_ARGS,
                        '--grid', '2', '--run_train_s', '0', '--out', out])
  with open(os.path.join(out, 'gpu_figures.json')) as f:
    on_disk = json.load(f)
  assert on_disk['wall_s'] == pytest.approx(r['wall_s'])
  # The data the run read, counted independently from the fixture's files.
  test_ids = {ex['patient_id'].decode() for ex in read_split(data_dir, 'test')}
  assert on_disk['data'] == r['data'] and r['data']['data'] == 'knee_drr'
  assert r['data']['name'] == f'knee_drr/{TINY.name}:{VERSION}' and not r['data']['built']
  assert r['data']['num_train_examples'] == len(read_split(data_dir, 'train'))
  assert r['data']['num_test_examples'] == len(read_split(data_dir, 'test'))
  assert {pid for pid, _ in r['data']['grid_views']} <= test_ids
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
  mesh = gpu_figures.parallel.make_mesh()
  seen = []
  get_data = lambda: gpu_data.memory_data(config, 2, 2, views=4)
  # A deadline already past: one update however long --run_train_s asks for.
  r = gpu_figures.short_run(config, mesh, get_data, 3600.0, 10, 2, str(tmp_path),
                            deadline=0.0, on_data=seen.append)
  assert r['steps'] == 1 and r['train_s'] < 600
  assert seen == [{'data': 'memory', 'phantoms': 2, 'views': 4, 'make_s': seen[0]['make_s'],
                   'num_train_examples': 4, 'num_test_examples': 4}]


def _device_script(tmp_path, **env) -> tuple[subprocess.CompletedProcess, dict]:
  """benchmarks/gpu_run.sh with this interpreter as the device's python3 and no wheels to
  install; returns the process and the JSON it left."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'python3').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
  (bin_dir / 'python3').chmod(0o755)
  out = tmp_path / 'out'
  out.mkdir()
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', OUT=str(out),
             GPU_WHEELS=str(tmp_path / 'no_wheels'), GPU_SITE=str(tmp_path / 'site'), **env)
  p = subprocess.run(['bash', 'benchmarks/gpu_run.sh'], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600, check=False)
  assert 'gpu_figures rc 0' in p.stdout, p.stdout + p.stderr
  with open(out / 'gpu_figures.json') as f:
    return p, json.load(f)


def test_device_script_runs_its_part_and_writes_the_grid(tmp_path, data_dir):
  # benchmarks/gpu_run.sh is what a GPU machine runs, once: here at the test scale.
  _, r = _device_script(tmp_path, GPU_BUDGET_S='40', GPU_GRACE_S='400',
                        GPU_ARGS=' '.join(['--scale test --batch 4 --grid 2 --data_dir',
                                           data_dir, *TINY_ARGS]))
  assert r['run']['steps'] >= 1 and 'train' not in r and 'errors' not in r
  assert r['data']['data'] == 'knee_drr' and r['data']['num_test_examples'] == 6
  assert os.path.getsize(tmp_path / 'out' / 'gpu_run_grid.png') > 1000


def test_device_script_falls_back_to_memory_data_where_knee_drr_cannot_load(tmp_path):
  # A machine without TFDS still runs, on phantoms scanned in memory, and says why.
  broken = tmp_path / 'broken' / 'tensorflow_datasets'
  broken.mkdir(parents=True)
  (broken / '__init__.py').write_text("raise ImportError('no TFDS on this machine')\n")
  p, r = _device_script(tmp_path, GPU_PARTS='flops', PYTHONPATH=str(broken.parent),
                        GPU_ARGS='--scale test --batch 4')
  assert 'no wheels in' in p.stdout
  assert 'knee_drr cannot be built or read here (ImportError: no TFDS on this machine)' in p.stdout
  assert r['data'] == {'data': 'memory'} and r['flops']['batch'] == 4


@pytest.mark.parametrize('args, train_s', [
    (['--budget_s', '500'], math.inf),  # gpu_run.sh's call: train until the deadline.
    ([], gpu_figures.DEFAULT_TRAIN_S),
    (['--budget_s', '500', '--run_train_s', '60'], 60.0)])
def test_run_trains_for_what_the_budget_leaves_unless_told(tmp_path, monkeypatch, args,
                                                           train_s):
  # A 500 s budget once stopped the run at the old 150 s default, leaving half the device
  # time idle.
  seen = {}

  def short_run(config, mesh, get_data, train_s, *rest, deadline=None, on_data=None,
                reserve_s=None, keep=None):
    seen.update(train_s=train_s, deadline=deadline, reserve_s=reserve_s)
    return {}
  monkeypatch.setattr(gpu_figures, 'short_run', short_run)
  gpu_figures.main(['--scale', 'test', '--parts', 'run', '--out', str(tmp_path)] + args)
  assert seen['train_s'] == train_s
  assert (seen['deadline'] is None) == ('--budget_s' not in args)
  assert seen['reserve_s'] == gpu_figures.RESERVE_S
  # With the leg part to follow, the run leaves it its reserve too.
  r = gpu_figures.main(['--scale', 'test', '--parts', 'run,leg', '--out', str(tmp_path)] + args)
  assert seen['reserve_s'] == gpu_figures.RESERVE_S + gpu_figures.LEG_RESERVE_S
  assert "run both" in r['errors']['leg']  # this fake run keeps no model
