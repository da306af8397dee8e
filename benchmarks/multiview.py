"""Consistent multi-view generation of whole legs, per test patient and over the test split.

    python -m benchmarks.multiview --workdir runs/ctm_cb [--samplers fast,paper] \
        [--patients phantom_0003,phantom_0017] [--draws 3] [--seed 0] [--grid 64] \
        [--out benchmarks/results/multiview_cpu.json] [--work runs/multiview_bench]

For each sampler setting (`fast`, `paper` = PC N = 500, or any pc:N string) and each test
patient of the run's data set, the patient's 60 masks are sampled as whole legs the way
`main.py --mode=sample --views=all` does (score_sde_knee/multiview_run.py: the same
consistency step, the same 30-iteration CGLS reconstruction, draw k keyed PRNGKey(seed + k)
for both samplers). Sets:
  truth             the data set's DRRs: the ceiling of every volume metric, the floor of
                    the consistency error
  independent       each view sampled on its own (the paper's way); the mean over --draws
  consistent        multiview.py's consistency step; the mean over --draws
  independent_mean  the metrics of the mean of the --draws independent draws (its views)
  consistent_mean   the same for the consistent draws
Keys of each set:
  consistency_error  multiview.consistency_error: ||A v - p|| / ||p||, v the views' own
                     least-squares volume on the grid
  view_psnr_mean, view_mae_mean  against the true DRRs, mean over the views (None: truth)
  volume_psnr        the set's reconstructed volume against the phantom's attenuation
                     area-averaged onto the reconstruction grid (`area_resample`: each voxel
                     the mean of the phantom over its box, air outside the phantom), both in
                     v = mu / c with the patient's TRUE c (`true_scale`: make_phantom with
                     the data version's revision and the data set's spacing, drr.hu_to_mu,
                     the 60 views at the data set's detector, their maximum line integral:
                     what the builder divides by); data range = that phantom volume's max
  bone_dice_3d       Dice of {volume >= v_bone} against {phantom volume >= v_bone}, both on
                     the grid, v_bone = hu_to_mu(bone_threshold_hu = 200) / c: the data
                     set's own bone threshold, between soft tissue and bone (so the
                     reference mask is the phantom's mean HU over the voxel >= 200, and a
                     volume equal to the phantom on the grid scores 1)
  volume_sharpness   gradient energy (`gradient_energy`: the mean squared forward
                     difference per mm, summed over the three axes, without n // 16 slices
                     at each end in z, where the leg beyond the grid is spread) of the
                     volume over that of the truth's volume: near 1 is right, below 1 blur
  seconds_per_leg    sampling one leg, compilation excluded (the mean sets: all draws);
                     each sampler's first leg with compilation is kept apart
                     (seconds_first_leg_with_compilation)
Per patient in the JSON and summarised as mean and std (ddof 0) over patients.

Resumable: each (sampler, patient) is written to <work>/<sampler>/<patient>.json when done
(atomically) and not recomputed; one made with other settings is an error. Refused: a U-Net
run (no sampler), a data set not made of phantoms (the volume keys need the phantom; a CT
data set would need its CTs), a patient not in the test split, a sampler that is not PC.
The goals (GOALS; printed and recorded, not asserted): the consistent set's consistency
error <= 1/5 of the independent set's and <= 2x the truth's floor; its view PSNR, volume
PSNR and bone Dice not below the independent set's; its time <= 3x independent's and
<= 10 min per leg.
"""
import argparse
import json
import os
import shlex
import sys
import time
from typing import Any

import jax
import numpy as np

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top

from benchmarks import machine
from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import evaluate
from score_sde_knee import methods
from score_sde_knee import metrics
from score_sde_knee import model_utils
from score_sde_knee import multiview
from score_sde_knee import multiview_metrics
from score_sde_knee import multiview_run
from score_sde_knee import parallel
from score_sde_knee import run_config
from score_sde_knee import sampler_setting
from score_sde_knee.sampler_setting import SamplerSettings
from score_sde_knee.utils import files
from score_sde_knee.utils import progress
from score_sde_knee.xray import geometry as geometry_lib

SETS = ('truth', 'independent', 'consistent', 'independent_mean', 'consistent_mean')
KEYS = ('consistency_error', 'view_psnr_mean', 'view_mae_mean', 'volume_psnr',
        'bone_dice_3d', 'volume_sharpness', 'seconds_per_leg')
DRAWN = ('independent', 'consistent')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, 'benchmarks', 'results', 'multiview_cpu.json')
DEFAULT_WORK = os.path.join('runs', 'multiview_bench')
MAX_LEG_SECONDS = 600.0  # a goal: one consistent leg in 10 minutes


# --- The data set's phantoms -------------------------------------------------------------


def data_builder_config(config, data_config=None):
  """knee_drr's config of the run's data set (or `data_config`, for one not registered),
  refused unless made of phantoms."""
  name = config.data.builder_config
  if data_config is None:
    known = {c.name: c for c in kb.Builder.BUILDER_CONFIGS}
    if name not in known:
      raise ValueError(f'config.data.builder_config={name!r} is not one of knee_drr\'s '
                       f'configs ({", ".join(known)}): its phantoms\' voxel size is unknown')
    data_config = known[name]
  if data_config.name != name:
    raise ValueError(f'data config {data_config.name!r} for a run on knee_drr/{name}')
  if data_config.source != 'phantom':
    raise ValueError(f'knee_drr/{name} is made from {data_config.source} data: volume_psnr '
                     'and bone_dice_3d compare each volume with the phantom its DRRs were '
                     'made from, which only phantom data sets have (CT data would need the '
                     'CTs); use a run on a phantom_* data set')
  return data_config



def phantom_revision(config) -> tuple[str, int]:
  """(data version, make_phantom revision) of the run's data set."""
  version = config.data.get('version', '') or str(kb.Builder.VERSION)
  if version not in kb.Builder.PHANTOM_REVISION:
    raise ValueError(f'config.data.version={version!r}: expected one of '
                     f'{sorted(kb.Builder.PHANTOM_REVISION)}')
  return version, kb.Builder.PHANTOM_REVISION[version]



def _number(x) -> float | None:
  return float(x) if x is not None and np.isfinite(x) else None


def set_metrics(views: np.ndarray, truth: np.ndarray | None, ref: multiview_metrics.Reference,
                consistency: multiview.Consistency, truth_volume: np.ndarray | None = None):
  """(every key but seconds_per_leg, the reconstructed volume) of a set's (V, H, W, 1)
  views; truth None: the views are the truth (no view metrics, sharpness 1)."""
  volume, error = multiview_run.reconstruct(np.asarray(views, np.float32), consistency)
  volume = np.asarray(volume)
  margin = multiview_metrics.sharpness_margin(consistency.volume_shape[0])
  out = {'consistency_error': float(error), 'view_psnr_mean': None, 'view_mae_mean': None,
         'volume_psnr': _number(multiview_metrics.volume_psnr(volume, ref)),
         'bone_dice_3d': multiview_metrics.bone_dice_3d(volume, ref),
         'volume_sharpness': _number(multiview_metrics.volume_sharpness(
             volume, volume if truth_volume is None else truth_volume,
             consistency.spacing_mm, margin))}
  if truth is not None:
    out['view_psnr_mean'] = _number(np.mean(metrics.psnr(views, truth)))
    out['view_mae_mean'] = float(np.mean(metrics.mae(views, truth)))
  return out, volume


def mean_over(rows: list[dict[str, Any]]) -> dict[str, float | None]:
  """Each key's mean over rows, ignoring None (None if all are)."""
  out = {}
  for key in rows[0]:
    values = [r[key] for r in rows if r[key] is not None]
    out[key] = float(np.mean(values)) if values else None
  return out


def summarise(per_patient: dict[str, dict]) -> dict[str, dict]:
  """set -> key -> {mean, std, n} over patients (None where no patient has a value)."""
  out = {}
  for name in SETS:
    out[name] = {}
    for key in KEYS:
      values = [p['sets'][name][key] for p in per_patient.values()
                if p['sets'][name][key] is not None]
      out[name][key] = ({**metrics.summarise(values), 'n': len(values)} if values else None)
  return out


# --- Sampling ------------------------------------------------------------------------------


class LegSampler:
  """One sampler setting's leg sampler (multiview.sample_leg), compiled ahead of its first
  draw for each (masks shape, consistency) so that compilation is timed apart."""

  def __init__(self, config, params):
    self._jit = multiview.leg_sampler(config, model_utils.create_model(config))
    self._params, self._compiled = params, {}

  def __call__(self, masks, key, consistency) -> tuple[np.ndarray, float, float | None]:
    """(views, seconds sampling, seconds compiling or None if compiled before)."""
    compile_s, k = None, (masks.shape, consistency)
    if k not in self._compiled:
      begin = time.perf_counter()
      self._compiled[k] = self._jit.lower(self._params, masks, key, consistency).compile()
      compile_s = time.perf_counter() - begin
    begin = time.perf_counter()
    views = np.asarray(self._compiled[k](self._params, masks, key), np.float32)
    return views, time.perf_counter() - begin, compile_s


def evaluate_leg(leg: multiview_run.Leg, ref: multiview_metrics.Reference,
                 consistency: multiview.Consistency, sample, draws: int,
                 seed: int) -> dict[str, Any]:
  """Every set's keys for one leg, each draw's, and the first leg's time with compilation."""
  truth, sets = leg.truth, {}
  sets['truth'], truth_volume = set_metrics(truth, None, ref, consistency)
  sets['truth']['seconds_per_leg'] = None
  per_draw, first = {}, {}
  for kind in DRAWN:
    rows, stack = [], []
    for k in range(draws):
      views, seconds, compile_s = sample(leg.masks, jax.random.PRNGKey(seed + k),
                                         consistency if kind == 'consistent' else None)
      if compile_s is not None:
        first[kind] = compile_s + seconds
      row, _ = set_metrics(views, truth, ref, consistency, truth_volume)
      rows.append({**row, 'seconds_per_leg': seconds})
      stack.append(views)
    per_draw[kind] = rows
    sets[kind] = mean_over(rows)
    sets[f'{kind}_mean'], _ = set_metrics(np.mean(stack, axis=0), truth, ref, consistency,
                                          truth_volume)
    sets[f'{kind}_mean']['seconds_per_leg'] = float(sum(r['seconds_per_leg'] for r in rows))
  return {'sets': sets, 'draws': per_draw, 'seconds_first_leg_with_compilation': first}


# --- Goals and the record ------------------------------------------------------------------


# (goal, key, the set it is measured against (None: a fixed bound), factor, at most?)
GOALS = (("consistency error <= 1/5 of independent's", 'consistency_error', 'independent',
          0.2, True),
         ("consistency error <= 2x truth's floor", 'consistency_error', 'truth', 2.0, True),
         ("view PSNR >= independent's", 'view_psnr_mean', 'independent', 1.0, False),
         ("volume PSNR >= independent's", 'volume_psnr', 'independent', 1.0, False),
         ("bone Dice 3-D >= independent's", 'bone_dice_3d', 'independent', 1.0, False),
         ("seconds per leg <= 3x independent's", 'seconds_per_leg', 'independent', 3.0, True),
         ('seconds per leg <= 600', 'seconds_per_leg', None, MAX_LEG_SECONDS, True))


def goals(summary: dict[str, dict]) -> list[dict[str, Any]]:
  """GOALS for the consistent set's means, each with its numbers and whether it is met."""
  mean = lambda name, key: (summary[name][key] or {}).get('mean')
  out = []
  for text, key, other, factor, at_most in GOALS:
    a, b = mean('consistent', key), factor if other is None else mean(other, key)
    b = None if b is None else (factor * b if other else b)
    met = None if a is None or b is None else bool(a <= b if at_most else a >= b)
    out.append({'goal': text, 'value': a, 'bound': b, 'met': met})
  return out


def environment() -> dict[str, Any]:
  env = machine.environment(('jax', 'jaxlib', 'flax', 'numpy', 'scipy', 'tensorflow-datasets'))
  env['machine'].update(backend=jax.default_backend(), device=str(jax.devices()[0].device_kind))
  return env


def _sampler_configs(config, samplers, condition) -> dict[str, tuple[Any, str]]:
  """name -> (config sampling with it, its setting string); PC settings only."""
  out = {}
  for name in samplers:
    config_s, setting = sampler_setting.apply(config, name, condition)
    solver = SamplerSettings.from_config(config_s).solver
    if solver != 'pc':
      raise ValueError(f'--samplers {name}: the consistency step runs in the PC sampler, '
                       f'not {solver}; use fast, paper or a pc:N setting')
    out[name] = (config_s, setting)
  return out


def _read_done(path: str) -> dict[str, Any] | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    try:
      record = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); delete it to redo the patient') from None
  return record if record.get('done') else None


def sampler_result(setting: str, nfe: int, per_patient: dict[str, dict]) -> dict[str, Any]:
  """One sampler's part of the result file from its per-patient records."""
  summary = summarise(per_patient)
  firsts = [r['seconds_first_leg_with_compilation'] for r in per_patient.values()]
  return {'setting': setting, 'nfe': nfe, 'summary': summary, 'per_patient': per_patient,
          'seconds_first_leg_with_compilation': next((f for f in firsts if f), None),
          'goals': goals(summary)}


def run(workdir: str, *, out: str = DEFAULT_OUT, work: str = DEFAULT_WORK,
        samplers=('fast',), patients=None, draws: int = 3, seed: int = 0,
        grid: int | None = None, data_dir: str | None = None, data_config=None,
        command: str = '') -> dict[str, Any]:
  """The benchmark (module docstring); returns what it writes to `out`. grid None: 64, or
  the image size if smaller. data_config: knee_drr's config of the data set, if it is not
  one of the builder's own (found by name otherwise)."""
  config = run_config.load(workdir)
  if data_dir:
    config.data.data_dir = data_dir
  if methods.get(config.method).sampling == 'forward':
    raise ValueError(f'{workdir} is a {config.method} run: one forward pass, no sampler to '
                     'make consistent; the multi-view benchmark takes a CTM or CSM run')
  checks = (('--draws', draws, 1), ('--seed', seed, 0)) + (
      (('--grid', grid, 2),) if grid is not None else ())
  for flag, value, lowest in checks:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
      raise ValueError(f'{flag} must be an integer >= {lowest}, got {value!r}')
  if not samplers:
    raise ValueError('--samplers names no sampler setting')
  condition = evaluate.eval_condition(config)
  data_config = data_builder_config(config, data_config)
  version, revision = phantom_revision(config)
  configs = _sampler_configs(config, list(samplers), condition)
  legs = {leg.patient: leg for leg in multiview_run.test_legs(config, condition, None)}
  chosen = sorted(legs) if not patients else list(dict.fromkeys(patients))
  unknown = [p for p in chosen if p not in legs]
  if unknown:
    raise ValueError(f'--patients {",".join(unknown)}: not in the test split of '
                     f'knee_drr/{run_config.data_spec(config)}; its patients are '
                     f'{", ".join(sorted(legs))}')
  for p in chosen:
    multiview_metrics.patient_seed(p)
  size = int(config.data.image_size)
  grid = min(64, size) if grid is None else grid
  geometry = geometry_lib.ConeBeamGeometry().with_detector(size)
  shape, spacing = multiview.volume_grid(geometry, grid)

  params, step = evaluate.restore_ema_params(config, workdir, parallel.make_mesh())
  base = multiview_run.files_json({
      'workdir': os.path.abspath(workdir), 'checkpoint_step': step,
      'method': config.method, 'condition': condition,
      'data': f'knee_drr/{config.data.builder_config}:{version}', 'image_size': size,
      'seed': seed, 'draws': draws, 'grid': grid,
      'consistency': dict(multiview_run.CONSISTENCY),
      'reconstruction_iters': multiview_run.RECON_ITERS})
  units = [(p, name) for p in chosen for name in configs]
  path = lambda p, name: os.path.join(work, sampler_setting.setting_dir(name), f'{p}.json')
  records, todo = {}, []
  for p, name in units:
    settings = {**base, 'sampler': name, 'setting': configs[name][1]}
    old = _read_done(path(p, name))
    if old is None:
      todo.append((p, name, settings))
    elif old['settings'] != settings:
      raise ValueError(f'{path(p, name)} was made with other settings (see its "settings"); '
                       'use another --work or delete it')
    else:
      print(f'{name} {p}: done already, skipped', flush=True)
      records[p, name] = old
  bar = progress.Progress(len(units), 'multiview benchmark', unit='leg',
                          done=len(units) - len(todo), every=0.0, stream=sys.stdout)
  samplers_live, refs = {}, {}
  for p, name, settings in todo:
    print(f'{name} {p}: phantom, truth, {draws} independent and {draws} consistent draws',
          flush=True)
    leg = legs[p]
    consistency = multiview.for_geometry(geometry, grid, leg.angles_deg,
                                         **multiview_run.CONSISTENCY)
    if p not in refs:
      refs.clear()  # one patient's phantom at a time: the samplers of a patient share it
      refs[p] = multiview_metrics.reference(p, data_config, revision, consistency)
    if name not in samplers_live:
      samplers_live[name] = LegSampler(configs[name][0], params)
    begin = time.time()
    result = evaluate_leg(leg, refs[p], consistency, samplers_live[name], draws, seed)
    ref = refs[p]
    record = multiview_run.files_json({
        'settings': settings, 'patient': p, 'phantom_seed': multiview_metrics.patient_seed(p),
        'c': ref.c, 'bone_threshold_v': ref.bone_v, 'phantom_v_max': float(ref.volume.max()),
        **result, 'seconds': time.time() - begin, 'done': True})
    files.write_json(path(p, name), record)
    records[p, name] = record
    s = record['sets']
    print(f'{name} {p}: ' + '; '.join(
        f'{n} CE {s[n]["consistency_error"]:.3g} vol {s[n]["volume_psnr"] or 0:.2f} dB '
        f'dice {s[n]["bone_dice_3d"]:.3f}' for n in ('truth', *DRAWN)), flush=True)
    bar.desc = f'multiview benchmark ({name} {p} in {record["seconds"]:.0f} s)'
    bar.update()

  result = {
      'what': 'Consistent multi-view generation of whole legs (benchmarks/multiview.py): '
              'per test patient and mean +- std over them',
      'command': command, **environment(), 'workdir': os.path.abspath(workdir),
      'work': os.path.abspath(work), 'checkpoint_step': step, 'method': config.method,
      'condition': condition,
      'data': {'name': config.data.name, 'builder_config': config.data.builder_config,
               'version': version, 'phantom_revision': revision, 'source': data_config.source,
               'spacing_mm': data_config.spacing_mm, 'detector': data_config.detector,
               'num_views': data_config.num_views, 'image_size': size,
               'bone_threshold_hu': data_config.bone_threshold_hu},
      'grid': {'n': grid, 'shape': list(shape), 'spacing_mm': list(spacing),
               'sharpness_margin_z': multiview_metrics.sharpness_margin(shape[0])},
      'consistency': dict(multiview_run.CONSISTENCY),
      'reconstruction_iters': multiview_run.RECON_ITERS,
      'seeds': {'seed': seed, 'draws': draws,
                'keys': [f'PRNGKey({seed + k})' for k in range(draws)],
                'note': 'draw k uses PRNGKey(seed + k) for independent and consistent'},
      'patients': chosen,
      'samplers': {name: sampler_result(
          setting, sampler_setting.nfe(config_s),
          {p: {k: v for k, v in records[p, name].items() if k != 'settings'} for p in chosen})
                   for name, (config_s, setting) in configs.items()}}
  files.write_json(out, multiview_run.files_json(result))
  print(f'wrote {out}', flush=True)
  for name, r in result['samplers'].items():
    print(f'goals, {name}:')
    for g in r['goals']:
      state = {True: 'met', False: 'MISSED', None: 'n/a'}[g['met']]
      print(f'  {state:6s} {g["goal"]}: {g["value"]} vs {g["bound"]}')
  return result


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='a trained CTM or CSM run')
  parser.add_argument('--samplers', default='fast',
                      help='comma-separated: fast, paper (PC N = 500) or pc:N[:...] settings')
  parser.add_argument('--patients', default='',
                      help='comma-separated test patient ids (default: every test patient)')
  parser.add_argument('--draws', type=int, default=3, help='draws per sampler and patient')
  parser.add_argument('--seed', type=int, default=0, help='draw k uses PRNGKey(seed + k)')
  parser.add_argument('--grid', type=int, default=None,
                      help='reconstruction grid n^3 (default 64, or the image size if smaller)')
  parser.add_argument('--out', default=DEFAULT_OUT,
                      help='the result JSON (default benchmarks/results/multiview_cpu.json)')
  parser.add_argument('--work', default=DEFAULT_WORK, help='per-patient results (resume)')
  parser.add_argument('--data_dir', default='', help='TFDS data dir (default: the run\'s)')
  args = parser.parse_args(argv)
  from score_sde_knee.utils import xla_cpu
  xla_cpu.configure()  # what main.py runs; before JAX starts
  progress.quiet_library_info()
  command = shlex.join(['python', '-m', 'benchmarks.multiview',
                        *(sys.argv[1:] if argv is None else argv)])
  split = lambda text: [s.strip() for s in text.split(',') if s.strip()]
  run(args.workdir, out=args.out, work=args.work, samplers=split(args.samplers),
      patients=split(args.patients) or None, draws=args.draws, seed=args.seed,
      grid=args.grid, data_dir=args.data_dir or None, command=command)


if __name__ == '__main__':
  main()
