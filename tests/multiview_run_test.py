"""multiview_run (--views=all): outputs, their units and spacing, the fitted scale, resume,
label volumes and the refusals, on the tiny data set (one test patient, 6 views of 16 px)
with a tiny CTM of random parameters."""
import json
import os
import sys
import types

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import SimpleITK as sitk

import score_sde_knee
from score_sde_knee import multiview
from score_sde_knee import multiview_run
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib
from helpers import make_workdir
from helpers import read_split
from helpers import tiny_config

GRID = 16
SETS = ('independent', 'consistent', 'truth')


@pytest.fixture(scope='module')
def ctm(tmp_path_factory, data_dir):
  """(config, workdir): a CTM contour_bone run as training leaves it (step 2)."""
  config = tiny_config('ctm', 'contour_bone', data_dir)
  return config, make_workdir(tmp_path_factory.mktemp('ctm_cb'), config)


@pytest.fixture(scope='module')
def legs(tmp_path_factory, ctm):
  """(out, manifests) of every test patient sampled once."""
  config, workdir = ctm
  out = str(tmp_path_factory.mktemp('legs'))
  return out, multiview_run.run(config, workdir, masks='test', out=out, seed=3, grid=GRID)


def _test_leg(data_dir):
  """(patient, angles, images, contour_bone) of the tiny test split, sorted by angle."""
  examples = sorted(read_split(data_dir), key=lambda ex: float(ex['angle_deg']))
  stack = lambda k: np.stack([ex[k] for ex in examples]).astype(np.float32)
  pids = {ex['patient_id'].decode() for ex in examples}
  assert len(pids) == 1
  return pids.pop(), stack('angle_deg'), stack('image'), stack('contour_bone')


def _consistency(angles):
  geometry = geometry_lib.ConeBeamGeometry().with_detector(16)
  return multiview.for_geometry(geometry, GRID, angles, **multiview_run.CONSISTENCY)


def test_outputs_units_and_spacing(legs, data_dir):
  out, manifests = legs
  pid, angles, images, cb = _test_leg(data_dir)
  assert [m['patient'] for m in manifests] == [pid]
  m = manifests[0]
  folder = os.path.join(out, pid)
  with open(os.path.join(folder, 'manifest.json')) as f:
    assert json.load(f) == m
  assert m['done'] and m['mask_source'] == f'test:{pid}' and m['settings']['seed'] == 3
  assert m['seeds'] == {'independent': 3, 'consistent': 3}
  assert m['settings']['checkpoint_step'] == 2 and m['seconds'] > 0
  assert m['angles_deg'] == pytest.approx(angles.tolist())
  assert sorted(m['consistency_error']) == sorted(SETS)
  for rel in m['files']:
    assert os.path.isfile(os.path.join(folder, rel)), rel
  np.testing.assert_array_equal(np.load(os.path.join(folder, 'views', 'truth.npy')), images)
  np.testing.assert_array_equal(np.load(os.path.join(folder, 'views', 'masks.npy')), cb)
  c = _consistency(angles)
  spacing = c.spacing_mm
  assert m['volume']['spacing_mm'] == pytest.approx(list(spacing))
  for name in SETS:
    views = np.load(os.path.join(folder, 'views', f'{name}.npy'))
    assert views.shape == (6, 16, 16, 1) and views.dtype == np.float32
    assert 0 <= views.min() <= views.max() <= 1
    for v, a in ((0, 0), (5, 300)):
      with Image.open(os.path.join(folder, 'views', f'{name}_v{v:02d}_{a:03d}.png')) as im:
        png = np.asarray(im)
      assert png.dtype == np.uint16 and png.shape == (16, 16)
      np.testing.assert_array_equal(png, np.round(views[v, ..., 0].astype(np.float64) * 65535))
    # The volume: CGLS of the views, its spacing in the file (x, y, z), axes (z, y, x).
    img = sitk.ReadImage(os.path.join(folder, f'volume_{name}.nii.gz'))
    assert img.GetSpacing() == pytest.approx(spacing[::-1])
    volume = sitk.GetArrayFromImage(img)
    assert volume.shape == c.volume_shape and volume.dtype == np.float32
    want = c.reconstruct(jnp.asarray(views[..., 0]), n_iters=30, nonneg=False)
    np.testing.assert_allclose(volume, np.asarray(want), rtol=1e-4, atol=1e-6)
    # Its error is multiview.consistency_error's.
    assert m['consistency_error'][name] == pytest.approx(
        float(multiview.consistency_error(views, c)), rel=1e-4)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(
        os.path.join(folder, f'volume_{name}_hu.nii.gz')))
    np.testing.assert_allclose(hu, 1000 * (m['c'] * volume / drr.MU_WATER_PER_MM - 1),
                               rtol=1e-5, atol=1e-2)
  assert 'water' in m['c_source'] and m['c'] > 0
  with Image.open(os.path.join(folder, 'figure.png')) as im:
    assert im.height > im.width / 2  # 3 rows of views, 3 of slices


def test_consistent_views_differ_and_agree_better(legs):
  out, manifests = legs
  m = manifests[0]
  folder = os.path.join(out, m['patient'])
  ind, cons = (np.load(os.path.join(folder, 'views', f'{n}.npy'))
               for n in ('independent', 'consistent'))
  assert np.abs(ind - cons).max() > 0.05
  e = m['consistency_error']
  # The consistent views are projections of one volume on the grid but for CTM's final clip
  # to [0, 1], which an untrained model's re-projections run into: measured 0.077 against
  # 0.143 for the independent draws of the same keys (the true DRRs: 0.003; 6 views of 16
  # px constrain a 16^3 grid little), where a trained model reaches ~0.01 (multiview_test).
  assert e['consistent'] < 0.75 * e['independent'], e
  assert e['truth'] < 0.01, e


def test_fit_scale_reads_soft_tissue_as_water():
  """c from a known two-material volume: its soft tissue at 0.5 must come out as water."""
  angles = np.arange(6) * 60.0
  c = _consistency(angles)
  z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in c.volume_shape), indexing='ij')
  body = (x / 0.6) ** 2 + (y / 0.6) ** 2 + (z / 0.8) ** 2 <= 1
  bone = (x ** 2 + y ** 2 <= 0.06) & (np.abs(z) < 0.6)
  volume = np.where(bone, 2.0, np.where(body, 0.5, 0.0)).astype(np.float32)
  proj = lambda v: np.asarray(c.project(jnp.asarray(v, jnp.float32)))[..., None]
  p_body, p_bone = proj(body), proj(bone)
  cb = np.where(p_bone > 1e-3, 1.0, np.where(p_body > 1e-3, 0.5, 0.0)).astype(np.float32)
  hull = multiview_run.visual_hull(cb[..., 0] > 0.25, c)
  assert hull[body].mean() > 0.95 and not hull[0].any()  # the body, not the grid's ends
  scale, how = multiview_run.fit_scale(volume, cb, c)
  assert scale == pytest.approx(drr.MU_WATER_PER_MM / 0.5) and 'water' in how
  np.testing.assert_allclose(multiview_run.to_hu(volume, scale)[body & ~bone], 0, atol=1e-3)
  assert multiview_run.fit_scale(volume, np.zeros_like(cb), c)[0] is None


def test_a_finished_leg_is_skipped(legs, ctm, monkeypatch):
  config, workdir = ctm
  out, manifests = legs
  folder = os.path.join(out, manifests[0]['patient'])
  stamp = lambda: {r: os.stat(os.path.join(folder, r)).st_mtime_ns
                   for r in manifests[0]['files'] + ['manifest.json']}
  before = stamp()
  monkeypatch.setattr(multiview_run, 'run_leg', lambda *a, **k: pytest.fail('resampled'))
  again = multiview_run.run(config, workdir, masks='test', out=out, seed=3, grid=GRID)
  assert again == manifests and stamp() == before
  with pytest.raises(ValueError, match='other settings'):
    multiview_run.run(config, workdir, masks='test', out=out, seed=4, grid=GRID)


def test_label_volume_masks(tmp_path, ctm, data_dir, monkeypatch):
  """A label volume goes through multiview_masks (here a stand-in that returns the test
  leg's masks), checked for consistency; no truth, so no c and no HU volumes."""
  config, workdir = ctm
  _, angles, _, cb = _test_leg(data_dir)
  calls = []
  fake = types.ModuleType('score_sde_knee.multiview_masks')
  fake.read_label_volume = lambda path: (calls.append(('read', path)) or np.zeros((4, 4, 4)),
                                         (2.0, 2.0, 2.0))

  def masks_from_label_volume(labels, spacing_mm, geometry, angles_deg):
    calls.append(('masks', geometry.detector_rows, tuple(angles_deg)))
    return dict(contour=np.where(cb > 0, 0.5, 0.0), contour_bone=cb, angles_deg=angles,
                image=None)
  fake.masks_from_label_volume = masks_from_label_volume
  fake.check_consistent = lambda masks, geometry, angles_deg: calls.append(
      ('check', masks.shape, tuple(angles_deg)))
  monkeypatch.setitem(sys.modules, 'score_sde_knee.multiview_masks', fake)
  monkeypatch.setattr(score_sde_knee, 'multiview_masks', fake, raising=False)
  path = tmp_path / 'leg 7.nii.gz'
  path.write_bytes(b'')
  out = str(tmp_path / 'out')
  (m,) = multiview_run.run(config, workdir, masks=str(path), out=out, grid=GRID,
                           num_views=6)
  assert calls == [('read', str(path)), ('masks', 16, tuple(angles)),
                   ('check', (6, 16, 16, 1), tuple(angles))]
  assert m['patient'] == 'leg_7' and m['mask_source'] == str(path)
  assert m['c'] is None and sorted(m['consistency_error']) == ['consistent', 'independent']
  names = os.listdir(os.path.join(out, 'leg_7'))
  assert 'volume_consistent.nii.gz' in names and not any('_hu' in n for n in names)
  assert not any(n.startswith('truth') for n in os.listdir(os.path.join(out, 'leg_7',
                                                                        'views')))


def test_refusals(tmp_path, ctm, data_dir):
  config, workdir = ctm
  run = lambda masks, **kw: multiview_run.run(config, workdir, masks=masks,
                                              out=str(tmp_path), grid=GRID, **kw)
  pid = _test_leg(data_dir)[0]
  with pytest.raises(ValueError, match=f'test:nobody.*test patients are {pid}'):
    run('test:nobody')
  for bad in ('masks/', 'a.png', 'test:', 'train'):
    with pytest.raises(ValueError, match=r'expected "test".*label volume.*\.nii\.gz'):
      run(bad)
  with pytest.raises(FileNotFoundError, match='missing.nii.*no such label volume'):
    run(str(tmp_path / 'missing.nii'))
  with pytest.raises(ValueError, match='--snap applies to per-view masks'):
    run('test', snap=True)
  with pytest.raises(ValueError, match='num_samples must be an integer >= 1'):
    run('test', num_samples=0)
  with pytest.raises(ValueError, match='PC sampler, not heun'):
    run('test', sampler='heun:3')
  unet = tiny_config('unet', 'contour', data_dir)
  with pytest.raises(ValueError, match='unet run.*Use a CTM or CSM run'):
    multiview_run.run(unet, workdir, masks='test', out=str(tmp_path))
  with pytest.raises(ValueError, match='needs --masks'):
    multiview_run.run(config, workdir, masks=None, out=str(tmp_path))
