"""Table I at CPU scale: train the five models, evaluate them, write one result file.

    python -m benchmarks.table1 --root runs/table                    # CPU scale, newest data
    python -m benchmarks.table1 --root runs/table --sampler fast     # 49 evaluations
    python -m benchmarks.table1 --root runs/table --dry_run          # print the commands
    python -m benchmarks.table1 --root runs/t --scale test --steps 4  # a seconds-long rehearsal

Runs, in this order, `python main.py --mode=train` for CTM contour+bone, U-Net
contour+bone, CSM (trained once, on images only), CTM contour, U-Net contour, each followed
by its `--mode=eval` (CSM evaluated on both conditions), then `score_sde_knee.report` into
<root>/report. Interrupted, it starts again where it stopped: a model whose last checkpoint
is at the configured step is not retrained (a partly trained one resumes from its own
checkpoint), an evaluation whose metrics.json exists is not rerun. `--sampler` evaluates CTM
and CSM with another sampler than the config's (PC N = 500) and the report reads those
results (a U-Net is one forward pass: its own evaluation stands); the trained models are
shared, so a second sampler only adds evaluations. The result file
(benchmarks/results/table1_v<version>[_<sampler>]_cpu.json by default) holds each command,
its wall time and exit code and each evaluation's metrics.json, and is rewritten after
every command.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from score_sde_knee import checkpointing  # pylint: disable=g-import-not-at-top
from score_sde_knee import evaluate  # pylint: disable=g-import-not-at-top
from score_sde_knee import sampler_setting  # pylint: disable=g-import-not-at-top
from score_sde_knee.utils import files  # pylint: disable=g-import-not-at-top

# (workdir name, config file, condition the model is trained on, conditions evaluated)
MODELS = (('ctm_contour_bone', 'ctm', 'contour_bone', ('contour_bone',)),
          ('unet_contour_bone', 'unet', 'contour_bone', ('contour_bone',)),
          ('csm', 'csm', 'contour', ('contour', 'contour_bone')),
          ('ctm_contour', 'ctm', 'contour', ('contour',)),
          ('unet_contour', 'unet', 'contour', ('contour',)))


def commands(root: str, scale: str, overrides: list[str], sampler: str = '') -> list[dict]:
  """Every step of the benchmark, with what says it is finished."""
  out = []
  for name, method, condition, evals in MODELS:
    workdir = os.path.join(root, name)
    train = [sys.executable, 'main.py', '--mode=train',
             f'--config=configs/{method}.py:{condition},{scale}', f'--workdir={workdir}']
    out.append({'mode': 'train', 'workdir': workdir, 'argv': train + overrides})
    for c in evals:
      argv = [sys.executable, 'main.py', '--mode=eval', f'--workdir={workdir}']
      if method == 'csm':
        argv.append(f'--condition={c}')
      folder = evaluate.output_dir(workdir, c)
      if sampler and method != 'unet':
        argv.append(f'--sampler={sampler}')
        folder = evaluate.sampler_dir(workdir, c, sampler_setting.resolve(method, sampler, c))
      out.append({'mode': 'eval', 'workdir': workdir, 'condition': c, 'argv': argv,
                  'metrics': os.path.join(folder, 'metrics.json')})
  return out


def trained(workdir: str) -> bool:
  """The saved config's step count is reached by a kept checkpoint."""
  path = os.path.join(workdir, 'config.json')
  if not (os.path.exists(path) and evaluate.has_checkpoint(workdir)):
    return False
  with open(path) as f:
    steps = json.load(f)['training']['num_train_steps']
  kept = os.path.join(workdir, checkpointing.KEPT_DIR)
  return os.path.isdir(kept) and str(steps) in os.listdir(kept)


def _shown(argv: list[str]) -> str:
  return ' '.join(['python'] + argv[1:])


def _git_commit() -> str:
  try:
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ''


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--root', default='runs/table', help='one workdir per model under it')
  p.add_argument('--scale', default='cpu', help='config preset: cpu | test | paper')
  p.add_argument('--steps', type=int, default=0, help='training steps (0 = the preset)')
  p.add_argument('--out', default='', help='result file (default '
                 'benchmarks/results/table1_v<version>_cpu.json)')
  p.add_argument('--host', default=platform.processor() or platform.machine(),
                 help='recorded as the machine, e.g. "2 cores, AMD EPYC"')
  p.add_argument('--sampler', default='', help="CTM and CSM evaluated with this sampler "
                 "(e.g. 'fast'; default: the config's, PC N = 500)")
  p.add_argument('--dry_run', action='store_true', help='print the commands and stop')
  args = p.parse_args(argv)
  overrides = [f'--config.training.num_train_steps={args.steps}'] if args.steps else []
  steps = commands(args.root, args.scale, overrides, args.sampler)
  if args.dry_run:
    print('\n'.join(_shown(s['argv']) for s in steps))
    return 0
  from configs import default  # pylint: disable=g-import-not-at-top
  version = default.get_config('contour,' + args.scale).data.version
  suffix = f'_{sampler_setting.setting_dir(args.sampler)}' if args.sampler else ''
  out = args.out or os.path.join(ROOT, 'benchmarks', 'results',
                                 f'table1_v{version}{suffix}_cpu.json')
  result = {'what': f'Table I at {args.scale.upper()} scale on knee_drr/'
                    f"{default.get_config('contour,' + args.scale).data.builder_config}:"
                    f'{version}', 'host': args.host, 'commit': _git_commit(), 'runs': []}
  if os.path.exists(out):  # earlier commands' wall times survive a restart
    with open(out) as f:
      result['runs'] = json.load(f).get('runs', [])
  t_start = time.time()
  for i, s in enumerate(steps):
    command = _shown(s['argv'])
    # Paths are relative to the repository, where the commands run.
    finished = (trained(os.path.join(ROOT, s['workdir'])) if s['mode'] == 'train'
                else os.path.exists(os.path.join(ROOT, s['metrics'])))
    if finished:
      print(f'[{i + 1}/{len(steps)}] done: {command}', flush=True)
      continue
    elapsed = time.time() - t_start
    print(f'[{i + 1}/{len(steps)}] {command}  ({elapsed / 60:.0f} min so far)', flush=True)
    t = time.time()
    rc = subprocess.run(s['argv'], cwd=ROOT, check=False).returncode
    run = {'command': command, 'mode': s['mode'], 'wall_s': round(time.time() - t), 'rc': rc}
    if rc == 0 and s['mode'] == 'eval':
      with open(os.path.join(ROOT, s['metrics'])) as f:
        run['metrics'] = json.load(f)
    result['runs'] = [r for r in result['runs'] if r['command'] != command] + [run]
    files.write_json(out, result)
    if rc:
      print(f'failed (exit {rc}): {command}', file=sys.stderr)
      return rc
  report = [sys.executable, '-m', 'score_sde_knee.report', '--workdirs',
            *[os.path.join(args.root, m[0]) for m in MODELS],
            '--out', os.path.join(args.root, 'report' + suffix)]
  if args.sampler:
    report.append(f'--sampler={args.sampler}')
  print(f'report: {_shown(report)}', flush=True)
  return subprocess.run(report, cwd=ROOT, check=False).returncode


if __name__ == '__main__':
  sys.exit(main())
