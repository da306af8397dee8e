"""report: the table carries the metrics.json numbers; fig3 shows the right images."""
import os

import numpy as np
from PIL import Image
import pytest

from configs import default
from score_sde_knee.utils import files
from score_sde_knee import report
from score_sde_knee import run_config
from score_sde_knee import sampler_setting
from score_sde_knee.utils import plots
from helpers import TINY
from helpers import read_split

N = 6


def fake_workdir(root, name, method, conditions, data_dir, seed, folder='eval/{cond}'):
  """A workdir as --mode=eval leaves it, with made-up metrics and random samples."""
  wd = os.path.join(root, name)
  c = default.get_config(f'{conditions[0]},test', method=method)
  c.data.data_dir, c.data.builder_config = data_dir, TINY.name
  run_config.save(c, wd)
  rng = np.random.default_rng(seed)
  out = {}
  for cond in conditions:
    mae, psnr = rng.uniform(0.01, 0.1, N), rng.uniform(15, 35, N)
    m = {'method': method, 'condition': cond, 'n': N, 'split': 'test',
         'data': f'knee_drr/{TINY.name}', 'image_size': 16, 'checkpoint_step': 7,
         'sampler': {'method': 'pc', 'N': 4, 'snr': 0.4, 't0': 0.4, 'seed': 42},
         'mae_mean': mae.mean(), 'mae_std': mae.std(), 'psnr_mean': psnr.mean(),
         'psnr_std': psnr.std(),
         'per_image': [{'index': i, 'mae': mae[i], 'psnr': psnr[i]} for i in range(N)]}
    d = os.path.join(wd, folder.format(cond=cond))
    files.write_json(os.path.join(d, 'metrics.json'), m)
    samples = rng.uniform(0, 1, (N, 16, 16, 1)).astype(np.float32)
    files.write_npz(os.path.join(d, 'samples.npz'), samples=samples,
                    indices=np.arange(N))
    out[(method, cond)] = (m, samples)
  return wd, out


def _row(md: str, name: str) -> list[str]:
  for line in md.splitlines():
    cells = [c.strip() for c in line.strip('|').split('|')]
    if cells[0] == name:
      return cells
  raise AssertionError(f'no row {name!r} in\n{md}')


def test_report(tmp_path, data_dir, monkeypatch):
  # U-Net contour only, CSM both conditions, CTM contour_bone only.
  made, workdirs = {}, []
  for name, method, conds, seed in [('unet_c', 'unet', ['contour'], 0),
                                    ('csm', 'csm', ['contour', 'contour_bone'], 1),
                                    ('ctm_cb', 'ctm', ['contour_bone'], 2)]:
    wd, out = fake_workdir(tmp_path, name, method, conds, data_dir, seed)
    workdirs.append(wd)
    made.update(out)

  grids = []
  real_save_grid = plots.save_grid

  def spy(path, rows, **kwargs):
    grids.append(rows)
    real_save_grid(path, rows, **kwargs)

  monkeypatch.setattr(plots, 'save_grid', spy)
  paths = report.write_report(workdirs, str(tmp_path / 'report'), num_images=2)

  md = open(paths['table.md'], encoding='utf-8').read()
  csm = _row(md, 'CSM')
  m_c, m_cb = made[('csm', 'contour')][0], made[('csm', 'contour_bone')][0]
  assert csm[1] == f'{m_c["mae_mean"]:.4f} ± {m_c["mae_std"]:.4f}'
  assert csm[2] == f'{m_c["psnr_mean"]:.2f} ± {m_c["psnr_std"]:.2f}'
  assert csm[3] == f'{m_cb["mae_mean"]:.4f} ± {m_cb["mae_std"]:.4f}'
  assert csm[4] == f'{m_cb["psnr_mean"]:.2f} ± {m_cb["psnr_std"]:.2f}'
  assert csm[5] == '6 / 6'
  unet, ctm = _row(md, 'U-Net'), _row(md, 'CTM')
  assert unet[3:5] == ['—', '—'] and unet[5] == '6 / —'
  assert ctm[1:3] == ['—', '—'] and ctm[3].startswith(
      f'{made[("ctm", "contour_bone")][0]["mae_mean"]:.4f} ±')
  assert _row(md, 'CTM (paper)')[1:5] == ['0.0193 ± 0.005', '29.498 ± 1.91',
                                          '0.0152 ± 0.007', '31.680 ± 1.76']
  assert 'U-Net contour+bone' in md and 'CTM contour' in md  # the missing ones, listed
  assert 'method=pc, N=4, snr=0.4, t0=0.4, seed=42' in md

  # fig3: rows = 2 images x 2 conditions, columns condition | U-Net | CSM | CTM | truth.
  (rows,) = grids
  truth = read_split(data_dir)
  picked = [0, N - 1]
  assert len(rows) == 4 and all(len(r) == 5 for r in rows)
  for r, (cond, i) in zip(rows, [(c, i) for c in ('contour', 'contour_bone')
                                 for i in picked]):
    np.testing.assert_array_equal(r[0], truth[i][cond])
    np.testing.assert_array_equal(r[4], truth[i]['image'])
    for col, method in zip(r[1:4], ('unet', 'csm', 'ctm')):
      if (method, cond) in made:
        np.testing.assert_array_equal(col, made[(method, cond)][1][i])
      else:
        assert col is None

  with Image.open(paths['fig3.png']) as im:
    # save_grid: 1.6 in per cell + 0.8 in of row titles, + 0.3 in of column titles, 100 dpi.
    assert im.size == (round((1.6 * 5 + 0.8) * 100), round((1.6 * 4 + 0.3) * 100))
    assert np.asarray(im.convert('L')).std() > 10
  with Image.open(paths['table.png']) as im:
    assert im.size[0] > 600 and im.size[1] > 200
    assert np.asarray(im.convert('L')).std() > 10


def test_fig3_has_no_column_for_a_method_without_results(tmp_path, data_dir, monkeypatch):
  wd, made = fake_workdir(tmp_path, 'ctm_cb', 'ctm', ['contour_bone'], data_dir, 3)
  grids = []
  monkeypatch.setattr(plots, 'save_grid',
                      lambda path, rows, **kw: grids.append((rows, kw['col_titles'])))
  report.save_fig3(report.collect([wd]), str(tmp_path / 'fig3.png'), num_images=2)
  (rows, titles), = grids
  assert titles == ['condition', 'CTM', 'ground truth']
  samples = made[('ctm', 'contour_bone')][1]
  assert [len(r) for r in rows] == [3, 3]
  for r, i in zip(rows, (0, N - 1)):
    np.testing.assert_array_equal(r[1], samples[i])


def test_clear_errors(tmp_path, data_dir):
  with pytest.raises(FileNotFoundError, match='--mode=eval'):
    report.collect([str(tmp_path)])
  a, _ = fake_workdir(tmp_path, 'a', 'ctm', ['contour'], data_dir, 0)
  b, _ = fake_workdir(tmp_path, 'b', 'ctm', ['contour'], data_dir, 1)
  with pytest.raises(ValueError, match='Two results'):
    report.collect([a, b])


def test_sampler_reads_that_samplers_ctm_and_csm_results_and_the_unets_own(tmp_path,
                                                                           data_dir):
  fast = 'eval_samplers/{cond}/' + sampler_setting.setting_dir(sampler_setting.FAST['ctm'])
  unet, made = fake_workdir(tmp_path, 'unet', 'unet', ['contour'], data_dir, 0)
  ctm, own = fake_workdir(tmp_path, 'ctm', 'ctm', ['contour'], data_dir, 1)
  _, by_fast = fake_workdir(tmp_path, 'ctm', 'ctm', ['contour'], data_dir, 2, fast)
  got = report.collect([unet, ctm], sampler='fast')
  assert got[('ctm', 'contour')]['psnr_mean'] == by_fast[('ctm', 'contour')][0]['psnr_mean']
  assert got[('ctm', 'contour')]['psnr_mean'] != own[('ctm', 'contour')][0]['psnr_mean']
  assert got[('unet', 'contour')]['psnr_mean'] == made[('unet', 'contour')][0]['psnr_mean']
  assert report.collect([ctm])[('ctm', 'contour')]['psnr_mean'] == (
      own[('ctm', 'contour')][0]['psnr_mean'])  # without --sampler: the run's own
  csm, _ = fake_workdir(tmp_path, 'csm', 'csm', ['contour'], data_dir, 3)
  with pytest.raises(FileNotFoundError,
                     match=r'no eval_samplers/contour/pc-17-.*mom0\.8/metrics\.json or '
                           r'eval_samplers/contour_bone/pc-17-.*mom0\.8/metrics\.json: '
                           r'run python main\.py --mode=eval --workdir=.*csm --sampler=fast'):
    report.collect([csm], sampler='fast')


def test_fast_air_reads_each_conditions_own_margin(tmp_path, data_dir):
  def folder(condition, margin):
    return f'eval_samplers/{condition}/' + sampler_setting.setting_dir(
        sampler_setting.FAST['csm'] + f',air=1,airm={margin}')
  margin = sampler_setting.AIR_MARGIN
  assert margin['contour'] != margin['contour_bone']  # else this test tells nothing
  wd, contour = fake_workdir(tmp_path, 'csm', 'csm', ['contour'], data_dir, 4,
                             folder('contour', margin['contour']))
  _, bone = fake_workdir(tmp_path, 'csm', 'csm', ['contour_bone'], data_dir, 5,
                         folder('contour_bone', margin['contour_bone']))
  # The other condition's margin on contour: a run of another setting, not fast-air's.
  fake_workdir(tmp_path, 'csm', 'csm', ['contour'], data_dir, 6,
               folder('contour', margin['contour_bone']))
  got = report.collect([wd], sampler='fast-air')
  for key, made in ((('csm', 'contour'), contour), (('csm', 'contour_bone'), bone)):
    assert got[key]['psnr_mean'] == made[key][0]['psnr_mean']


def test_table_names_every_pc_setting_that_differs_from_the_paper():
  def metrics(sampler):
    return {'method': 'ctm', 'condition': 'contour_bone', 'n': 16, 'split': 'test',
            'data': 'knee_drr/phantom_64', 'image_size': 64, 'checkpoint_step': 2000,
            'mae_mean': 0.02, 'mae_std': 0.01, 'psnr_mean': 31.0, 'psnr_std': 3.0,
            'sampler': sampler, '_workdir': 'w'}
  paper = {'method': 'pc', 'N': 500, 'predictor': 'reverse_diffusion', 'n_steps_each': 1,
           'snr': 0.4, 't0': 1.0, 'seed': 42}
  md = report.table_markdown({('ctm', 'contour_bone'): metrics(paper)})
  assert '| method=pc, N=500, snr=0.4, t0=1.0, seed=42 |' in md
  fast = dict(paper, N=17, predictor='ancestral', n_steps_each=2, snr=0.5, t_jump=0.65,
              precond=2.5, momentum=0.8)
  md = report.table_markdown({('ctm', 'contour_bone'): metrics(fast)})
  assert ('| method=pc, N=17, predictor=ancestral, n_steps_each=2, snr=0.5, t0=1.0, '
          't_jump=0.65, precond=2.5, momentum=0.8, seed=42 |') in md
