"""phantom_mesh (phantom revision 3): a bone outside the field is refused, patients are
deterministic per seed, tissues have their values."""
import numpy as np
import pytest

from score_sde_knee.xray import phantom
from score_sde_knee.xray import phantom_mesh
from score_sde_knee.xray import shapes


def test_bone_outside_the_field_is_refused_by_name():
  p = phantom.sample_params(1)
  p.update(phantom_mesh.sample_params(1, p))
  bones = phantom_mesh.place_bones(p)
  phantom_mesh.check_in_field(bones, shapes.make_grid(phantom.DEFAULT_SHAPE_MM, 4.0))
  with pytest.raises(ValueError, match="bone 'femur' lies"):
    phantom_mesh.check_in_field(bones, shapes.make_grid((240.0, 232.0, 60.0), 4.0))


def test_revision_3_is_deterministic_and_seeded():
  a = phantom.make_phantom(5, spacing_mm=4.0, revision=3)
  b = phantom.make_phantom(5, spacing_mm=4.0, revision=3)
  c = phantom.make_phantom(6, spacing_mm=4.0, revision=3)
  assert a.hu.tobytes() == b.hu.tobytes() and a.params == b.params
  assert not np.array_equal(a.hu, c.hu)
  assert a.params['revision'] == 3 and 0 <= a.params['flexion_deg'] <= 15


def test_revision_3_tissue_values():
  ph = phantom.make_phantom(2, spacing_mm=2.0, revision=3)
  p, hu = ph.params, ph.hu
  assert 1500 <= p['hu_cortex'] <= 1800 and 200 <= p['hu_trabecular'] <= 300
  assert -90 <= p['hu_marrow'] <= -40 and 0.85 <= p['scale'] <= 1.15
  assert hu.min() == -1000.0 and hu.max() < 2000.0
  # Cortex is there (well above trabecular bone) and air surrounds the leg.
  assert (hu > 1200).sum() > 500
  assert np.all(hu[:, :, 0] == -1000.0)
  # The femoral shaft at the field's top: a marrow canal inside a cortical ring.
  row = hu[-8, :, :]
  assert row.max() > 1000 and (row < 0).sum() > 0
