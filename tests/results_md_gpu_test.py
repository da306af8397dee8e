"""benchmarks/RESULTS.md's "GPU: NVIDIA H200" tables against the device's result files and
the FLOP counts taken on the CPU, recomputed here."""
from helpers import load_result as _load, read, rounded as _rounded, table_rows

RESULTS_MD = read('benchmarks', 'RESULTS.md')

TRAIN = _load('gpu_figures_h200_train.json')
SAMPLER = _load('gpu_figures_h200_sampler.json')
FLOPS = _load('gpu_flops_paper_cpu.json')['flops']
PEAK = TRAIN['peaks']['bfloat16']  # GFLOP/s


def _number(cell: str) -> float:
  return float(cell.rstrip(' %').replace(',', ''))


def test_the_runs_are_the_paper_config_on_an_h200():
  for r in (TRAIN, SAMPLER):
    assert (r['device'], r['backend'], r['scale'], r['image_size'], r['batch']) == (
        'NVIDIA H200', 'gpu', 'paper', 256, 16)
  assert FLOPS['batch'] == 16 and TRAIN['train']['num_params'] == 24_430_470
  assert 'NVIDIA H200' in read('benchmarks', 'results', 'gpu_env_h200.txt')


def test_update_table_matches_its_files():
  rows = table_rows(RESULTS_MD, '| NVIDIA H200, paper config, CTM update at batch 16 |')
  flops = FLOPS['gflop_per_update']
  for i, dtype in enumerate(('float32', 'bfloat16')):
    t = TRAIN['train'][dtype]
    col = {label: cells[i] for label, cells in rows.items()}
    step = col['median update (3 calls of 5 updates after a warm-up call), ms']
    assert _number(step) == _rounded(t['step_s'] * 1e3, step)
    assert _number(col['images/s']) == _rounded(16 / t['step_s'], col['images/s'])
    achieved = flops / t['step_s'] / 1e3  # TFLOP/s
    assert _number(col['achieved TFLOP/s (10,374 GFLOP per update)']) == round(achieved, 1)
    share = col['share of the measured bfloat16 matmul peak (618 TFLOP/s)']
    assert _number(share) == round(100 * achieved * 1e3 / PEAK, 1)
    assert _number(col['compile, s']) == round(t['compile_s'], 1)
  assert round(flops) == 10_374 and round(PEAK / 1e3) == 618


def test_sampler_table_matches_its_files():
  rows = {k: v[0] for k, v in table_rows(
      RESULTS_MD, '| NVIDIA H200, paper config, PC sampler (float32) |').items()}
  s = SAMPLER['sampler']
  assert (s['batch'], s['N'], s['column_images'], s['fast_nfe']) == (66, 500, 330, 49)
  step = ('PC step (reverse-diffusion predictor + Langevin corrector: 2 evaluations), '
          'batch 66, ms')
  assert _number(rows[step]) == round(s['pc_step_s'] * 1e3, 1)
  evals = 2 * 66 / s['pc_step_s']
  assert _number(rows['network evaluations per s']) == round(evals)
  achieved = evals * FLOPS['gflop_per_network_eval'] / 1e3
  assert _number(rows['achieved TFLOP/s (216.5 GFLOP per evaluation)']) == round(achieved, 1)
  assert round(FLOPS['gflop_per_network_eval'], 1) == 216.5
  assert _number(rows['share of the measured bfloat16 matmul peak']) == round(
      100 * achieved * 1e3 / PEAK, 1)
  column = 5 * 500 * s['pc_step_s']  # ceil(330 / 66) calls of N PC steps
  assert _number(rows['one Table I column (330 images) at N = 500, min']) == round(
      column / 60, 1)
  fast = rows['the same with the 49-evaluation `fast` setting (from the step time), s']
  assert _number(fast) == round(column * 49 / 999)
  assert _number(rows['compile, s']) == round(s['compile_s'], 1)
  assert _number(rows['peak device memory, GiB']) == round(s['peak_device_bytes'] / 2**30, 1)


def test_drr_figure_matches_its_file():
  d = _load('drr_h200.json')
  assert d['device'] == 'NVIDIA H200'
  text = RESULTS_MD[RESULTS_MD.index('## GPU: NVIDIA H200'):]
  assert f"takes {d['scan_256_seconds'] * 1e3:.1f} ms" in text
  assert f"{100 * d['scan_256_rel_l2']:.2f} % error" in text


def test_bfloat16_speed_up_and_memory_in_the_text():
  t = TRAIN['train']
  text = RESULTS_MD[RESULTS_MD.index('## GPU: NVIDIA H200'):]
  speed_up = t['float32']['step_s'] / t['bfloat16']['step_s']
  assert f'trains {speed_up:.2f}x faster than float32' in text
  peak = max(t[d]['peak_device_bytes'] for d in ('float32', 'bfloat16')) / 2**30
  assert f'Peak device memory over both: {peak:.1f} GiB' in text
