"""benchmarks/augmentation.py: its pieces, and the whole benchmark at the test scale on a
knee_drr of 6 patients (4 train) at 16 px: report, counts, the synthetic data set read back
as another project would, the figure's predictions, and a rerun that redoes nothing."""
import collections
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from benchmarks import augmentation as aug
from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import segmenter as seg
from score_sde_knee import segmenter_data as sd

# 6 phantoms -> 4 train / 1 validation / 1 test patients, 6 views at 16 px: seconds to build.
TINY6 = kb.KneeDrrConfig(name='tiny6', num_patients=6, detector=16, num_views=6,
                         spacing_mm=8.0)
VERSION = '2.0.0'
REGIMES = ('real-k', 'real-k+ctm', 'ceiling')


def test_regimes_from_templates():
  got = aug.parse_regimes(aug.TEMPLATES, (2, 6))
  assert len(got) == 2 * 9 + 1 and got[-1] == aug.Regime('ceiling', None, 'none', 'none')
  by_name = {r.name: r for r in got}
  assert by_name['real-6'] == aug.Regime('real-6', 6, 'none', 'none')
  assert by_name['real-2+classic'] == aug.Regime('real-2+classic', 2, 'classic', 'none',
                                                 augment=True)
  assert by_name['real-2+csm'] == aug.Regime('real-2+csm', 2, 'csm', 'other_patients')
  assert by_name['real-6+unet:deformed'] == aug.Regime('real-6+unet:deformed', 6, 'unet',
                                                       'deformed')
  assert by_name['real-2+ctm+classic'] == aug.Regime('real-2+ctm+classic', 2, 'ctm',
                                                     'other_patients', augment=True)
  s = aug.Settings('', '', scale='test')
  assert [n for n, r in by_name.items() if aug.seg_config(s, r, 0).augment] == [
      'real-2+classic', 'real-2+ctm+classic', 'real-6+classic', 'real-6+ctm+classic']
  with pytest.raises(ValueError, match="'real-k\\+gan'"):
    aug.parse_regimes(['real-k', 'real-k+gan'], (2,))


def test_a_regime_named_with_its_k_is_for_that_k_alone():
  got = [r.name for r in aug.parse_regimes(
      ['real-k', 'real-2+csm', 'real-6+ctm:deformed', 'real-2+classic', 'ceiling'], (2, 6))]
  assert got == ['real-2', 'real-2+classic', 'real-2+csm', 'real-6', 'real-6+ctm:deformed',
                 'ceiling']
  assert aug.parse_regimes(['real-2+csm', 'real-k+csm'], (2,)) == aug.parse_regimes(
      ['real-k+csm'], (2,))
  with pytest.raises(ValueError, match="'real-4\\+csm' is for k = 4, not one of --k"):
    aug.parse_regimes(['real-4+csm'], (2, 6))
  with pytest.raises(ValueError, match="'real-2\\+gan' unknown"):
    aug.parse_regimes(['real-2+gan'], (2,))


@pytest.fixture(scope='module')
def tiny6(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('tfds6'))
  kb.Builder(config=TINY6, data_dir=root, version=VERSION).download_and_prepare()
  return os.path.join(root, 'knee_drr', TINY6.name, VERSION)


def _argv(workdir, data_dir, *extra):
  return ['--workdir', workdir, '--data_dir', data_dir, '--builder_config', TINY6.name,
          '--version', VERSION, '--k', '1', '--seeds', '1', '--regimes', ','.join(REGIMES),
          '--scale', 'test', '--seg_steps', '3', '--gen_steps', '2', *extra]


@pytest.fixture(scope='module')
def first_run(tiny6, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('augmentation'))
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(tiny6)))
  result = aug.main(_argv(workdir, data_dir))
  return workdir, data_dir, result


def _split(path, split):
  source = tfds.builder_from_directory(path).as_data_source(split)
  return [source[i] for i in range(len(source))]


def test_the_report_holds_every_regime_with_counts_of_the_subsets(first_run, tiny6):
  workdir, _, result = first_run
  with open(os.path.join(workdir, 'augmentation_test.json'), encoding='utf-8') as f:
    report = json.load(f)
  assert result['out'] == os.path.join(workdir, 'augmentation_test.json')
  assert set(report['versions']) == {'python', 'jax', 'jaxlib', 'flax', 'grain',
                                     'tensorflow-datasets'}
  assert isinstance(report['machine']['cpu'], str) and report['machine']['cores'] >= 1
  assert report['date'][:2] == '20' and '--regimes real-k,real-k+ctm,ceiling' in report['command']
  rows = {r['name']: r for r in report['regimes']}
  assert list(rows) == ['real-1', 'real-1+ctm', 'ceiling']
  for r in rows.values():
    for key in ('dice_bone_mean', 'dice_bone_std', 'dice_leg_mean', 'dice_leg_std'):
      assert isinstance(r[key], float) and 0 <= r[key] <= 1, (r['name'], key)
    assert isinstance(r['n_real'], int) and isinstance(r['n_synthetic'], int)
    assert [s['seed'] for s in r['seeds']] == [0] and r['seeds'][0]['num_images'] == 6
    assert r['dice_bone_mean'] == r['seeds'][0]['dice_bone_mean'] and r['dice_bone_std'] == 0
  assert (rows['real-1+ctm']['generator'], rows['real-1+ctm']['mask_source']) == (
      'ctm', 'other_patients')
  assert (rows['real-1']['generator'], rows['real-1']['k'], rows['ceiling']['k']) == (
      'none', 1, None)
  # Counted from the data set itself: the k = 1 patient's views, the other train patients'.
  views = collections.Counter(str(ex['patient_id'], 'utf-8') if isinstance(
      ex['patient_id'], bytes) else ex['patient_id'] for ex in _split(tiny6, 'train'))
  assert len(views) == 4 and sum(views.values()) == 24
  (patient,) = report['patients']['k1']
  assert rows['real-1']['n_real'] == rows['real-1+ctm']['n_real'] == views[patient] == 6
  assert rows['real-1+ctm']['n_synthetic'] == 24 - views[patient] == 18
  assert (rows['ceiling']['n_real'], rows['ceiling']['n_synthetic']) == (24, 0)
  gap = (rows['real-1+ctm']['dice_bone_mean'] - rows['real-1']['dice_bone_mean']) / (
      rows['ceiling']['dice_bone_mean'] - rows['real-1']['dice_bone_mean'])
  assert rows['real-1+ctm']['gap_closed'] == pytest.approx(gap)
  assert os.path.getsize(result['figure']) > 10_000
  assert result['samples_figure'] == os.path.join(workdir, 'augmentation_samples.png')
  assert os.path.getsize(result['samples_figure']) > 10_000


def test_the_synthetic_set_reads_back_with_the_other_patients_masks(first_run, tiny6):
  workdir = first_run[0]
  path = os.path.join(workdir, 'synth', 'ctm_k1_other_patients', 'tfds', 'knee_drr_synthetic',
                      '1.0.0')
  synth, real = tfds.builder_from_directory(path), tfds.builder_from_directory(tiny6)
  shapes = lambda b: {k: (f.shape, f.dtype) for k, f in b.info.features.items()}
  assert shapes(synth) == shapes(real)
  examples = _split(path, 'train')
  assert len(examples) == 18
  with open(os.path.join(workdir, 'subsets.json'), encoding='utf-8') as f:
    (patient,) = json.load(f)['k']['1']['patients']
  pid = lambda ex: ex['patient_id'].decode() if isinstance(ex['patient_id'], bytes) else str(
      ex['patient_id'])
  others = [ex['contour_bone'] for ex in _split(tiny6, 'train') if pid(ex) != patient]
  key = lambda m: np.asarray(m, np.float32).tobytes()
  assert sorted(key(ex['contour_bone']) for ex in examples) == sorted(key(m) for m in others)
  for ex in examples:
    assert np.all((ex['image'] >= 0) & (ex['image'] <= 1))
    np.testing.assert_array_equal(ex['contour'], 0.5 * (ex['contour_bone'] > 0))


def test_synthetic_quality_is_each_draw_against_its_masks_own_radiograph(first_run, tiny6):
  workdir, _, result = first_run
  path = os.path.join(workdir, 'synth', 'ctm_k1_other_patients', 'tfds', 'knee_drr_synthetic',
                      '1.0.0')
  key = lambda ex: np.asarray(ex['contour_bone'], np.float32).tobytes()
  real = {key(ex): np.asarray(ex['image'], np.float64) for ex in _split(tiny6, 'train')}
  psnr, mae = [], []
  for ex in _split(path, 'train'):  # float64, by the formula, matched through the mask
    diff = np.asarray(ex['image'], np.float64) - real[key(ex)]
    psnr.append(10 * np.log10(1 / np.mean(diff**2)))
    mae.append(np.mean(np.abs(diff)))
  rows = {r['name']: r for r in result['regimes']}
  assert len(psnr) == 18
  assert rows['real-1+ctm']['synthetic_psnr_mean'] == pytest.approx(np.mean(psnr), abs=1e-4)
  assert rows['real-1+ctm']['synthetic_psnr_std'] == pytest.approx(np.std(psnr), abs=1e-4)
  assert rows['real-1+ctm']['synthetic_mae_mean'] == pytest.approx(np.mean(mae), abs=1e-6)
  assert 'synthetic_psnr_mean' not in rows['real-1']


def test_the_ceiling_judges_each_synthetic_sets_labels(first_run, tiny6):
  workdir, _, result = first_run
  rows = {r['name']: r for r in result['regimes']}
  config = aug.seg_config(aug.Settings(workdir, '', scale='test'), aug.CEILING, 0)
  params = seg.restore_params(config, os.path.join(workdir, 'seg', 'ceiling', 'seed0'),
                              config.image_size)
  path = os.path.join(workdir, 'synth', 'ctm_k1_other_patients', 'tfds', 'knee_drr_synthetic',
                      '1.0.0')
  examples = _split(path, 'train')
  images = np.stack([np.asarray(ex['image'], np.float32) for ex in examples])
  assert images.shape[1:] == (config.image_size, config.image_size, 1)
  pred = seg.predict(params, config, images)
  dice = []
  for p, ex in zip(pred, examples):  # bone Dice in float64 from the pixel counts
    truth = np.asarray(ex['contour_bone'], np.float64)[..., 0] > 0.75
    mine = p == sd.BONE
    both, total = np.sum(mine & truth, dtype=np.float64), np.sum(mine) + np.sum(truth)
    dice.append(1.0 if total == 0 else 2 * both / total)
  ctm = rows['real-1+ctm']
  assert ctm['label_dice_bone_mean'] == pytest.approx(np.mean(dice), abs=1e-9)
  assert ctm['label_dice_bone_std'] == pytest.approx(np.std(dice), abs=1e-9)
  assert 0 <= ctm['label_dice_leg_mean'] <= 1
  assert not [k for k in (*rows['real-1'], *rows['ceiling']) if k.startswith('label_')]


def test_the_figure_predictions_score_as_the_result_says(first_run, tiny6):
  workdir = first_run[0]
  test = _split(tiny6, 'test')
  for name in ('real-1', 'real-1+ctm', 'ceiling'):
    seed0 = os.path.join(workdir, 'seg', name, 'seed0')
    pred = np.load(os.path.join(seed0, 'predictions.npz'))
    with open(os.path.join(seed0, 'result.json'), encoding='utf-8') as f:
      result = json.load(f)
    idx = pred['indices']
    assert list(idx) == [0, 2, 3, 5] and pred['labels'].shape == (4, 16, 16)
    truth = np.stack([sd.labels_from_mask(test[i]['contour_bone']) for i in idx])
    np.testing.assert_allclose(sd.dice(pred['labels'], truth, sd.BONE),
                               np.asarray(result['dice_bone'])[idx], rtol=1e-12)


def test_a_rerun_redoes_nothing_and_a_changed_setting_is_refused(first_run):
  workdir, data_dir, result = first_run
  reports = {os.path.join(workdir, n) for n in (
      'augmentation_test.json', 'augmentation.png', 'augmentation_samples.png')}
  mtimes = {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns
            for d, _, names in os.walk(workdir) for n in names}
  again = aug.main(_argv(workdir, data_dir))
  assert result['stages']['generators'] == {'ran': 1, 'skipped': 0}
  assert result['stages']['segmenters'] == {'ran': 3, 'skipped': 0}
  assert again['stages'] == {'subsets': {'ran': 0, 'skipped': 1},
                             'generators': {'ran': 0, 'skipped': 1},
                             'sampling': {'ran': 0, 'skipped': 1},
                             'segmenters': {'ran': 0, 'skipped': 3}}
  after = {os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns
           for d, _, names in os.walk(workdir) for n in names}
  assert {p: t for p, t in after.items() if p not in reports} == {
      p: t for p, t in mtimes.items() if p not in reports}
  assert again['regimes'] == result['regimes']
  with pytest.raises(SystemExit, match='seg_steps.*another --workdir'):
    aug.main(_argv(workdir, data_dir, '--seg_steps', '5'))


def test_a_moved_workdir_still_reports(first_run, tmp_path):
  workdir, data_dir, result = first_run
  moved = str(tmp_path / 'moved')
  shutil.copytree(workdir, moved)
  again = aug.main(_argv(moved, data_dir))
  assert all(v['ran'] == 0 for v in again['stages'].values()), again['stages']
  assert again['regimes'] == result['regimes']


def test_more_regimes_join_the_workdir_csm_and_deformed_masks(first_run, tiny6):
  workdir, data_dir, _ = first_run
  more = aug.main(_argv(workdir, data_dir, '--regimes',
                        'real-k,real-k+ctm:deformed,real-k+csm,real-k+csm:deformed,'
                        'real-k+ctm+classic',
                        '--out', os.path.join(workdir, 'more.json')))
  # Only what is new runs: the CSM generator, three synthetic sets, four segmenters (CTM's
  # set with classic augmentation is the one made for real-1+ctm).
  assert more['stages']['generators'] == {'ran': 1, 'skipped': 1}
  assert more['stages']['sampling'] == {'ran': 3, 'skipped': 1}
  assert more['stages']['segmenters'] == {'ran': 4, 'skipped': 1}
  rows = {r['name']: r for r in more['regimes']}
  assert [(rows[n]['generator'], rows[n]['mask_source'], rows[n]['n_synthetic'])
          for n in ('real-1+ctm:deformed', 'real-1+csm', 'real-1+csm:deformed')] == [
              ('ctm', 'deformed', 18), ('csm', 'other_patients', 18), ('csm', 'deformed', 18)]
  combined = rows['real-1+ctm+classic']
  assert (combined['generator'], combined['augment'], combined['n_synthetic']) == ('ctm', True, 18)
  assert not rows['real-1+csm']['augment']
  # No ceiling in this run: no gap to close; but the workdir's ceiling judges the labels,
  # of every set (no radiographs to compare the deformed masks' draws with).
  assert all(rows[n]['gap_closed'] is None for n in rows if n != 'real-1')
  for n in ('real-1+ctm:deformed', 'real-1+csm', 'real-1+csm:deformed'):
    assert 0 <= rows[n]['label_dice_bone_mean'] <= 1, n
    assert ('synthetic_psnr_mean' in rows[n]) == (n == 'real-1+csm'), n
  with open(os.path.join(workdir, 'subsets.json'), encoding='utf-8') as f:
    (patient,) = json.load(f)['k']['1']['patients']
  pid = lambda ex: ex['patient_id'].decode() if isinstance(ex['patient_id'], bytes) else str(
      ex['patient_id'])
  train = _split(tiny6, 'train')
  own = [np.asarray(ex['contour_bone'], np.float32) for ex in train if pid(ex) == patient]
  others = {np.asarray(ex['contour_bone'], np.float32).tobytes()
            for ex in train if pid(ex) != patient}
  leg = lambda m: np.count_nonzero(m > 0)
  for gen in ('ctm', 'csm'):
    path = os.path.join(workdir, 'synth', f'{gen}_k1_deformed', 'tfds', 'knee_drr_synthetic',
                        '1.0.0')
    masks = [np.asarray(ex['contour_bone'], np.float32) for ex in _split(path, 'train')]
    assert len(masks) == 18
    for m in masks:  # labels of a warped own view: none of the other patients' masks
      assert set(np.unique(m)) <= {0.0, 0.5, 1.0} and m.tobytes() not in others
      assert 0.5 * min(map(leg, own)) <= leg(m) <= 1.5 * max(map(leg, own))
  path = os.path.join(workdir, 'synth', 'csm_k1_other_patients', 'tfds', 'knee_drr_synthetic',
                      '1.0.0')
  assert sorted(np.asarray(ex['contour_bone'], np.float32).tobytes()
                for ex in _split(path, 'train')) == sorted(
                    np.asarray(ex['contour_bone'], np.float32).tobytes()
                    for ex in train if pid(ex) != patient)
