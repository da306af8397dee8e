"""Does adding synthetic radiographs to a small training set help a segmentation model?

    python -m benchmarks.augmentation --workdir runs/augmentation --data_dir DIR \
        --version 2.0.0 --k 2,6 --seeds 3 --seg_steps 1500 --gen_steps 2000 \
        --samples_per_mask 1 [--regimes real-k,real-k+ctm,ceiling] [--scale test]

Regimes (`--regimes`: templates, k standing for each `--k`, or names with their k, as
`real-2+csm`, for that k alone): `real-k`, the first k training patients of a fixed
permutation (`--subset_seed`; nested in k), all their views or `--views_per_patient` evenly
spaced by angle; `real-k+classic`, the same with the segmenter's classic augmentation;
`real-k+G` for a generator G in ctm, unet, csm: plus the images that G, trained on those k
patients only, drew (`--sampler=fast`, the U-Net's one pass) from the contour_bone masks of
the other training patients (`--mask_views` of each, 0 = all), whose images are never used;
`real-k+G:deformed`: from the k patients' own masks, each warped (the segmenter's affine and
elastic warps, no flip, nearest label), as many as the other patients give;
`real-k+ctm+classic`: CTM's images and the classic augmentation (on real and synthetic
images alike); `ceiling`: every training patient. Each regime trains the segmenter
(score_sde_knee/segmenter.py) `--seeds` times with the same steps, augmenting only where
`classic` is named, and scores bone and leg Dice on every view of the test patients.

Stages, kept under --workdir and skipped on a rerun (a changed setting that would alter them
is refused): (1) subsets.json; (2) gen/<G>_k<k>/: configs/<G>.py:contour_bone,<scale> trained
`--gen_steps` on the subset, through train_and_evaluate's datasets_fn (`augmentation_data`);
(3) synth/<G>_k<k>_<source>/: masks, samples (generate.generate) and their export
(generate.export_tfds), read back with tfds.builder_from_directory; (4) seg/<regime>/seed<s>/
result.json (seed 0 also predictions.npz, for the figure); (5) the report (--out, atomic),
the figure (--figure) and beside it <figure>_samples.png, what each generator drew
(benchmarks/augmentation_figure.py). Per regime, dice_*_mean is the mean over seeds of each
seed's mean over the test images, dice_*_std the std of those means (ddof 0),
dice_*_image_std the mean over seeds of the std over images; gap_closed = (bone Dice -
real-k's) / (ceiling's - real-k's); with other patients' masks,
synthetic_{psnr,mae}_{mean,std}: each draw against that mask's own radiograph, which no
stage trains on (how good the generator is at k patients); with any synthetic set, where the
ceiling's seed 0 is in the workdir, label_dice_{bone,leg}_{mean,std}: that segmenter on each
synthetic image against the labels of its mask (are the bones where the labels say?). Data:
benchmarks/augmentation_data.py; report: benchmarks/augmentation_report.py.
"""
import argparse
import dataclasses
import importlib
import os
import re
import shutil
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import augmentation_data as ad  # pylint: disable=g-import-not-at-top
from benchmarks import augmentation_figure
from benchmarks import augmentation_report
from benchmarks import machine
from score_sde_knee import generate
from score_sde_knee import run_config
from score_sde_knee import segmenter as seg
from score_sde_knee import segmenter_data as sd
from score_sde_knee import train
from score_sde_knee.utils import files
from score_sde_knee.utils import progress
from score_sde_knee.utils import resize

TEMPLATES = ('real-k', 'real-k+classic', 'real-k+ctm', 'real-k+ctm:deformed', 'real-k+unet',
             'real-k+unet:deformed', 'real-k+csm', 'real-k+csm:deformed', 'real-k+ctm+classic',
             'ceiling')
# Per-unit guesses for the budget, cpu scale on 2 cores: a 2000-step model took 24-32 min and
# `fast` 0.5-0.7 s per image (benchmarks/RESULTS.md); a segmenter step (batch 16, 64 px) took
# 0.28 s, 0.45 s with augmentation (AMD EPYC, 2 shared cores); plus a start-up per unit.
GUESS_S = {'gen_step': 0.8, 'ctm': 0.6, 'csm': 0.6, 'unet': 0.02, 'seg_step': 0.3,
           'classic_step': 0.45, 'unit': 20.0}
FIGURE_IMAGES = 4
EVAL_BATCH = 32
# What finished stages depend on: a rerun must keep them.
FIXED = ('data', 'scale', 'gen_steps', 'seg_steps', 'samples_per_mask', 'views_per_patient',
         'mask_views', 'subset_seed')


@dataclasses.dataclass(frozen=True)
class Settings:
  workdir: str
  data_dir: str
  builder_config: str = 'phantom_64'
  version: str = '2.0.0'
  ks: tuple[int, ...] = (2, 6)
  seeds: int = 3
  seg_steps: int = 1500
  gen_steps: int = 2000
  samples_per_mask: int = 1
  views_per_patient: int = 0   # 0: every view
  mask_views: int = 0          # 0: every view of each other patient
  regimes: tuple[str, ...] = TEMPLATES
  scale: str = 'cpu'
  subset_seed: int = 0
  out: str = ''
  figure: str = ''
  command: str = ''

  @property
  def data(self) -> str:
    return os.path.join(self.data_dir, 'knee_drr', self.builder_config, self.version)


@dataclasses.dataclass(frozen=True)
class Regime:
  name: str           # the template with k filled in, e.g. real-2+ctm:deformed
  k: int | None       # None: ceiling
  generator: str      # none | classic | ctm | unet | csm
  mask_source: str    # none | other_patients | deformed
  augment: bool = False  # the segmenter's classic augmentation (classic, ctm+classic)


CEILING = Regime('ceiling', None, 'none', 'none')


def parse_regimes(templates: Sequence[str], ks: Sequence[int]) -> list[Regime]:
  """Regimes in TEMPLATES order, per k; the ceiling last. A template names a regime for
  every k; a name with its k (`real-2+csm`) for that k alone."""
  per_k = {k: set() for k in ks}
  for t in templates:
    m = re.fullmatch(r'real-(\d+)(.*)', t)
    if m and int(m[1]) not in per_k:
      raise ValueError(f'--regimes: {t!r} is for k = {m[1]}, not one of --k {ks}.')
    if (f'real-k{m[2]}' if m else t) not in TEMPLATES:
      raise ValueError(f'--regimes: {t!r} unknown; expected some of {",".join(TEMPLATES)}, '
                       'or one of them with its k (real-2+csm).')
    for k in ([int(m[1])] if m else ks):
      per_k[k].add(f'real-k{m[2]}' if m else t)
  out = []
  for k in ks:
    for t in (t for t in TEMPLATES if t in per_k[k] and t != 'ceiling'):
      gen, _, deformed = t.removeprefix('real-k').lstrip('+').partition(':')
      gen, _, extra = gen.partition('+')
      source = 'none' if gen in ('', 'classic') else deformed or 'other_patients'
      out.append(Regime(t.replace('real-k', f'real-{k}'), k, gen or 'none', source,
                        augment='classic' in (gen, extra)))
  return out + ([CEILING] if 'ceiling' in templates else [])


def gen_config(gen: str, s: Settings):
  c = importlib.import_module(f'configs.{gen}').get_config(f'contour_bone,{s.scale}')
  c.data.data_dir, c.data.builder_config = s.data_dir, s.builder_config
  c.data.version, c.training.num_train_steps = s.version, s.gen_steps
  return c


def train_generator(s: Settings, gen: str, k: int, subsets: dict, real: dict) -> None:
  """Stage 2: the generator, trained on the k patients' views only."""
  workdir = os.path.join(s.workdir, 'gen', f'{gen}_k{k}')
  files.write_json(os.path.join(workdir, 'subset.json'), subsets['k'][str(k)])
  train.train_and_evaluate(gen_config(gen, s), workdir, datasets_fn=ad.subset_datasets(
      ad.Subset(real['train'], subsets['k'][str(k)]['real']), real['validation']))
  files.write_json(os.path.join(workdir, 'done.json'), {'steps': s.gen_steps})


def sample_generator(s: Settings, gen: str, k: int, source: str, subsets: dict,
                     real: dict) -> None:
  """Stage 3: masks -> generate -> export_tfds (again from scratch if a cut one is there)."""
  base = ad.synth_dir(s.workdir, gen, k, source)
  gen_dir = os.path.join(s.workdir, 'gen', f'{gen}_k{k}')
  config = run_config.load(gen_dir)
  size, sub = int(config.data.image_size), subsets['k'][str(k)]
  masks = [(sd.labels_from_mask(resize.area_resize(np.asarray(
      real['train'][i]['contour_bone'], np.float32), size)) * 0.5).astype(np.float32)[..., None]
           for i in (sub['masks'] if source == 'other_patients' else sub['real'])]
  if source == 'deformed':
    masks = ad.deformed_masks(masks, len(sub['masks']), seed=s.subset_seed * 1000 + k)
  for j, m in enumerate(masks):
    files.write_npy(os.path.join(base, 'masks', f'm{j:05d}.npy'), m)
  unet = gen == 'unet'  # one deterministic forward pass: no sampler, one image per mask
  generate.generate(config, gen_dir, masks=os.path.join(base, 'masks'),
                    out=os.path.join(base, 'samples'), seed=0, sampler=None if unet else 'fast',
                    num_samples=1 if unet else s.samples_per_mask)
  shutil.rmtree(os.path.join(base, 'tfds'), ignore_errors=True)
  path = generate.export_tfds(os.path.join(base, 'samples'), os.path.join(base, 'tfds'))
  files.write_json(os.path.join(base, 'done.json'), {'tfds': os.path.relpath(path, base)})


def seg_config(s: Settings, r: Regime, seed: int) -> seg.SegmenterConfig:
  small = {'batch_size': 4, 'features': 8, 'levels': 2} if s.scale == 'test' else {}
  # The generators' image size for real and synthetic images alike.
  return seg.SegmenterConfig(steps=s.seg_steps, seed=seed,
                             augment=r.augment,
                             image_size=int(gen_config('ctm', s).data.image_size), **small)


def run_segmenter(s: Settings, r: Regime, seed: int, subsets: dict, real: dict) -> None:
  """Stage 4: one segmenter; seed 0 also keeps its labels of the figure's test images."""
  workdir = os.path.join(s.workdir, 'seg', r.name, f'seed{seed}')
  sources = [ad.Subset(real['train'],
                       subsets['all'] if r.k is None else subsets['k'][str(r.k)]['real'])]
  if r.mask_source != 'none':
    sources.append(seg.open_source(
        ad.synthetic_tfds(s.workdir, r.generator, r.k, r.mask_source), 'train'))
  config = seg_config(s, r, seed)
  params = seg.train_segmenter(config, sources, workdir)
  result = seg.evaluate_segmenter(params, config, real['test'], batch_size=EVAL_BATCH)
  if seed == 0:
    idx = np.unique(np.linspace(0, len(real['test']) - 1, FIGURE_IMAGES).round().astype(int))
    images = np.zeros((EVAL_BATCH, config.image_size, config.image_size, 1), np.float32)
    for j, i in enumerate(idx):  # padded as evaluate_segmenter pads: the same program
      images[j] = sd.example_arrays(real['test'][i], config.image_size)['image']
    files.write_npz(os.path.join(workdir, 'predictions.npz'), indices=idx,
                    labels=seg.predict(params, config, images)[:len(idx)])
  files.write_json(os.path.join(workdir, 'result.json'), {
      'n_real': len(sources[0]), 'n_synthetic': sum(len(x) for x in sources[1:]),
      **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in result.items()}})


def _stage(name: str, units: list, fn: Callable[..., None],
           done: Callable[..., bool]) -> dict[str, int]:
  """fn(*unit) for each unit not done, with a progress line (rate, ETA) after each."""
  todo = [u for u in units if not done(*u)]
  bar = progress.Progress(len(units), name, done=len(units) - len(todo), unit='unit', every=0)
  print(bar.line(), file=sys.stderr, flush=True)
  for u in todo:
    fn(*u)
    bar.update(force=True)
  return {'ran': len(todo), 'skipped': len(units) - len(todo)}


def run(s: Settings) -> dict[str, Any]:
  """Every stage, skipping what is on disk; returns the report, with 'stages' added."""
  regimes = parse_regimes(s.regimes, s.ks)
  fixed, path = {k: getattr(s, k) for k in FIXED}, lambda *p: os.path.join(s.workdir, *p)
  if not os.path.exists(path('settings.json')):
    files.write_json(path('settings.json'), fixed)
  diff = {k: (w, fixed.get(k)) for k, w in files.read_json(path('settings.json')).items()
          if w != fixed.get(k)}
  if diff:
    raise ValueError(f"{path('settings.json')}: the workdir holds a run with other settings "
                     f'(field: (saved, now)): {diff}. Keep them or use another --workdir.')
  real = {split: seg.open_source(s.data, split) for split in ('train', 'validation', 'test')}
  subsets = files.read_json(path('subsets.json')) if os.path.exists(path('subsets.json')) else {}
  stages = {'subsets': {'ran': 0, 'skipped': 1}}
  if any(str(k) not in subsets.get('k', {}) for k in s.ks):
    ks = sorted(set(s.ks) | {int(k) for k in subsets.get('k', {})})
    subsets = ad.make_subsets(real['train'], ks, s.subset_seed, s.views_per_patient,
                              s.mask_views)
    stages['subsets'] = {'ran': 1, 'skipped': 0}
    files.write_json(path('subsets.json'), subsets)
  synth = sorted({(r.generator, r.k, r.mask_source) for r in regimes if r.mask_source != 'none'})
  gens = sorted({(g, k) for g, k, _ in synth})
  segs = [(r, seed) for r in regimes for seed in range(s.seeds)]
  gen_done = lambda g, k: os.path.exists(path('gen', f'{g}_k{k}', 'done.json'))
  synth_done = lambda g, k, m: os.path.exists(os.path.join(ad.synth_dir(s.workdir, g, k, m),
                                                           'done.json'))
  seg_done = lambda r, seed: os.path.exists(path('seg', r.name, f'seed{seed}', 'result.json'))
  # The budget of what is left, from GUESS_S.
  g, f = GUESS_S, progress.format_seconds
  left = [sum(g['unit'] + s.gen_steps * g['gen_step'] for u in gens if not gen_done(*u)),
          sum(g['unit'] + len(subsets['k'][str(u[1])]['masks']) * g[u[0]] * (
              1 if u[0] == 'unet' else s.samples_per_mask) for u in synth if not synth_done(*u)),
          sum(g['unit'] + s.seg_steps * g['classic_step' if u[0].augment
                                          else 'seg_step'] for u in segs if not seg_done(*u))]
  print(f'budget guess (per unit, s: {g}): {len(gens)} generators {f(left[0])}, '
        f'{len(synth)} synthetic sets {f(left[1])}, {len(segs)} segmenters {f(left[2])}; '
        f'left in all {f(sum(left))}', file=sys.stderr, flush=True)
  stages['generators'] = _stage('stage 2 generators', gens, lambda g, k: train_generator(
      s, g, k, subsets, real), gen_done)
  stages['sampling'] = _stage('stage 3 sampling', synth, lambda g, k, m: sample_generator(
      s, g, k, m, subsets, real), synth_done)
  stages['segmenters'] = _stage('stage 4 segmenters', segs, lambda r, seed: run_segmenter(
      s, r, seed, subsets, real), seg_done)
  rows = augmentation_report.summarize(s.workdir, s.seeds, regimes)
  judge = None  # the ceiling's seed 0, where there is one, judges the synthetic labels
  if synth and seg_done(CEILING, 0):
    config = seg_config(s, CEILING, 0)
    judge = seg.restore_params(config, path('seg', 'ceiling', 'seed0'), config.image_size), config
  augmentation_report.score_synthetic(s.workdir, rows, subsets, real['train'], judge, EVAL_BATCH)
  env = machine.environment(('jax', 'jaxlib', 'flax', 'grain', 'tensorflow-datasets'))
  report = {'regimes': rows, **env, 'command': s.command,
            'settings': {**fixed, 'ks': list(s.ks), 'seeds': s.seeds},
            'patients': {'order': subsets['patients'],
                         **{f'k{k}': v['patients'] for k, v in subsets['k'].items()}}}
  out = s.out or (path('augmentation_test.json') if s.scale == 'test'
                  else os.path.join('benchmarks', 'results', 'augmentation_cpu.json'))
  files.write_json(out, report)
  figure = s.figure or path('augmentation.png')
  augmentation_figure.save_figure(s.workdir, rows, real['test'], figure)
  samples = os.path.splitext(figure)[0] + '_samples.png'
  augmentation_figure.save_samples_figure(s.workdir, s.ks, subsets, real['train'], samples)
  for r in rows:
    print(f"{r['name']:<22} bone {r['dice_bone_mean']:.4f} ± {r['dice_bone_std']:.4f}, leg "
          f"{r['dice_leg_mean']:.4f} ± {r['dice_leg_std']:.4f}; {r['n_real']} real, "
          f"{r['n_synthetic']} synthetic", file=sys.stderr)
  print(f'report {out}, figures {figure}, {samples}', file=sys.stderr, flush=True)
  return {**report, 'stages': stages, 'out': out, 'figure': figure, 'samples_figure': samples}


def parse(argv: Sequence[str] | None = None) -> Settings:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='every stage is kept here (resumable)')
  p.add_argument('--data_dir', required=True, help='TFDS data dir holding knee_drr')
  p.add_argument('--builder_config', default='phantom_64', help='knee_drr config')
  p.add_argument('--version', default='2.0.0', help='knee_drr version')
  p.add_argument('--k', default='2,6', help='comma-separated numbers of real patients')
  p.add_argument('--seeds', type=int, default=3, help='segmenter seeds per regime')
  p.add_argument('--seg_steps', type=int, help='segmenter steps (cpu 1500, test 4)')
  p.add_argument('--gen_steps', type=int, help="generator steps (the scale's: cpu 2000)")
  p.add_argument('--samples_per_mask', type=int, default=1, help='(the U-Net draws 1)')
  p.add_argument('--views_per_patient', type=int, default=0, help='real views (0: all)')
  p.add_argument('--mask_views', type=int, default=0, help='views of each other patient '
                 'whose masks are sampled from (0: all)')
  p.add_argument('--regimes', default=','.join(TEMPLATES), help='comma-separated, of '
                 f'{",".join(TEMPLATES)} (default: all), each for every k; or with its k '
                 '(real-2+csm) for that k alone')
  p.add_argument('--scale', choices=('cpu', 'test'), default='cpu')
  p.add_argument('--subset_seed', type=int, default=0, help='the patients order')
  p.add_argument('--out', default='', help='report JSON (default benchmarks/results/'
                 'augmentation_cpu.json; --scale test: <workdir>/augmentation_test.json)')
  p.add_argument('--figure', default='', help='PNG (default <workdir>/augmentation.png)')
  a = p.parse_args(argv)
  try:
    ks = tuple(int(k) for k in a.k.split(',') if k)
  except ValueError:
    p.error(f'--k {a.k}: expected comma-separated integers such as 2,6')
  test = a.scale == 'test'
  steps = importlib.import_module('configs.default').get_config(a.scale).training
  return Settings(
      a.workdir, a.data_dir, a.builder_config, a.version, ks, a.seeds,
      a.seg_steps or (4 if test else 1500), a.gen_steps or int(steps.num_train_steps),
      a.samples_per_mask, a.views_per_patient, a.mask_views,
      tuple(t for t in a.regimes.split(',') if t), a.scale, a.subset_seed, a.out, a.figure,
      'python -m benchmarks.augmentation ' + ' '.join(sys.argv[1:] if argv is None else argv))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  s, t0 = parse(argv), time.perf_counter()
  try:
    result = run(s)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  print(f'done in {progress.format_seconds(time.perf_counter() - t0)}', file=sys.stderr)
  return result


if __name__ == '__main__':
  from score_sde_knee.utils import xla_cpu  # pylint: disable=g-import-not-at-top
  xla_cpu.configure()
  progress.quiet_library_info()
  main()
