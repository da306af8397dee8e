"""benchmarks/gpu_leg.py, as the GPU script's `leg` part runs it: on the CPU at the test
scale, after a run of one update on phantoms scanned in memory."""
import json
import math
import os

from benchmarks import gpu_figures


def test_leg_part_samples_a_held_out_leg_and_the_consistent_set_agrees_with_itself(tmp_path):
  out = str(tmp_path / 'gpu')
  r = gpu_figures.main(['--scale', 'test', '--batch', '4', '--parts', 'run,leg',
                        '--data', 'memory', '--phantoms', '2', '--grid', '2',
                        '--run_train_s', '0', '--out', out])
  assert 'errors' not in r, r.get('errors')
  leg = r['leg']
  assert (leg['patient'], leg['views']) == ('phantom 1', 60)
  assert leg['image_size'] == r['image_size'] and leg['grid'] == min(64, r['image_size'])
  sets = leg['sets']
  assert set(sets) == {'independent', 'consistent', 'truth'}
  for name in ('independent', 'consistent'):
    assert sets[name]['compile_s'] > 0 and sets[name]['sample_s'] > 0
    assert math.isfinite(sets[name]['psnr']) and 0 < sets[name]['mae'] < 1
  # The DRRs are projections of one body (the floor the grid leaves); the consistent set,
  # even from a model of one update whose draws the final clip to [0, 1] cuts, is nearer
  # one volume's projections than the same draws made independently.
  assert sets['truth']['consistency_error'] < 0.05
  assert sets['consistent']['consistency_error'] < sets['independent']['consistency_error']
  assert os.path.getsize(leg['png']) > 10_000
  with open(os.path.join(out, 'gpu_figures.json')) as f:
    assert json.load(f)['leg'] == leg


def test_leg_part_without_the_run_says_so(tmp_path):
  r = gpu_figures.main(['--scale', 'test', '--parts', 'leg', '--out', str(tmp_path)])
  assert "run both (--parts run,leg)" in r['errors']['leg'] and 'leg' not in r
