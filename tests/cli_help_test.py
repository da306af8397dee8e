"""Every script's `--help` runs: its argument parser is only built when the script starts,
so a bad help string or a stale name there passes every other test (sampler_curve once
failed this way)."""
import importlib
import os
import sys

import pytest

from helpers import ROOT

FOLDERS = ('benchmarks', 'experiments', 'score_sde_knee', os.path.join('score_sde_knee', 'xray'),
           os.path.join('datasets', 'knee_drr'))


def _scripts() -> list[str]:
  found = []
  for folder in FOLDERS:
    for name in sorted(os.listdir(os.path.join(ROOT, folder))):
      if name.endswith('.py'):
        with open(os.path.join(ROOT, folder, name), encoding='utf-8') as f:
          if '\ndef main(' in f.read():
            found.append(f"{folder.replace(os.sep, '.')}.{name[:-3]}")
  return found


def test_the_scripts_are_found():
  scripts = _scripts()
  assert {'benchmarks.sampler_curve', 'score_sde_knee.report',
          'datasets.knee_drr.build'} <= set(scripts)
  assert len(scripts) >= 15


@pytest.mark.parametrize('module', _scripts())
def test_help_prints_usage_and_exits_0(module, monkeypatch, capsys):
  main = importlib.import_module(module).main
  monkeypatch.setattr(sys, 'argv', [module, '--help'])
  with pytest.raises(SystemExit) as e:
    main()
  assert e.value.code in (0, None)
  assert 'usage:' in capsys.readouterr().out.lower()
