"""Paper Table I and Fig. 3 analogues from evaluated workdirs.

    python -m score_sde_knee.report --workdirs runs/unet_c runs/unet_cb runs/csm \
        runs/ctm_c runs/ctm_cb --out report/

Reads every workdir/eval/<condition>/metrics.json (written by `--mode=eval`; a CSM
workdir may hold both conditions) and writes
  out/table.md   rows U-Net, CSM, CTM, each followed by the paper's figures (PAPER);
                 columns MAE and PSNR (mean ± std) for the contour and the contour+bone
                 condition, and n. A method/condition not evaluated is a blank cell (—),
                 listed under the table.
  out/table.png  the same table drawn with matplotlib.
  out/fig3.png   rows: a few test images (the same indices for every method, evenly spaced
                 over the images all of them evaluated) per condition; columns:
                 condition | U-Net | CSM | CTM | ground truth. Needs the data set that was
                 evaluated (--data_dir overrides the saved config's).
Any subset of methods and conditions works; all must come from one data set and split.
--sampler=fast (or a setting, as for `--mode=eval --sampler=...`) reads the CTM and CSM
results of that sampler (workdir/eval_samplers/<condition>/<setting>/) instead; a U-Net,
one forward pass, keeps its own.
"""
import argparse
import glob
import json
import os
import sys
from typing import Any

import numpy as np

from score_sde_knee.utils import files
from score_sde_knee import methods
from score_sde_knee import run_config

NAMES = {**{m.name: m.label for m in methods.ALL},
         'contour': 'contour', 'contour_bone': 'contour+bone'}
# Mei et al., Table I (real data, 256 px, 330 test images), as printed: MAE, PSNR dB.
PAPER = {
    ('unet', 'contour'): ('0.0209 ± 0.007', '29.188 ± 2.22'),
    ('unet', 'contour_bone'): ('0.0188 ± 0.006', '30.304 ± 2.45'),
    ('csm', 'contour'): ('0.0395 ± 0.010', '22.911 ± 1.89'),
    ('csm', 'contour_bone'): ('0.0507 ± 0.010', '21.350 ± 1.49'),
    ('ctm', 'contour'): ('0.0193 ± 0.005', '29.498 ± 1.91'),
    ('ctm', 'contour_bone'): ('0.0152 ± 0.007', '31.680 ± 1.76'),
}
BLANK = '—'
Results = dict[tuple[str, str], dict[str, Any]]


def collect(workdirs: list[str], sampler: str | None = None) -> Results:
  """{(method, condition): metrics} from the workdirs (CTM / CSM: --sampler's, if given).

  '_workdir' and '_dir' (the folder of that metrics.json, which holds its samples.npz)
  are added to each, so the samples are found where the metrics were, not by a second
  guess at evaluate's layout.
  """
  results: Results = {}
  for wd in workdirs:
    folders, flag = [os.path.join(wd, 'eval', '*')], ''
    method = run_config.load(wd).method if sampler else None
    # A U-Net (one forward pass) has no sampler: its own result stands.
    if method and methods.get(method).sampling != 'forward':
      # evaluate (and with it JAX) only here, where its folder layout is needed.
      from score_sde_knee import evaluate  # pylint: disable=g-import-not-at-top
      from score_sde_knee import sampler_setting  # pylint: disable=g-import-not-at-top
      # Per condition: `fast-air` names another setting, so another folder, for each.
      folders = [evaluate.sampler_dir(wd, c, sampler_setting.resolve(method, sampler, c))
                 for c in methods.CONDITIONS]
      flag = f' --sampler={sampler}'
    paths = sorted(p for f in folders for p in glob.glob(os.path.join(f, 'metrics.json')))
    if not paths:
      where = ' or '.join(os.path.relpath(f, wd).replace('*', '<condition>') + '/metrics.json'
                          for f in folders)
      raise FileNotFoundError(f'{wd} holds no {where}: run python main.py '
                              f'--mode=eval --workdir={wd}{flag} first.')
    for path in paths:
      try:
        with open(path) as f:
          m = json.load(f)
        key = (m['method'], m['condition'])
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f'{path} is not a metrics.json written by --mode=eval ({e!r}).') \
            from None
      if key in results:
        raise ValueError(f'Two results for {key}: {results[key]["_workdir"]} and {wd}; pass '
                         'one workdir per method and condition.')
      results[key] = {**m, '_workdir': wd, '_dir': os.path.dirname(path)}
  _check_same_data(results)
  return results


def _check_same_data(results: Results) -> None:
  seen = {(m.get('data'), m.get('split'), m.get('image_size')): m['_workdir']
          for m in results.values()}
  if len(seen) > 1:
    raise ValueError('The workdirs were evaluated on different data (data set, split, '
                     f'image size): {seen}. Report one setup at a time.')


def _cell(m: dict[str, Any] | None, key: str, fmt: str) -> str:
  if m is None:
    return BLANK
  return f'{m[key + "_mean"]:{fmt}} ± {m[key + "_std"]:{fmt}}'


def table_rows(results: Results) -> tuple[list[str], list[list[str]]]:
  """Header and rows of Table I: each method, then the paper's figures for it."""
  header = ['method']
  for c in methods.CONDITIONS:
    header += [f'{NAMES[c]} MAE', f'{NAMES[c]} PSNR (dB)']
  header.append('n (contour / contour+bone)')
  rows = []
  for method in methods.NAMES:
    row, paper, ns = [NAMES[method]], [f'{NAMES[method]} (paper)'], []
    for c in methods.CONDITIONS:
      m = results.get((method, c))
      row += [_cell(m, 'mae', '.4f'), _cell(m, 'psnr', '.2f')]
      paper += list(PAPER[(method, c)])
      ns.append(str(m['n']) if m else BLANK)
    rows += [row + [' / '.join(ns)], paper + ['330 / 330']]
  return header, rows


# The PC settings that decide a sample; the paper's predictor and corrector count go unsaid
# (t_jump, precond and momentum are in metrics.json only when they act: evaluate.sampler_settings).
_PC_KEYS = ('method', 'N', 'predictor', 'n_steps_each', 'snr', 't0', 't_jump', 'precond',
            'precond_width', 'momentum', 'seed')
_PAPER_PC = {'predictor': 'reverse_diffusion', 'n_steps_each': 1}


def table_markdown(results: Results) -> str:
  header, rows = table_rows(results)
  any_m = next(iter(results.values()))
  lines = [f'# Table I analogue: {any_m.get("data")}, {any_m.get("split")} split, '
           f'{any_m.get("image_size")} px', '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
  lines += ['', 'Mean ± std over the test images (std with ddof=0). Paper rows: Mei et al. '
            'Table I, real CT data, 256 px, 330 test images.']
  missing = [f'{NAMES[m]} {NAMES[c]}' for m in methods.NAMES for c in methods.CONDITIONS
             if (m, c) not in results]
  if missing:
    lines.append(f'Not evaluated (blank cells {BLANK}): ' + ', '.join(missing) + '.')
  lines += ['', '| method | condition | workdir | checkpoint step | sampler | n |',
            '|---|---|---|---|---|---|']
  for (method, c), m in sorted(results.items(), key=lambda kv: (
      methods.NAMES.index(kv[0][0]), methods.CONDITIONS.index(kv[0][1]))):
    s = m.get('sampler', {})
    keys = _PC_KEYS if s.get('method') == 'pc' else ('method', 'ode_steps', 't0', 'seed')
    sampler = ', '.join(f'{k}={s[k]}' for k in keys
                        if s.get(k) is not None and s[k] != _PAPER_PC.get(k))
    lines.append(f'| {NAMES[method]} | {NAMES[c]} | {m["_workdir"]} | '
                 f'{m.get("checkpoint_step")} | {sampler} | {m["n"]} |')
  return '\n'.join(lines) + '\n'


def save_table_png(results: Results, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  header, rows = table_rows(results)
  fig, ax = plt.subplots(figsize=(2.0 * len(header), 0.45 * (len(rows) + 2)))
  ax.axis('off')
  table = ax.table(cellText=rows, colLabels=header, loc='center', cellLoc='center')
  table.auto_set_font_size(False)
  table.set_fontsize(8)
  table.scale(1.0, 1.4)
  for (r, _), cell in table.get_celld().items():
    if r == 0:
      cell.set_text_props(weight='bold')
    elif r % 2 == 0:  # the paper rows
      cell.set_facecolor('#eeeeee')
  any_m = next(iter(results.values()))
  ax.set_title(f'{any_m.get("data")} ({any_m.get("split")}, {any_m.get("image_size")} px) '
               'vs. the paper (grey rows)', fontsize=9)
  fig.tight_layout()
  with files.atomic_path(path, '.png') as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)


def fig3_indices(results: Results, num_images: int) -> list[int]:
  """Evenly spaced indices among the images every result has a sample of."""
  common = None
  for m in results.values():
    ids = {p['index'] for p in m['per_image']}
    common = ids if common is None else common & ids
  common = sorted(common or ())
  if not common:
    raise ValueError('The workdirs evaluated no image in common: evaluate them with the '
                     'same config.eval.num_images.')
  return evenly_spaced(common, num_images)


def evenly_spaced(ids: list[int], k: int) -> list[int]:
  """k entries of the sorted list ids, first and last included, evenly spaced."""
  return [ids[i] for i in np.linspace(0, len(ids) - 1, min(k, len(ids))).round().astype(int)]


def save_fig3(results: Results, path: str, *, num_images: int = 3,
              data_dir: str | None = None) -> list[int]:
  """Condition | U-Net | CSM | CTM | ground truth for a few test images; returns indices.

  A method with no result (e.g. the demo's lone CTM) gets no column; one evaluated on the
  other condition only leaves its cells in this condition's rows blank.
  """
  from score_sde_knee import input_pipeline  # pylint: disable=g-import-not-at-top
  from score_sde_knee.utils import plots  # pylint: disable=g-import-not-at-top
  indices = fig3_indices(results, num_images)
  any_m = next(iter(results.values()))
  config = run_config.load(any_m['_workdir'])
  if data_dir:
    config.data.data_dir = data_dir
  data = input_pipeline.load_split(config, any_m['split'], max(indices) + 1)
  samples = {key: _samples_by_index(m) for key, m in results.items()}
  shown = [m for m in methods.NAMES if any(key[0] == m for key in results)]
  rows, titles = [], []
  for c in methods.CONDITIONS:
    if not any(cond == c for _, cond in results):
      continue
    for i in indices:
      row = [data[c][i]]
      row += [samples[(m, c)][i] if (m, c) in samples else None for m in shown]
      rows.append(row + [data['image'][i]])
      titles.append(f'{NAMES[c]}\n#{i} {data["patient_id"][i]}\n'
                    f'{float(data["angle_deg"][i]):.0f} deg')
  plots.save_grid(path, rows, row_titles=titles,
                      col_titles=['condition'] + [NAMES[m] for m in shown] +
                      ['ground truth'])
  return indices


def _samples_by_index(m: dict[str, Any]) -> dict[int, np.ndarray]:
  path = os.path.join(m['_dir'], 'samples.npz')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} is missing: rerun python main.py --mode=eval '
                            f'--workdir={m["_workdir"]}.')
  return load_samples(path)


def load_samples(path: str) -> dict[int, np.ndarray]:
  """An evaluation's samples.npz as {test image index: sample}."""
  with np.load(path) as z:
    return {int(i): s for i, s in zip(z['indices'], z['samples'])}


def write_report(workdirs: list[str], out: str, *, num_images: int = 3,
                 data_dir: str | None = None, sampler: str | None = None) -> dict[str, str]:
  """Writes table.md, table.png and fig3.png into out; returns their paths."""
  results = collect(workdirs, sampler)
  paths = {k: os.path.join(out, f'{k}') for k in ('table.md', 'table.png', 'fig3.png')}
  with (files.atomic_path(paths['table.md'], '.md') as tmp,
        open(tmp, 'w', encoding='utf-8') as f):
    f.write(table_markdown(results))
  save_table_png(results, paths['table.png'])
  save_fig3(results, paths['fig3.png'], num_images=num_images, data_dir=data_dir)
  return paths


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdirs', nargs='+', required=True, help='evaluated run directories')
  p.add_argument('--out', default='report', help='output folder')
  p.add_argument('--num_images', type=int, default=3, help='test images per condition '
                 'in fig3.png')
  p.add_argument('--data_dir', default=None, help='TFDS data dir (default: the saved '
                 "config's)")
  p.add_argument('--sampler', default=None, help="CTM / CSM: the results of --mode=eval "
                 "--sampler=<this> ('fast', 'fast-air' or a setting) instead of the runs' own")
  a = p.parse_args(argv)
  try:
    paths = write_report(a.workdirs, a.out, num_images=a.num_images, data_dir=a.data_dir,
                         sampler=a.sampler)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  print('\n'.join(paths.values()))


if __name__ == '__main__':
  from score_sde_knee.utils import progress  # pylint: disable=g-import-not-at-top
  progress.quiet_library_info()  # as main.py: library noise would bury the output
  main()
