"""From a CT volume in HU to the paper's training triple: DRR, contour, contour_bone.

design.md "Attenuation, DRR and masks": mu = mu_water (1 + max(HU, -1000)/1000); a DRR pixel is the
line integral of mu (no exp()), all views of one volume divided by their common maximum and
clipped to [0, 1]; contour = 0.5 [DRR > 0.1]; bone = the projection of the thresholded CT is
> 0; contour_bone = contour + 0.5 bone, values exactly {0, 0.5, 1}.
"""
import dataclasses

import numpy as np

from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector

MU_WATER_PER_MM = 0.0193  # ~70 keV effective energy.
CONTOUR_THRESHOLD = 0.1
BONE_THRESHOLD_HU = 200.0
# A bone projection below this many mm of bone is round-off from interpolation, not bone.
BONE_EPS_MM = 1e-3


@dataclasses.dataclass(frozen=True)
class Scan:
  """One volume's views, each array (V, H, W) float32; row 0 is the top (largest z)."""
  image: np.ndarray         # DRR in [0, 1].
  contour: np.ndarray       # {0, 0.5}.
  contour_bone: np.ndarray  # {0, 0.5, 1}.
  angles_deg: np.ndarray    # (V,)
  scale: float              # The line integral that maps to 1.0 (dimensionless).


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
  """Linear attenuation (1/mm) from HU. Padding below -1000 HU (-1024, -3024) is air."""
  hu = np.maximum(np.asarray(hu, np.float32), -1000.0)
  return (mu_water * (1.0 + hu / 1000.0)).astype(np.float32)


def normalise(line_integrals: np.ndarray) -> tuple[np.ndarray, float]:
  """Divides all views by their common maximum so a patient's views stay comparable."""
  scale = float(np.max(line_integrals))
  if not np.isfinite(scale) or scale <= 0:
    raise ValueError(
        f'DRR line integrals have maximum {scale}: expected a positive finite value '
        '(is the volume empty, or outside the field of view?)')
  return np.clip(line_integrals / scale, 0.0, 1.0).astype(np.float32), scale


def contour_mask(image: np.ndarray, threshold: float = CONTOUR_THRESHOLD) -> np.ndarray:
  """0.5 inside the leg's silhouette (DRR > threshold), 0 outside."""
  return np.where(image > threshold, 0.5, 0.0).astype(np.float32)


def contour_bone_mask(contour: np.ndarray, bone_projection: np.ndarray,
                      eps: float = BONE_EPS_MM) -> np.ndarray:
  """contour + 0.5 where bone projects. Bone outside the silhouette cannot happen in a
  real leg; it is dropped so the values stay exactly {0, 0.5, 1}."""
  bone = (bone_projection > eps) & (contour > 0)
  return (contour + np.where(bone, 0.5, 0.0)).astype(np.float32)


def scan_volume(hu: np.ndarray, spacing_mm, geometry: geometry_lib.ConeBeamGeometry,
                angles_deg=None, *, bone_threshold_hu: float = BONE_THRESHOLD_HU,
                mu_water: float = MU_WATER_PER_MM) -> Scan:
  """DRRs and both segmentations of a HU volume (axes (z, y, x), spacing in mm)."""
  hu = np.asarray(hu, np.float32)
  if hu.ndim != 3:
    raise ValueError(f'CT volume must be 3-D (z, y, x), got shape {hu.shape}')
  if angles_deg is None:
    angles_deg = geometry.angles_deg()
  angles_deg = np.asarray(angles_deg, np.float32)
  p = np.asarray(projector.project(hu_to_mu(hu, mu_water), spacing_mm, geometry, angles_deg))
  image, scale = normalise(p)
  bone = (hu >= bone_threshold_hu).astype(np.float32)
  p_bone = np.asarray(projector.project(bone, spacing_mm, geometry, angles_deg))
  contour = contour_mask(image)
  return Scan(image=image, contour=contour,
              contour_bone=contour_bone_mask(contour, p_bone),
              angles_deg=angles_deg, scale=scale)
