"""Tests of the cone-beam geometry: design defaults, validation, point projection."""
import math

import numpy as np
import pytest

from score_sde_knee.xray import geometry as geometry_lib


def test_defaults_follow_the_design():
  g = geometry_lib.ConeBeamGeometry()
  np.testing.assert_allclose(g.angles_deg(), np.arange(0, 360, 6))
  assert g.magnification == 1.6
  np.testing.assert_allclose(g.field_of_view_mm, (192.0, 192.0))


def test_with_detector_keeps_the_field_of_view():
  g = geometry_lib.ConeBeamGeometry()
  small = g.with_detector(64)
  assert (small.detector_rows, small.detector_cols) == (64, 64)
  assert small.pixel_pitch_mm == pytest.approx(4.8)
  np.testing.assert_allclose(small.field_of_view_mm, g.field_of_view_mm)
  assert small.source_to_detector_mm == g.source_to_detector_mm
  with pytest.raises(ValueError, match='with_detector'):
    g.with_detector(0)


def test_project_points_by_similar_triangles():
  g = geometry_lib.ConeBeamGeometry()
  # At 0 deg the source is at (0, -750, 0) and the beam runs along +y: a point at depth
  # 750 + y is magnified by 1200 / (750 + y); x runs along the columns, z up the rows.
  x, y, z = 30.0, 150.0, -45.0
  m = 1200.0 / (750.0 + y)
  np.testing.assert_allclose(g.project_points((x, y, z), 0.0),
                             (127.5 - z * m / 1.2, 127.5 + x * m / 1.2))
  # At 90 deg the source sits at (750, 0, 0) and the columns run along +y.
  m = 1200.0 / (750.0 - x)
  np.testing.assert_allclose(g.project_points((x, y, z), 90.0),
                             (127.5 - z * m / 1.2, 127.5 + y * m / 1.2))
  # The isocentre is at the detector's centre in every view.
  for angle in (0.0, 37.0, 180.0, 301.0):
    np.testing.assert_allclose(g.project_points((0, 0, 0), angle), (127.5, 127.5),
                               atol=1e-9)
  assert math.isclose(g.project_points((0, 0, 10.0), 0.0)[0], 127.5 - 16 / 1.2)


@pytest.mark.parametrize('field, value, message', [
    ('source_to_detector_mm', -1.0, 'source_to_detector_mm'),
    ('source_to_isocentre_mm', float('nan'), 'source_to_isocentre_mm'),
    ('source_to_isocentre_mm', 1300.0, 'source_to_isocentre_mm'),
    ('detector_rows', 0, 'detector_rows'),
    ('detector_cols', 2.5, 'detector_cols'),
    ('pixel_pitch_mm', 0.0, 'pixel_pitch_mm'),
    ('pixel_pitch_mm', 20.0, 'half-width'),
    ('num_views', 0, 'num_views'),
    ('angle_step_deg', float('inf'), 'angle_step_deg'),
])
def test_rejects_bad_fields(field, value, message):
  with pytest.raises(ValueError, match=message):
    geometry_lib.ConeBeamGeometry(**{field: value})
