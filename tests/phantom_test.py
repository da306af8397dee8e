"""Tests of the procedural knee phantom (docs/design.md, "The procedural phantom").

Positions are recomputed here from the recorded parameters with scipy's Rotation (an
independent rotation code), so a wrong frame in the phantom shows up as a wrong tissue.
"""
import functools
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from score_sde_knee.xray import phantom


@functools.lru_cache(maxsize=None)
def _ph(seed: int, h: float) -> phantom.Phantom:
  # The procedural anatomy (revisions 1-2) is this file's; revision 3's bones are
  # phantom_mesh_test's and bone_meshes_test's.
  return phantom.make_phantom(seed, spacing_mm=h, revision=2)


def _frames(p):
  """world(local) for the femur and the tibia, vectors (x, y, z) in mm."""
  off = np.array(p['offset_mm'][::-1])
  rf = Rotation.from_euler('xy', [p['flexion_deg'] / 2, -p['varus_valgus_deg'] / 2],
                           degrees=True).as_matrix()
  rt = Rotation.from_euler('xy', [-p['flexion_deg'] / 2, p['varus_valgus_deg'] / 2],
                           degrees=True).as_matrix()
  piv = np.array(p['femur_pivot'])
  return (lambda q: off + piv + rf @ (np.asarray(q) - piv)), (lambda q: off + rt @ q)


def _at(ph: phantom.Phantom, w) -> float:
  """HU of the voxel whose centre is nearest to world point w = (x, y, z)."""
  idx = []
  for v, n, h in zip(w[::-1], ph.hu.shape, ph.spacing_mm):
    i = int(round((v + n * h / 2) / h - 0.5))
    assert 0 <= i < n, (w, ph.hu.shape)
    idx.append(i)
  return float(ph.hu[tuple(idx)])


def test_same_seed_same_bytes_and_json_params():
  a, b = phantom.make_phantom(7, spacing_mm=4.0), phantom.make_phantom(7, spacing_mm=4.0)
  assert a.hu.tobytes() == b.hu.tobytes()
  assert json.dumps(a.params, sort_keys=True) == json.dumps(b.params, sort_keys=True)
  c = phantom.make_phantom(8, spacing_mm=4.0)
  assert a.hu.tobytes() != c.hu.tobytes()
  assert a.params != c.params
  for k in ('sex', 'scale', 'flexion_deg', 'varus_valgus_deg', 'offset_mm', 'condyle_ml'):
    assert k in a.params


def test_shape_spacing_dtype():
  ph = _ph(0, 2.0)
  assert ph.hu.shape == (120, 116, 116) and ph.hu.dtype == np.float32
  assert ph.spacing_mm == (2.0, 2.0, 2.0)
  small = phantom.make_phantom(0, spacing_mm=2.5, shape_mm=(100, 80, 60), revision=2)
  assert small.hu.shape == (40, 32, 24) and small.spacing_mm == (2.5, 2.5, 2.5)
  assert ph.hu.min() >= -1000.0 and ph.hu.max() <= 1800.0
  with pytest.raises(ValueError, match='spacing_mm'):
    phantom.make_phantom(0, spacing_mm=0.0)


@pytest.mark.parametrize('seed', [1, 2])
def test_tissues_at_known_points(seed):
  ph = _ph(seed, 1.0)
  p, s = ph.params, ph.params['scale']
  fem, tib = _frames(p)
  r_out, r_in = p['femur_d'] / 2, p['femur_canal_d'] / 2
  assert 1300 <= _at(ph, fem([(r_out + r_in) / 2, 0, 100])) <= 1800  # femoral cortex
  assert -100 <= _at(ph, fem([0, 0, 100])) <= -30                     # marrow
  assert 40 <= _at(ph, fem([r_out + 4, 0, 100])) <= 60                # thigh muscle
  ta, tc = p['tibia_ml'] / 2, p['tibia_cortex']
  assert 1300 <= _at(ph, tib([ta - tc / 2, 4 * s, -100])) <= 1800    # tibial cortex
  head = [40 * s, -13 * s, -29 * s]
  assert 150 <= _at(ph, tib(head)) <= 400                            # fibular head inside
  pat = [3 * s, p['patella_y'], p['patella_z']]
  assert 200 <= _at(ph, fem(pat)) <= 400                             # patella inside
  assert fem(pat)[1] > fem([0, 0, p['patella_z']])[1] + 20           # patella anterior
  assert tib(head)[0] > 25 and tib(head)[1] < tib([0, 0, -29 * s])[1]  # fibula lateral, post.
  assert ph.hu[0, 0, 0] == -1000.0 and ph.hu[-1, -1, -1] == -1000.0  # air
  # Joint space under the medial condyle: halfway between plateau top and condyle bottom.
  xc, yc = p['notch'] / 2 + p['condyle_ml'] / 2, -0.1 * p['condyle_ap']
  top = math.tan(math.radians(p['plateau_slope_deg'])) * yc
  if p['gap_medial'] - top >= 4.0:
    assert 60 <= _at(ph, tib([-xc, yc, (p['gap_medial'] + top) / 2])) <= 100
  # Fat: a run of fat-range voxels along +x from the femur, as thick as sampled.
  w = fem([0, 0, 100])
  row = ph.hu[int(round(w[2] + 119.5)), int(round(w[1] + 115.5)), int(round(w[0] + 115.5)):]
  fat = (row >= -110) & (row <= -70)
  if p['fat'] <= 20:  # Thinner than the cap that keeps some muscle in thin limbs.
    assert abs(int(fat.sum()) - p['fat']) <= 2.5
  else:
    assert fat.sum() >= 17
  assert row[-1] == -1000.0


@pytest.mark.parametrize('seed', [1, 2])
def test_shaft_canals_open_into_the_metaphyses(seed):
  """Along each shaft's axis, from the metaphysis into the canal: no cortical plug (rev. 2).

  Revision 1 (knee_drr 1.0.0) had one, 5 mm thick; it is found here, so the test can fail.
  """
  def axis_hu(ph):
    p, s = ph.params, ph.params['scale']
    fem, tib = _frames(p)
    z_shaft = -75 * s  # the tibial cone's base; the femoral one at zm1:
    zm1 = (p['gap_medial'] + p['gap_lateral']) / 2 + 0.45 * p['condyle_ap'] + 48 * s
    tibia = [_at(ph, tib([0, 4 * s, z])) for z in np.arange(z_shaft + 8, z_shaft - 20, -1.0)]
    femur = [_at(ph, fem([0, 0, z])) for z in np.arange(zm1 - 8, zm1 + 20, 1.0)]
    return np.array(tibia), np.array(femur)

  for bone, hu in zip(('tibia', 'femur'), axis_hu(_ph(seed, 1.0))):
    assert hu.max() < 600, (bone, hu.round())   # trabecular (<= 400) then marrow
    assert hu[-1] < 0, (bone, hu.round())        # the canal's marrow at the far end
  old = phantom.make_phantom(seed, spacing_mm=1.0, revision=1)
  for bone, hu in zip(('tibia', 'femur'), axis_hu(old)):
    assert hu.max() > 1200, (bone, hu.round())  # revision 1's cortical plug
  assert _ph(seed, 1.0).params['revision'] == 2 and phantom.REVISION == 3
  with pytest.raises(ValueError, match='revision must be one of'):
    phantom.make_phantom(seed, spacing_mm=8.0, revision=4)


def test_bone_above_threshold_soft_tissue_below():
  ph = _ph(1, 1.0)
  p = ph.params
  fem, tib = _frames(p)
  assert ph.hu.max() >= 1300
  # Trabecular balls inside the condyle, plateau and patella are mostly >= 200 HU.
  xc = p['notch'] / 2 + p['condyle_ml'] / 2
  for w in (tib([xc, -0.1 * p['condyle_ap'], p['gap_lateral'] + 0.45 * p['condyle_ap']]),
            tib([0, 0, -10]), fem([3 * p['scale'], p['patella_y'], p['patella_z']])):
    c = [int(round(v + n / 2 - 0.5)) for v, n in zip(w[::-1], ph.hu.shape)]
    ball = ph.hu[c[0] - 4:c[0] + 5, c[1] - 4:c[1] + 5, c[2] - 4:c[2] + 5]
    assert (ball >= 200).mean() > 0.8
  # Soft tissue in an axial slice through the thigh, away from the femur: all < 200 HU.
  w = fem([0, 0, 100])
  k = int(round(w[2] + 119.5))
  y, x = np.meshgrid(np.arange(116 * 2) - 115.5, np.arange(116 * 2) - 115.5, indexing='ij')
  far = np.hypot(x - w[0], y - w[1]) > p['femur_d'] / 2 + 4
  assert ph.hu[k][far].max() < 200


def test_sex_changes_sizes_and_ranges():
  ps = [phantom.sample_params(s) for s in range(300)]
  male = [q for q in ps if q['sex'] == 'male']
  female = [q for q in ps if q['sex'] == 'female']
  assert 0.4 < len(male) / len(ps) < 0.6

  def mean(group, key):
    return np.mean([q[key] / q['scale'] for q in group])

  for key in ('condyle_ml', 'condyle_ap', 'plateau_ml', 'patella_w'):
    assert mean(male, key) > mean(female, key) + 1.0, key
  assert abs(mean(male, 'gap_medial') - 5.7) < 0.25  # design.md: 5.7 +- 0.8 (4.8 +- 0.7)
  assert abs(mean(female, 'gap_medial') - 4.8) < 0.25
  assert mean(female, 'fat') > mean(male, 'fat') + 5
  for q in ps:
    assert 29 - 1e-9 <= q['condyle_ml'] / q['scale'] <= 39 + 1e-9
    assert 0 <= q['flexion_deg'] <= 10 and abs(q['varus_valgus_deg']) <= 5
    assert max(abs(v) for v in q['offset_mm']) <= 10
  scales = np.array([q['scale'] for q in ps])
  assert abs(scales.mean() - 1) < 0.015 and 0.035 < scales.std() < 0.055


def test_2mm_is_block_mean_of_1mm():
  a = _ph(1, 1.0).hu.astype(np.float64)
  b = _ph(1, 2.0).hu
  nz, ny, nx = b.shape
  m = a.reshape(nz, 2, ny, 2, nx, 2).mean(axis=(1, 3, 5))
  d = np.abs(m - b)
  assert d.mean() < 3.0 and np.percentile(d, 99) < 60.0
  assert np.corrcoef(m.ravel(), b.ravel())[0, 1] > 0.999


def test_cli_writes_nifti_and_png(tmp_path, capsys):
  out, png = tmp_path / 'p.nii.gz', tmp_path / 'p.png'
  phantom.main(['--seed', '3', '--out', str(out), '--spacing', '8', '--png', str(png)])
  params = json.loads(capsys.readouterr().out)
  assert params['seed'] == 3 and params['sex'] in ('male', 'female')
  assert sitk.ReadImage(str(out)).GetSize() == (29, 29, 30)
  assert png.stat().st_size > 1000
