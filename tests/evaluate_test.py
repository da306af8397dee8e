"""evaluate: metrics against an independent numpy/skimage computation, resume, errors."""
import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from configs import default
from score_sde_knee import evaluate
from score_sde_knee import parallel
from helpers import read_split
from helpers import make_workdir
from helpers import tiny_config


def test_zero_unet_metrics_match_numpy(tmp_path, data_dir):
  config = tiny_config('unet', 'contour_bone', data_dir)
  config.eval.num_images, config.eval.batch_size = 0, 4   # 6 images: a padded last batch
  # All-zero parameters: the network outputs exactly 0, so every sample is 0.
  wd = make_workdir(tmp_path / 'unet', config,
                    lambda p: jax.tree.map(lambda x: x * 0, p))
  summary = evaluate.evaluate(config, wd)

  out = os.path.join(wd, 'eval', 'contour_bone')
  with open(os.path.join(out, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(summary))
  with open(os.path.join(wd, 'eval', 'metrics.json')) as f:  # the training condition's
    assert json.load(f) == saved
  for key in ('method', 'condition', 'n', 'mae_mean', 'mae_std', 'psnr_mean', 'psnr_std',
              'ssim_mean', 'ssim_std', 'dice_mean', 'dice_bone_mean', 'sampler',
              'checkpoint_step', 'split', 'per_image'):
    assert key in saved, key
  assert saved['method'] == 'unet' and saved['condition'] == 'contour_bone'
  assert saved['n'] == 6 and saved['checkpoint_step'] == 2 and saved['split'] == 'test'
  assert sorted(os.listdir(os.path.join(out, 'batches'))) == ['batch_00000.npz',
                                                               'batch_00001.npz']

  truth = read_split(data_dir)
  x = np.stack([t['image'][..., 0] for t in truth]).astype(np.float64)
  cb = np.stack([t['contour_bone'][..., 0] for t in truth])
  mae = x.mean(axis=(1, 2))
  psnr = 10 * np.log10(1.0 / (x**2).mean(axis=(1, 2)))
  ssim = [structural_similarity(np.zeros_like(im), im, data_range=1.0) for im in x]
  # The sample (0) has an empty contour and bone: Dice 0 unless the mask is empty too.
  dice = np.where((cb > 0).any(axis=(1, 2)), 0.0, 1.0)
  dice_bone = np.where((cb == 1).any(axis=(1, 2)), 0.0, 1.0)
  per = saved['per_image']
  assert [p['index'] for p in per] == list(range(6))
  assert [p['patient_id'] for p in per] == [t['patient_id'].decode() for t in truth]
  assert [p['angle_deg'] for p in per] == [float(t['angle_deg']) for t in truth]
  np.testing.assert_allclose([p['mae'] for p in per], mae, rtol=1e-6)
  np.testing.assert_allclose([p['psnr'] for p in per], psnr, rtol=1e-6)
  np.testing.assert_allclose([p['ssim'] for p in per], ssim, rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal([p['dice'] for p in per], dice)
  np.testing.assert_array_equal([p['dice_bone'] for p in per], dice_bone)
  np.testing.assert_allclose([saved['mae_mean'], saved['mae_std']], [mae.mean(), mae.std()],
                             rtol=1e-6)
  np.testing.assert_allclose([saved['psnr_mean'], saved['psnr_std']],
                             [psnr.mean(), psnr.std()], rtol=1e-6)
  with np.load(os.path.join(out, 'samples.npz')) as z:
    assert z['samples'].shape == (6, 16, 16, 1) and not z['samples'].any()
    np.testing.assert_array_equal(z['indices'], np.arange(6))


def test_interrupted_eval_resumes_to_identical_results(tmp_path, data_dir):
  config = tiny_config('csm', 'contour', data_dir)
  config.eval.num_images, config.eval.batch_size = 6, 2
  config.eval.condition = 'contour_bone'  # one CSM model serves both conditions
  wd = make_workdir(tmp_path / 'csm', config)
  out = os.path.join(wd, 'eval', 'contour_bone')

  assert evaluate.evaluate(config, wd, max_batches=1) is None
  assert os.listdir(os.path.join(out, 'batches')) == ['batch_00000.npz']
  assert not os.path.exists(os.path.join(out, 'metrics.json'))
  first = os.stat(os.path.join(out, 'batches', 'batch_00000.npz')).st_mtime_ns
  resumed = evaluate.evaluate(config, wd)
  assert os.stat(os.path.join(out, 'batches', 'batch_00000.npz')).st_mtime_ns == first
  with np.load(os.path.join(out, 'samples.npz')) as z:
    resumed_samples = z['samples']

  shutil.rmtree(os.path.join(wd, 'eval'))
  fresh = evaluate.evaluate(config, wd)
  assert fresh == resumed and fresh['n'] == 6 and 'dice_bone_mean' in fresh
  assert fresh['sampler']['t0'] == config.sampling.t0 and fresh['sampler']['N'] == 4
  assert fresh['sampler']['method'] == 'pc' and fresh['sampler']['snr'] == 0.4
  assert fresh['sampler']['order'] == config.sampling.order and fresh['sampler']['seed'] == 42
  with np.load(os.path.join(out, 'samples.npz')) as z:
    np.testing.assert_array_equal(z['samples'], resumed_samples)
  # Batches draw different noise.
  assert not np.array_equal(resumed_samples[0], resumed_samples[2])

  # A batch made with other sampler settings is not reused.
  config.sampling.snr = 0.2
  os.remove(os.path.join(out, 'metrics.json'))
  assert evaluate.evaluate(config, wd, max_batches=0) is None
  assert not os.path.exists(os.path.join(out, 'metrics.json'))


def test_step_evaluates_an_older_checkpoint_beside_the_runs_own_evaluation(tmp_path,
                                                                           data_dir):
  config = tiny_config('unet', 'contour_bone', data_dir)
  config.eval.num_images, config.eval.batch_size = 0, 6
  # Step 2 outputs exactly 0 (zero parameters), step 4 is the initialised network.
  wd = make_workdir(tmp_path / 'unet', config, lambda p: jax.tree.map(lambda x: x * 0, p))
  make_workdir(tmp_path / 'unet', config, step=4)

  old = evaluate.evaluate(config, wd, step=2)
  assert old['checkpoint_step'] == 2
  assert os.listdir(os.path.join(wd, 'eval')) == ['step_2']  # the run's own result: untouched
  x = np.stack([t['image'][..., 0] for t in read_split(data_dir)]).astype(np.float64)
  np.testing.assert_allclose([p['mae'] for p in old['per_image']], x.mean(axis=(1, 2)),
                             rtol=1e-6)  # a zero image's error is the image itself
  with open(os.path.join(wd, 'eval', 'step_2', 'contour_bone', 'metrics.json')) as f:
    assert json.load(f) == json.loads(json.dumps(old))

  newest = evaluate.evaluate(config, wd)
  assert newest['checkpoint_step'] == 4 and newest['mae_mean'] != old['mae_mean']
  assert sorted(os.listdir(os.path.join(wd, 'eval'))) == ['contour_bone', 'metrics.json',
                                                          'step_2']
  with pytest.raises(ValueError, match=r'No checkpoint of step 3 in .*unet; it has steps '
                                       r'\[2, 4\]'):
    evaluate.evaluate(config, wd, step=3)


def test_sampler_evaluates_beside_the_runs_own_evaluation(tmp_path, data_dir):
  config = tiny_config('csm', 'contour', data_dir)
  config.eval.num_images, config.eval.batch_size = 2, 2
  wd = make_workdir(tmp_path / 'csm', config)
  own = evaluate.evaluate(config, wd)  # the config's PC, N = 4
  read = lambda *p: pathlib.Path(wd, *p).read_bytes()
  before = read('eval', 'metrics.json'), read('eval', 'contour', 'metrics.json')

  got = evaluate.evaluate(config, wd, sampler='pc:2:snr=0.2')
  assert (got['sampler']['method'], got['sampler']['N'], got['sampler']['snr']) == (
      'pc', 2, 0.2)
  assert json.loads(read('eval_samplers', 'contour', 'pc-2-snr0.2', 'metrics.json')) == got
  assert (read('eval', 'metrics.json'), read('eval', 'contour', 'metrics.json')) == before
  assert got['psnr_mean'] != own['psnr_mean']
  # The same samples as the config with those two fields written in by hand.
  by_hand = tiny_config('csm', 'contour', data_dir)
  by_hand.eval.num_images, by_hand.eval.batch_size = 2, 2
  by_hand.sde.num_scales, by_hand.sampling.snr = 2, 0.2
  evaluate.evaluate(by_hand, wd, out_dir=str(tmp_path / 'by_hand'))
  with np.load(os.path.join(wd, 'eval_samplers', 'contour', 'pc-2-snr0.2',
                            'samples.npz')) as a, \
       np.load(tmp_path / 'by_hand' / 'samples.npz') as b:
    np.testing.assert_array_equal(a['samples'], b['samples'])


def test_clear_errors(tmp_path, data_dir):
  config = tiny_config('ctm', data_dir=data_dir)
  with pytest.raises(FileNotFoundError, match='--mode=train'):
    evaluate.evaluate(config, str(tmp_path))
  config.eval.condition = 'contour_bone'
  with pytest.raises(ValueError, match='only csm'):
    evaluate.eval_condition(config)
  config.eval.condition = 'bones'
  with pytest.raises(ValueError, match="'bones'"):
    evaluate.eval_condition(config)


def test_sampler_compiles_once_across_seeds_and_conditions():
  # Draws with other seeds or the other CSM condition reuse one jitted sampler; a setting
  # the sampler reads does not.
  mesh = parallel.make_mesh()
  config = default.get_config('contour,test', method='csm')
  first = evaluate.jitted_sample_fn(config, mesh)
  config.seed += 1
  config.eval.condition = 'contour_bone'
  assert evaluate.jitted_sample_fn(config, mesh) is first
  config.sampling.snr = 0.2
  assert evaluate.jitted_sample_fn(config, mesh) is not first


def test_sampler_settings_record_later_fields_only_when_they_act():
  # Caches written before t_jump, precond, momentum existed are keyed on settings without them:
  # at their no-op values they stay out, so those caches remain valid; other values count.
  config = default.get_config('contour,test', method='ctm')
  plain = evaluate.sampler_settings(config)
  assert not {'t_jump', 'precond', 'precond_width', 'momentum'} & set(plain)
  assert plain['t0'] == 1.0 and plain['predictor'] == config.sampling.predictor
  config.sampling.update(t_jump=0.74, precond=3.0, precond_width=16.0, momentum=0.8)
  assert evaluate.sampler_settings(config) == dict(plain, t_jump=0.74, precond=3.0,
                                                   precond_width=16.0, momentum=0.8)
