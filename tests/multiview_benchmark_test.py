"""benchmarks/multiview: every key of every set, resume, the volume metrics against
independent references (scipy's blur, block means, drr.scan_volume's scale and images), and
the refusals; on the tiny data set (one test patient, 6 views of 16 px) with a tiny CTM of
random parameters."""
import dataclasses
import json
import os

import numpy as np
import pytest

from benchmarks import multiview as bench
from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import multiview
from score_sde_knee import multiview_metrics
from score_sde_knee import run_config
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom
from helpers import TINY
from helpers import make_workdir
from helpers import read_split
from helpers import tiny_config

GRID = 16


@pytest.fixture(scope='module')
def ctm(tmp_path_factory, data_dir):
  """(config, workdir): a CTM contour_bone run as training leaves it (step 2)."""
  config = tiny_config('ctm', 'contour_bone', data_dir)
  return config, make_workdir(tmp_path_factory.mktemp('ctm_cb'), config)


def _run(workdir, root, **kw):
  args = dict(out=os.path.join(root, 'out.json'), work=os.path.join(root, 'work'),
              samplers=('fast',), draws=2, seed=3, grid=GRID, data_config=TINY,
              command='python -m benchmarks.multiview (test)')
  return bench.run(workdir, **{**args, **kw})


@pytest.fixture(scope='module')
def bench_run(tmp_path_factory, ctm):
  """(root, result) of the benchmark on every test patient."""
  root = str(tmp_path_factory.mktemp('bench'))
  return root, _run(ctm[1], root)


def _test_leg(data_dir):
  """(patient, angles, images) of the tiny test split, sorted by angle."""
  examples = sorted(read_split(data_dir), key=lambda ex: float(ex['angle_deg']))
  (pid,) = {ex['patient_id'].decode() for ex in examples}
  return (pid, np.array([ex['angle_deg'] for ex in examples], np.float64),
          np.stack([ex['image'] for ex in examples]).astype(np.float32))


def test_every_key_of_every_set(bench_run, ctm, data_dir):
  root, result = bench_run
  with open(os.path.join(root, 'out.json'), encoding='utf-8') as f:
    assert json.load(f) == json.loads(json.dumps(result))
  pid, angles, images = _test_leg(data_dir)
  assert result['patients'] == [pid] and result['checkpoint_step'] == 2
  for key in ('what', 'command', 'date', 'machine', 'versions', 'workdir', 'grid',
              'consistency', 'seeds', 'data'):
    assert result[key], key
  assert result['versions']['jax'] and result['versions']['flax']
  assert result['data']['version'] == '2.0.0' and result['data']['phantom_revision'] == 3
  assert result['grid']['shape'] == [GRID] * 3 and result['seeds']['seed'] == 3
  fast = result['samplers']['fast']
  assert fast['setting'].startswith('pc:17') and fast['nfe'] == 49
  patient = fast['per_patient'][pid]
  for name in bench.SETS:
    assert sorted(fast['summary'][name]) == sorted(bench.KEYS), name
    assert sorted(patient['sets'][name]) == sorted(bench.KEYS), name
  s = patient['sets']
  assert s['truth']['view_psnr_mean'] is None and s['truth']['seconds_per_leg'] is None
  assert s['truth']['volume_sharpness'] == 1.0
  for name in bench.SETS[1:]:
    assert all(s[name][k] is not None for k in bench.KEYS), name
    assert fast['summary'][name]['volume_psnr']['n'] == 1
    assert fast['summary'][name]['volume_psnr']['std'] == 0
    assert 0 <= s[name]['bone_dice_3d'] <= 1 and s[name]['seconds_per_leg'] > 0
  for kind in bench.DRAWN:  # the set is the mean over its draws
    draws = patient['draws'][kind]
    assert len(draws) == 2
    assert s[kind]['view_mae_mean'] == pytest.approx(
        np.mean([d['view_mae_mean'] for d in draws]))
    assert s[f'{kind}_mean']['seconds_per_leg'] == pytest.approx(
        sum(d['seconds_per_leg'] for d in draws))
    assert patient['seconds_first_leg_with_compilation'][kind] > draws[0]['seconds_per_leg']
  # The truth's consistency error is multiview.consistency_error of the data set's DRRs.
  geometry = geometry_lib.ConeBeamGeometry().with_detector(16)
  c = multiview.for_geometry(geometry, GRID, angles)
  assert s['truth']['consistency_error'] == pytest.approx(
      float(multiview.consistency_error(images, c)), rel=1e-4)
  assert s['truth']['consistency_error'] < s['independent']['consistency_error']
  # The per-patient record, as the work folder holds it.
  with open(os.path.join(root, 'work', 'fast', f'{pid}.json'), encoding='utf-8') as f:
    work = json.load(f)
  assert work['done'] and {k: v for k, v in work.items() if k != 'settings'} == patient
  assert [g['met'] in (True, False) for g in fast['goals']] == [True] * 7


def test_the_true_c_is_the_one_the_data_set_divided_by(bench_run, data_dir):
  """c and the phantom through drr.scan_volume (the builder's own path): the stored DRRs
  are its images, its scale is the benchmark's c."""
  _, result = bench_run
  pid, angles, images = _test_leg(data_dir)
  p = phantom.make_phantom(int(pid.split('_')[1]), spacing_mm=TINY.spacing_mm, revision=3)
  scan = drr.scan_volume(p.hu, p.spacing_mm, geometry_lib.ConeBeamGeometry().with_detector(16),
                         angles)
  np.testing.assert_allclose(scan.image[..., None], images, atol=1e-6)
  record = result['samplers']['fast']['per_patient'][pid]
  assert record['c'] == pytest.approx(scan.scale, rel=1e-6)
  assert multiview_metrics.true_scale(p.hu, p.spacing_mm, 16, 6) == pytest.approx(scan.scale,
                                                                    rel=1e-6)
  assert record['bone_threshold_v'] == pytest.approx(
      drr.MU_WATER_PER_MM * 1.2 / scan.scale, rel=1e-6)


def test_a_finished_patient_is_not_recomputed(bench_run, ctm, monkeypatch):
  root, result = bench_run
  (pid,) = result['patients']
  path = os.path.join(root, 'work', 'fast', f'{pid}.json')
  before = os.stat(path).st_mtime_ns
  monkeypatch.setattr(bench, 'evaluate_leg', lambda *a, **k: pytest.fail('recomputed'))
  monkeypatch.setattr(multiview_metrics, 'reference', lambda *a, **k: pytest.fail('recomputed'))
  again = _run(ctm[1], root, out=os.path.join(root, 'again.json'))
  assert again['samplers']['fast']['per_patient'] == result['samplers']['fast']['per_patient']
  assert os.stat(path).st_mtime_ns == before
  with pytest.raises(ValueError, match='other settings'):
    _run(ctm[1], root, seed=4)


def test_refusals(tmp_path, ctm, data_dir):
  config, workdir = ctm
  with pytest.raises(ValueError, match='not in the test split.*its patients are phantom_'):
    _run(workdir, str(tmp_path), patients=['phantom_9999'])
  with pytest.raises(ValueError, match='PC sampler, not heun'):
    _run(workdir, str(tmp_path), samplers=('heun:3',))
  with pytest.raises(ValueError, match='--draws must be an integer >= 1'):
    _run(workdir, str(tmp_path), draws=0)
  with pytest.raises(ValueError, match='made from ct data.*phantom'):
    _run(workdir, str(tmp_path), data_config=dataclasses.replace(TINY, source='ct'))
  with pytest.raises(ValueError, match="'tiny' is not one of knee_drr's configs"):
    _run(workdir, str(tmp_path), data_config=None)
  unet = tmp_path / 'unet'
  unet.mkdir()
  run_config.save(tiny_config('unet', 'contour_bone', data_dir), str(unet))
  with pytest.raises(ValueError, match='unet run.*CTM or CSM'):
    _run(str(unet), str(tmp_path))
  assert not os.path.exists(tmp_path / 'out.json')
  assert kb.Builder.PHANTOM_REVISION['2.0.0'] == 3
