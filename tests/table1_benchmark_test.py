"""benchmarks/table1.py: the commands in order, what counts as finished, resume after a
failure, and the result file's records (the runs themselves are faked)."""
import json
import os
import subprocess

import pytest

from benchmarks import table1
from score_sde_knee import checkpointing
from score_sde_knee import evaluate


def test_dry_run_lists_the_eleven_commands_in_order(capsys):
  assert table1.main(['--root', 'r', '--dry_run']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == ('python main.py --mode=train --config=configs/ctm.py:contour_bone,cpu '
                      '--workdir=r/ctm_contour_bone')
  assert lines[1] == 'python main.py --mode=eval --workdir=r/ctm_contour_bone'
  assert sum('--mode=train' in l for l in lines) == 5 and len(lines) == 11
  csm = [l for l in lines if 'r/csm' in l and '--mode=eval' in l]
  assert [l.split()[-1] for l in csm] == ['--condition=contour', '--condition=contour_bone']


def _fake_runs(monkeypatch, fail_on: str = ''):
  """subprocess.run that 'trains' by writing the config and the last checkpoint, and
  'evaluates' by writing metrics.json; records each call."""
  calls = []

  def run(argv, cwd, check, **kwargs):
    del check, kwargs
    if argv[0] == 'git':
      return subprocess.CompletedProcess(argv, 0, stdout='0123abc\n')
    calls.append(' '.join(argv[1:]))
    if fail_on and fail_on in calls[-1]:
      return subprocess.CompletedProcess(argv, 3)
    flags = dict(a[2:].split('=', 1) for a in argv if a.startswith('--') and '=' in a)
    if argv[1:3] == ['-m', 'score_sde_knee.report']:
      return subprocess.CompletedProcess(argv, 0)
    workdir = os.path.join(cwd, flags['workdir'])
    if flags['mode'] == 'train':
      os.makedirs(os.path.join(workdir, checkpointing.KEPT_DIR, '7'), exist_ok=True)
      with open(os.path.join(workdir, 'config.json'), 'w') as f:
        json.dump({'training': {'num_train_steps': 7}}, f)
    else:
      condition = flags.get('condition', 'trained')
      out = os.path.join(workdir, 'eval', condition)
      os.makedirs(out, exist_ok=True)
      with open(os.path.join(out, 'metrics.json'), 'w') as f:
        json.dump({'psnr_mean': 20.0, 'condition': condition}, f)
    return subprocess.CompletedProcess(argv, 0)

  monkeypatch.setattr(table1.subprocess, 'run', run)
  monkeypatch.setattr(evaluate, 'output_dir',
                      lambda workdir, condition, *a, **k: os.path.join(
                          workdir, 'eval', condition if 'csm' in workdir else 'trained'))
  return calls


def test_resumes_after_a_failure_without_rerunning_finished_work(tmp_path, monkeypatch):
  root, out = str(tmp_path / 'runs'), str(tmp_path / 'table1.json')
  monkeypatch.setattr(table1, 'ROOT', str(tmp_path))
  calls = _fake_runs(monkeypatch, fail_on='--workdir=' + os.path.join(root, 'csm'))
  assert table1.main(['--root', root, '--out', out]) == 3       # stops at CSM's training
  first = list(calls)
  assert len(first) == 5 and '--mode=train' in first[-1]
  saved = json.load(open(out))
  assert [r['rc'] for r in saved['runs']] == [0, 0, 0, 0, 3]
  assert saved['runs'][1]['metrics']['psnr_mean'] == 20.0     # an eval keeps its metrics
  assert saved['commit'] == '0123abc' and 'phantom_64' in saved['what']
  calls = _fake_runs(monkeypatch)
  assert table1.main(['--root', root, '--out', out]) == 0
  # Nothing finished runs again: CSM's training, its two evaluations, the last two
  # models and the report.
  assert len(calls) == 11 - 4 + 1 and 'score_sde_knee.report' in calls[-1]
  saved = json.load(open(out))
  assert len(saved['runs']) == 11 and all(r['rc'] == 0 for r in saved['runs'])
  evals = [r for r in saved['runs'] if r['mode'] == 'eval']
  assert len(evals) == 6 and all('metrics' in r for r in evals)


@pytest.mark.parametrize('kept, expected', [(['7'], True), (['5'], False), ([], False)])
def test_trained_needs_the_last_step_kept(tmp_path, kept, expected):
  os.makedirs(tmp_path / checkpointing.KEPT_DIR)
  for step in kept:
    os.makedirs(tmp_path / checkpointing.KEPT_DIR / step)
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump({'training': {'num_train_steps': 7}}, f)
  assert table1.trained(str(tmp_path)) is expected


def test_another_sampler_evaluates_ctm_and_csm_only(tmp_path):
  steps = table1.commands('r', 'cpu', [], sampler='fast')
  evals = [s for s in steps if s['mode'] == 'eval']
  for s in evals:
    unet = 'unet' in s['workdir']
    assert ('--sampler=fast' in s['argv']) is not unet, s['argv']
    # CTM and CSM results go beside the run's own, under eval_samplers/<condition>/<setting>.
    assert ('eval_samplers' in s['metrics']) is not unet
    assert s['metrics'].endswith('metrics.json') and s['condition'] in s['metrics']
