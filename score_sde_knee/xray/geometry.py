"""Circular cone-beam geometry of the DRRs (docs/geometry.md), in mm and degrees.

World frame: x, y, z in mm with the isocentre at the origin; z is the limb's long axis
(cranio-caudal, femur at +z). The source orbits in the plane z = 0:

    source   S(theta) = R (sin theta, -cos theta, 0),       R = source_to_isocentre_mm
    beam     e_d      = (-sin theta, cos theta, 0)          (source -> detector centre)
    columns  e_u      = ( cos theta, sin theta, 0)          (column index grows along e_u)
    rows     -e_z                                           (row 0 is the TOP, largest z)

theta = 0 puts the source on the -y side looking along +y; theta grows counter-clockwise
seen from +z (right-handed about +z). Detector pixel (r, c) sits at
S + D e_d + u_c e_u + v_r e_z with D = source_to_detector_mm,
u_c = (c - (cols - 1) / 2) pitch and v_r = ((rows - 1) / 2 - r) pitch.

    python -m score_sde_knee.xray.geometry --plot docs/geometry.png
"""
import argparse
import dataclasses
import math
import numbers

import numpy as np


@dataclasses.dataclass(frozen=True)
class ConeBeamGeometry:
  """Source, detector and orbit. Pixel pitch is measured on the detector (not at the
  isocentre); the field of view at the isocentre is cols * pitch / magnification."""
  source_to_detector_mm: float = 1200.0
  source_to_isocentre_mm: float = 750.0
  detector_rows: int = 256
  detector_cols: int = 256
  pixel_pitch_mm: float = 1.2
  num_views: int = 60
  first_angle_deg: float = 0.0
  angle_step_deg: float = 6.0

  def __post_init__(self):
    for name in ('source_to_detector_mm', 'source_to_isocentre_mm', 'pixel_pitch_mm'):
      value = getattr(self, name)
      if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f'ConeBeamGeometry.{name} must be a positive finite number of mm, '
                         f'got {value!r}')
    if self.source_to_isocentre_mm >= self.source_to_detector_mm:
      raise ValueError(
          'ConeBeamGeometry.source_to_isocentre_mm must be smaller than '
          f'source_to_detector_mm (the isocentre lies between source and detector), got '
          f'{self.source_to_isocentre_mm} >= {self.source_to_detector_mm}')
    for name in ('detector_rows', 'detector_cols', 'num_views'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f'ConeBeamGeometry.{name} must be an integer >= 1, got {value!r}')
    for name in ('first_angle_deg', 'angle_step_deg'):
      value = getattr(self, name)
      if not (_is_real(value) and math.isfinite(value)):
        raise ValueError(f'ConeBeamGeometry.{name} must be a finite number of degrees, '
                         f'got {value!r}')
    # The projector steps through the volume along the array axis closest to the beam;
    # that needs every ray within 45 deg of the central ray in the orbit plane.
    half_width = 0.5 * self.detector_cols * self.pixel_pitch_mm
    if half_width >= self.source_to_detector_mm:
      raise ValueError(
          f'ConeBeamGeometry detector half-width {half_width} mm (detector_cols * '
          f'pixel_pitch_mm / 2) must be below source_to_detector_mm '
          f'{self.source_to_detector_mm} (fan half-angle < 45 deg)')

  @property
  def magnification(self) -> float:
    """Detector size over size at the isocentre (1.6 by default)."""
    return self.source_to_detector_mm / self.source_to_isocentre_mm

  @property
  def field_of_view_mm(self) -> tuple[float, float]:
    """(height, width) of the detector's footprint at the isocentre, in mm."""
    m = self.magnification
    return (self.detector_rows * self.pixel_pitch_mm / m,
            self.detector_cols * self.pixel_pitch_mm / m)

  def with_detector(self, n: int) -> 'ConeBeamGeometry':
    """The same geometry with an n x n detector of the same width (larger pixels)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
      raise ValueError(f'with_detector(n) needs an integer n >= 1, got {n!r}')
    pitch = self.pixel_pitch_mm * self.detector_cols / int(n)
    return dataclasses.replace(self, detector_rows=int(n), detector_cols=int(n),
                               pixel_pitch_mm=pitch)

  def angles_deg(self) -> np.ndarray:
    """The orbit's view angles (num_views,) float64, default 0, 6, ..., 354 degrees."""
    return self.first_angle_deg + self.angle_step_deg * np.arange(self.num_views,
                                                                  dtype=np.float64)

  def detector_coords_mm(self) -> tuple[np.ndarray, np.ndarray]:
    """(v (rows,), u (cols,)) pixel-centre offsets on the detector in mm; v is along +z,
    so v decreases with the row index (row 0 on top), u grows with the column index."""
    p = self.pixel_pitch_mm
    v = ((self.detector_rows - 1) / 2 - np.arange(self.detector_rows)) * p
    u = (np.arange(self.detector_cols) - (self.detector_cols - 1) / 2) * p
    return v, u

  def project_points(self, points_xyz_mm, angle_deg: float) -> np.ndarray:
    """Detector (row, col) of world points (..., 3) ordered (x, y, z), as floats."""
    pts = np.asarray(points_xyz_mm, np.float64)
    t = math.radians(angle_deg)
    src = self.source_to_isocentre_mm * np.array([math.sin(t), -math.cos(t), 0.0])
    e_d = np.array([-math.sin(t), math.cos(t), 0.0])
    e_u = np.array([math.cos(t), math.sin(t), 0.0])
    rel = pts - src
    depth = rel @ e_d
    u = self.source_to_detector_mm * (rel @ e_u) / depth
    v = self.source_to_detector_mm * rel[..., 2] / depth
    col = u / self.pixel_pitch_mm + (self.detector_cols - 1) / 2
    row = (self.detector_rows - 1) / 2 - v / self.pixel_pitch_mm
    return np.stack([row, col], axis=-1)


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def plot(path: str, geometry: ConeBeamGeometry = ConeBeamGeometry(),
         volume_mm: tuple[float, float, float] = (256.0, 256.0, 256.0)) -> None:
  """Draws the orbit seen from +z and the cone seen from the side (theta = 0) to `path`.

  volume_mm: (z, y, x) extent of an example volume centred at the isocentre.
  """
  import matplotlib  # Only the picture needs it.
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  from score_sde_knee.utils import files

  g = geometry
  r_src, sdd = g.source_to_isocentre_mm, g.source_to_detector_mm
  half_u = 0.5 * g.detector_cols * g.pixel_pitch_mm
  half_v = 0.5 * g.detector_rows * g.pixel_pitch_mm
  vz, vy, vx = (0.5 * s for s in volume_mm)
  fig, (top, side) = plt.subplots(1, 2, figsize=(13, 6),
                                  gridspec_kw=dict(width_ratios=(1, 1.3)))

  # Top view (looking down -z): orbit, source and detector at theta = 0 and 90 deg.
  circle = np.linspace(0, 2 * np.pi, 200)
  top.plot(r_src * np.cos(circle), r_src * np.sin(circle), ':', color='gray', lw=1)
  top.add_patch(plt.Rectangle((-vx, -vy), 2 * vx, 2 * vy, fill=False, color='tab:green'))
  for theta, alpha in ((0.0, 1.0), (90.0, 0.35)):
    t = math.radians(theta)
    src = r_src * np.array([math.sin(t), -math.cos(t)])
    e_d = np.array([-math.sin(t), math.cos(t)])
    e_u = np.array([math.cos(t), math.sin(t)])
    det_c = src + sdd * e_d
    ends = [det_c - half_u * e_u, det_c + half_u * e_u]
    top.plot(*zip(*ends), color='tab:blue', lw=4, alpha=alpha)
    for e in ends:
      top.plot(*zip(src, e), color='tab:orange', lw=0.8, alpha=alpha)
    top.plot(*src, 'o', color='tab:red', alpha=alpha)
    top.annotate(f'source {theta:g} deg', src, textcoords='offset points',
                 xytext=(8, -12) if theta == 0.0 else (-40, 12), alpha=alpha)
    top.annotate(f'detector {theta:g} deg', det_c, textcoords='offset points',
                 xytext=(-40, 12) if theta == 0.0 else (8, 8), alpha=alpha)
    if theta == 0.0:
      top.annotate('', det_c + 0.9 * half_u * e_u, det_c,
                   arrowprops=dict(arrowstyle='->', color='k'))
      top.annotate('column index', det_c + 0.9 * half_u * e_u, textcoords='offset points',
                   xytext=(6, -14))
  top.annotate('', (r_src * math.cos(-0.75), r_src * math.sin(-0.75)),
               (r_src * math.cos(-1.35), r_src * math.sin(-1.35)),
               arrowprops=dict(arrowstyle='->', color='gray', lw=1.5,
                               connectionstyle='arc3,rad=0.15'))
  top.text(r_src * math.cos(-1.0) * 1.08, r_src * math.sin(-1.0) * 1.08, 'theta',
           color='gray')
  top.text(0, 0, '+ isocentre', va='center')
  top.set(xlabel='x (mm)', ylabel='y (mm)', aspect='equal',
          title='Orbit seen from +z (theta counter-clockwise)')

  # Side view at theta = 0: beam axis horizontal, z up; row 0 is the top of the detector.
  top_src, det_x = -r_src, sdd - r_src
  side.add_patch(plt.Rectangle((-vy, -vz), 2 * vy, 2 * vz, fill=False, color='tab:green'))
  side.plot([det_x, det_x], [-half_v, half_v], color='tab:blue', lw=4)
  for v in (-half_v, half_v):
    side.plot([top_src, det_x], [0, v], color='tab:orange', lw=0.8)
  side.plot(top_src, 0, 'o', color='tab:red')
  side.annotate('row 0 (top, +z)', (det_x, half_v), textcoords='offset points',
                xytext=(-90, 8))
  side.annotate(f'row {g.detector_rows - 1}', (det_x, -half_v), textcoords='offset points',
                xytext=(-50, -14))
  side.text(0, vz - 22, 'femur (+z)', ha='center')
  side.text(0, -vz + 10, 'tibia (-z)', ha='center')
  side.text(0, 0, '+ isocentre', va='center')
  fov_h, fov_w = g.field_of_view_mm
  side.set(xlabel='y at theta = 0 (mm, along the beam)', ylabel='z (mm)', aspect='equal',
           title=f'Side view at theta = 0: source-detector {sdd:g} mm, source-isocentre '
                 f'{r_src:g} mm,\n{g.detector_rows} x {g.detector_cols} pixels of '
                 f'{g.pixel_pitch_mm:g} mm, field of view {fov_w:.0f} mm at the isocentre')
  side.set_ylim(-half_v - 60, half_v + 60)
  fig.tight_layout()
  with files.atomic_path(path, '.png') as tmp:
    fig.savefig(tmp, dpi=90)
  plt.close(fig)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--plot', required=True, help='PNG file to write.')
  args = parser.parse_args(argv)
  plot(args.plot)


if __name__ == '__main__':
  main()
