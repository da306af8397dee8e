"""How close a volume reconstructed from a leg's views is to the phantom they were made
from, on the reconstruction grid (benchmarks/multiview.py's volume keys).

Units: v = mu / c, the images' units (multiview.py), with the patient's true c: the
largest line integral over its views, what knee_drr divides the DRRs by (`true_scale`).
The phantom's attenuation is area-averaged onto the grid (`area_resample`), so a volume
equal to the phantom on the grid scores PSNR inf and bone Dice 1.
"""
import dataclasses
import re

import numpy as np

from score_sde_knee import metrics
from score_sde_knee import multiview
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom
from score_sde_knee.xray import projector


@dataclasses.dataclass(frozen=True)
class Reference:
  """A phantom patient on the reconstruction grid, in v = mu / c."""
  c: float             # the true normalisation constant (max line integral of the views)
  volume: np.ndarray   # (z, y, x) float32: the phantom's mu area-averaged, over c
  bone_v: float        # the bone threshold in v


def patient_seed(patient: str) -> int:
  """The phantom seed of a knee_drr phantom patient id ('phantom_0007' -> 7)."""
  m = re.fullmatch(r'phantom_(\d+)', patient)
  if not m:
    raise ValueError(f'patient {patient!r}: expected a phantom patient id phantom_<seed>')
  return int(m.group(1))


def true_scale(hu: np.ndarray, spacing_mm, detector: int, num_views: int) -> float:
  """c: the largest line integral of mu over the data set's views of the volume."""
  geometry = geometry_lib.ConeBeamGeometry().with_detector(int(detector))
  angles = np.arange(num_views, dtype=np.float32) * (360.0 / num_views)
  p = projector.project(drr.hu_to_mu(hu), spacing_mm, geometry, angles)
  return float(np.max(np.asarray(p)))


def _overlaps(n_in: int, h_in: float, n_out: int, h_out: float) -> np.ndarray:
  """(n_out, n_in): the length each input cell shares with each output cell over h_out,
  both grids centred on 0."""
  e_in = (np.arange(n_in + 1) - n_in / 2) * h_in
  e_out = (np.arange(n_out + 1) - n_out / 2) * h_out
  lo = np.maximum(e_out[:-1, None], e_in[None, :-1])
  hi = np.minimum(e_out[1:, None], e_in[None, 1:])
  return np.clip(hi - lo, 0.0, None) / h_out


def area_resample(volume: np.ndarray, spacing_in, shape_out, spacing_out) -> np.ndarray:
  """The mean of a piecewise-constant (z, y, x) volume over each voxel of another grid
  centred on the same point; the part of a voxel outside `volume` counts as 0 (air)."""
  v = np.asarray(volume, np.float64)
  for axis in range(3):
    w = _overlaps(v.shape[axis], spacing_in[axis], shape_out[axis], spacing_out[axis])
    v = np.moveaxis(np.tensordot(w, v, axes=([1], [axis])), 0, axis)
  return v.astype(np.float32)


def reference(patient: str, data_config, revision: int,
              consistency: multiview.Consistency) -> Reference:
  """The patient's phantom, as the builder made it, on the reconstruction grid."""
  p = phantom.make_phantom(patient_seed(patient), spacing_mm=data_config.spacing_mm,
                           revision=revision)
  c = true_scale(p.hu, p.spacing_mm, data_config.detector, data_config.num_views)
  mu = area_resample(drr.hu_to_mu(p.hu), p.spacing_mm, consistency.volume_shape,
                     consistency.spacing_mm)
  bone = float(drr.hu_to_mu(np.float32(data_config.bone_threshold_hu)))
  return Reference(c, (mu / c).astype(np.float32), bone / c)


def sharpness_margin(n_z: int) -> int:
  return n_z // 16


def gradient_energy(volume: np.ndarray, spacing_mm, margin: int = 0) -> float:
  """Sum over axes of the mean squared forward difference per mm, without `margin` slices
  at each end in z."""
  v = np.asarray(volume, np.float64)
  v = v[margin:v.shape[0] - margin]
  return float(sum(np.mean(np.square(np.diff(v, axis=a) / h))
                   for a, h in enumerate(spacing_mm)))


def volume_sharpness(volume, truth_volume, spacing_mm, margin: int = 0) -> float:
  """The volume's gradient energy over the truth's (NaN if the truth's is 0)."""
  truth = gradient_energy(truth_volume, spacing_mm, margin)
  return gradient_energy(volume, spacing_mm, margin) / truth if truth > 0 else float('nan')


def bone_dice_3d(volume: np.ndarray, ref: Reference) -> float:
  return float(metrics.dice((np.asarray(volume) >= ref.bone_v)[None],
                            (ref.volume >= ref.bone_v)[None])[0])


def volume_psnr(volume: np.ndarray, ref: Reference) -> float:
  return float(metrics.psnr(np.asarray(volume)[None], ref.volume[None],
                            data_range=float(ref.volume.max()))[0])
