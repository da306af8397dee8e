"""benchmarks.xla_cpu_flags: the variants alternate and the ratios are of medians."""
import json

import pytest


def test_xla_cpu_flags_alternates_variants_and_reports_median_ratios(monkeypatch, capsys):
  from benchmarks import xla_cpu_flags  # pylint: disable=g-import-not-at-top
  calls = []
  seconds = {'default': iter([(2.0, 0.6), (2.2, 0.7), (1.8, 0.5)]),
             'fast_conv': iter([(1.5, 0.5), (1.7, 0.4), (1.6, 0.6)])}

  def fake_child(variant, args):
    calls.append(variant)
    update, forward = next(seconds[variant])
    return {'update_s': update, 'forward_s': forward, 'update_min_s': update - 0.1,
            'forward_min_s': forward - 0.1, 'xla_flags': xla_cpu_flags.VARIANTS[variant]}

  monkeypatch.setattr(xla_cpu_flags, 'run_child', fake_child)
  xla_cpu_flags.main(['--rounds', '3'])
  out = json.loads(capsys.readouterr().out)
  assert calls == ['default', 'fast_conv'] * 3  # alternating: load changes hit both
  assert out['variants']['default']['update_s'] == 2.0  # medians over rounds
  assert out['variants']['fast_conv']['forward_s'] == 0.5
  assert out['speedup']['update_s'] == pytest.approx(2.0 / 1.6)
  assert out['speedup']['forward_s'] == pytest.approx(0.6 / 0.5)
  assert out['speedup']['update_min_s'] == pytest.approx(1.9 / 1.5)
  assert xla_cpu_flags.VARIANTS['fast_conv'] == out['flag']
  assert not xla_cpu_flags.VARIANTS['default']
