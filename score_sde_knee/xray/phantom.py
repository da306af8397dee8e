"""Procedural knee CT phantom: one patient per seed (docs/design.md, "The procedural phantom").

Frame (mm): z along the limb, 0 at the top of the tibial plateau, +z toward the hip; x
medio-lateral (+x lateral); y antero-posterior (+y anterior). Arrays are (z, y, x) like
SimpleITK's GetArrayFromImage; voxel i along an axis of n voxels of size h sits at
(i + 0.5) h - n h / 2 in the world, so the grid is centred on 0 and a 2 mm grid's voxels are
exactly 2x2x2 blocks of the 1 mm grid's. The leg frame is the world shifted by
`params['offset_mm']`.

Revision 3 (knee_drr 2.0.0) takes its bones from real surfaces (phantom_mesh.py) and keeps
the rest of this module: soft tissue, field, frame, offset and seeding. In revisions 1 and 2
the anatomy is a union of analytic primitives (ellipsoids, elliptic frustums, half-space
clips; shapes.py) painted in order, each blended by a partial-volume occupancy: clip(0.5 - d / h,
0, 1) with d a first-order signed distance F / |grad F|. Bones are rigid: the tibia (with
fibula) turns by -flexion/2 about the ML axis through the plateau centre, the femur (with
patella) by +flexion/2 about the ML axis through the condyles' centre
(`params['femur_pivot']`), and likewise by +/- varus/2 about the AP axis (+varus_valgus_deg
= varus: hip and ankle medial of the knee). The condyles are placed in the tibia's frame, so
the sampled joint gaps hold whatever the alignment. Soft tissue bends smoothly between the
two. The fibular head sits at (+40, -13, -29) mm (lateral, posterior, below the plateau;
+13 in an LPS-like frame, where +y is posterior). Texture is smooth lattice noise fixed
in world millimetres, so it does not depend on the voxel size.
"""
import argparse
import dataclasses
import json
import math

import numpy as np

from score_sde_knee.xray import phantom_mesh
from score_sde_knee.xray import shapes


DEFAULT_SHAPE_MM = (240.0, 232.0, 232.0)  # (z, y, x) field; the leg and skin fit inside.
_SHELL_MM = 1.5      # Cortical shell of epiphyses, plateau and patella.
_FAR = 400.0         # Stand-in for "beyond the field" along shafts.
_NOISE_SOFT_MM = 12.0
_NOISE_BONE_MM = 2.5
# Revisions of the anatomy; each knee_drr version names the one it was built with.
#   1: knee_drr 1.0.0. Each shaft's marrow canal began 5 mm (x `scale`) beyond the
#      metaphysis, so a disc of solid cortex that thick closed it: a bright transverse band
#      across every shaft in the DRRs, which no real bone has.
#   2: knee_drr 1.1.0. The canal reaches 5 mm into the metaphysis: trabecular bone turns
#      into marrow with no cortical plug between them.
#   3: knee_drr 2.0.0. Real human bone surfaces (phantom_mesh.py) in revision 2's soft
#      tissue, field, frame, seeding and partial-volume edges. The default, as knee_drr
#      2.0.0 is.
REVISION = 3
REVISIONS = (1, 2, 3)


@dataclasses.dataclass(frozen=True)
class Phantom:
  """A phantom patient.

  Attributes:
    hu: float32 (z, y, x) Hounsfield units, air = -1000.
    spacing_mm: voxel size (sz, sy, sx) in mm.
    params: JSON-serialisable sampled parameters; lengths in mm already multiplied by
      `scale`, angles in degrees, HU values in HU, `offset_mm` in (z, y, x) order.
  """
  hu: np.ndarray
  spacing_mm: tuple[float, float, float]
  params: dict


def _rot(flex_deg: float, varus_deg: float) -> np.ndarray:
  """R_y(varus) @ R_x(flex) acting on (x, y, z) vectors; +flex tilts +z toward -y."""
  a, b = math.radians(flex_deg), math.radians(varus_deg)
  rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
  ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
  return ry @ rx


def sample_params(seed: int) -> dict:
  """One patient: docs/design.md's phantom table, `(male, female)` ranges, uniform unless noted."""
  rng = np.random.default_rng(seed)
  male = bool(rng.random() < 0.5)

  def u(lo, hi):
    return float(rng.uniform(lo, hi))

  def mf(m_range, f_range):
    return u(*(m_range if male else f_range))

  # Truncated at 2 sigma so the leg always fits the default field.
  s = float(np.clip(rng.normal(1.0, 0.05), 0.9, 1.1))
  p = dict(seed=int(seed), sex='male' if male else 'female', scale=s,
           flexion_deg=u(0.0, 10.0), varus_valgus_deg=u(-5.0, 5.0),
           offset_mm=[float(v) for v in rng.uniform(-10.0, 10.0, 3)])
  sizes = dict(
      thigh_a=u(65, 90), thigh_b=u(60, 80), knee_a=u(55, 70), knee_b=u(50, 65),
      calf_a=mf((52, 62), (50, 60)), skin=u(1.5, 2.5), fat=mf((3, 12), (8, 30)),
      femur_d=mf((26, 30), (25, 28)), femur_canal_d=u(10, 14),
      condyle_ml=mf((33, 39), (29, 34)), condyle_ap=mf((58, 68), (51, 60)),
      notch=u(15, 23),
      gap_medial=float(np.clip(rng.normal(5.7, 0.8) if male else rng.normal(4.8, 0.7), 3, 9)),
      plateau_ml=mf((75, 83), (66, 72)), plateau_ap=mf((47, 54), (42, 47)),
      tibia_ml=u(24, 30), tibia_ap=u(20, 26), tibia_cortex=u(4, 7),
      fibula_head_d=u(20, 28), fibula_d=u(10, 15),
      patella_h=mf((36, 42), (33, 37)), patella_w=mf((43, 48), (39, 43)),
      patella_t=mf((21, 24), (19, 22)))
  sizes['calf_b'] = sizes['calf_a'] * u(0.88, 1.0)
  sizes['gap_lateral'] = sizes['gap_medial'] * u(1.0, 1.25)
  p.update({k: v * s for k, v in sizes.items()})
  p['plateau_slope_deg'] = u(5.0, 10.0)
  p['shell'] = _SHELL_MM
  # HU: a per-patient base, kept inside the table's range once texture is added.
  p.update(hu_skin=u(25, 55), hu_fat=u(-98, -82), hu_muscle=u(45, 55), hu_joint=u(65, 95),
           hu_femur_cortex=u(1380, 1720), hu_tibia_cortex=u(1380, 1720),
           hu_fibula_cortex=u(1280, 1620), hu_marrow=u(-85, -45), hu_shell=u(850, 1150),
           hu_trabecular=u(240, 320), hu_patella_inside=u(260, 330))
  p['noise_seed'] = int(rng.integers(0, 2**31 - 1))
  return p


def _soft_tissue(p, g, noise) -> np.ndarray:
  """Skin, fat and muscle of an elliptic envelope whose axis bends at the knee."""
  s, h = p['scale'], g.h
  oz, oy, ox = p['offset_mm']
  z = g.z - oz
  # Knots along z: ankle side, calf, knee, thigh. The calf's bulk is posterior to the
  # tibia (the shin is subcutaneous) and the knee must cover condyles and patella.
  tib_front = 4 * s + p['tibia_ap'] / 2
  # Clamped so the calf stays inside the field whatever the offset and flexion.
  calf_cy = max(-20 * s, min(0.0, tib_front + p['fat'] + p['skin'] + 6 - p['calf_b']))
  knee_a = max(p['knee_a'], p['notch'] / 2 + p['condyle_ml'] + 8)
  knee_b = max(p['knee_b'], p['_patella_front'] + 6 - 4 * s)
  zk = np.array([-200 * s, -100 * s, 10 * s, 120 * s])
  ak = np.array([0.8 * p['calf_a'], p['calf_a'], knee_a, max(p['thigh_a'], knee_a)])
  bk = np.array([0.8 * p['calf_b'], p['calf_b'], knee_b, max(p['thigh_b'], knee_b)])
  cyk = np.array([calf_cy, calf_cy, 4 * s, 0.0])
  cxk = np.array([4 * s, 6 * s, 0.0, 0.0])
  a, b, cy, cx = (np.interp(z, zk, k).astype(np.float32) for k in (ak, bk, cyk, cxk))
  # Rigid femur/tibia halves joined by a smooth bend between -40 and +40 mm.
  w = np.clip((z + 40 * s) / (80 * s), 0, 1)
  w = w * w * (3 - 2 * w)
  fl = np.radians(p['flexion_deg'] * (w - 0.5))
  vv = np.radians(-p['varus_valgus_deg'] * (w - 0.5))
  xs = np.cos(vv)[:, None] * (g.x[None, :] - ox) - (np.sin(vv) * z)[:, None] - cx[:, None]
  ys = np.cos(fl)[:, None] * (g.y[None, :] - oy) + (np.sin(fl) * z)[:, None] - cy[:, None]
  hu = np.full((g.z.size, g.y.size, g.x.size), -1000.0, np.float32)
  values = (p['hu_skin'], p['hu_fat'], None)
  fat = np.minimum(p['fat'], 0.45 * np.minimum(a, b))  # Leave some muscle in thin limbs.
  for depth, value in zip((0.0, p['skin'], p['skin'] + fat), values):
    aa, bb = (a - depth)[:, None], (b - depth)[:, None]
    u2, v2 = (xs / aa) ** 2, (ys / bb) ** 2
    g2x, g2y = (xs / aa**2) ** 2, (ys / bb**2) ** 2
    f = u2[:, None, :] + v2[:, :, None]
    f -= 1
    grad = g2x[:, None, :] + g2y[:, :, None]
    np.sqrt(grad, out=grad)
    grad *= 2 * h
    grad += 1e-6
    f /= grad
    np.subtract(0.5, f, out=f)
    occ = np.clip(f, 0, 1, out=f)
    if value is None:
      value = noise(g.z, g.y, g.x)
      value *= 3.0
      np.clip(value, -4.8, 4.8, out=value)
      value += p['hu_muscle']
    value -= hu
    value *= occ
    hu += value
  return hu


def _bones(p, g, hu, noise, revision: int) -> None:
  """Paints joint space, femur, patella, tibia and fibula (outer shells before insides)."""
  s, sh = p['scale'], p['shell']
  # How far each marrow canal reaches past its metaphysis's base (REVISIONS): revision 1's
  # stopped 5 mm short, leaving solid cortex between the two.
  canal_into_metaphysis = 5 * s if revision >= 2 else -5 * s
  off = np.array(p['offset_mm'][::-1])  # (x, y, z)
  rf = _rot(p['flexion_deg'] / 2, -p['varus_valgus_deg'] / 2)
  rt = _rot(-p['flexion_deg'] / 2, p['varus_valgus_deg'] / 2)
  # The femur turns about the condyles' centre, the way it rolls on the plateau.
  pivot = np.array(p['femur_pivot'])
  fem = (rf, off + pivot - rf @ pivot)
  tib = (rt, off)
  trab = dict(noise=noise, amp=45.0, lo=150.0, hi=400.0)
  cort = dict(noise=noise, amp=25.0, lo=1200.0, hi=1800.0)
  shell = dict(noise=noise, amp=20.0, lo=800.0, hi=1200.0)

  # Tibia: plateau slab (top tilted by the posterior slope), metaphyseal cone, shaft.
  pa, pb = p['plateau_ml'] / 2, p['plateau_ap'] / 2
  pcy = -0.05 * p['plateau_ap']
  slope = math.tan(math.radians(p['plateau_slope_deg']))
  top = ((np.array([0, -slope, 1]) / math.hypot(1, slope)).tolist(), 0.0)
  sa, sb, scy = p['tibia_ml'] / 2, p['tibia_ap'] / 2, 4 * s
  z_cone, z_shaft = -18 * s, -75 * s
  joint = shapes.Prim(tib, (0, pcy, 0), (pa - 1, pb - 1, 1), z0=-3.0,
                      z1=p['gap_lateral'] + 6, c1=(0, pcy), s1=(pa - 1, pb - 1))
  shapes.paint(hu, g, joint, p['hu_joint'])
  plateau = shapes.Prim(tib, (0, pcy, 0), (pa, pb, 1), z0=z_cone - 2, z1=10 * s, c1=(0, pcy),
                        s1=(pa, pb), clips=(top,))
  cone = shapes.Prim(tib, (0, scy, 0), (sa, sb, 1), z0=z_shaft, z1=z_cone, c1=(0, pcy),
                     s1=(0.95 * pa, 0.95 * pb))
  tshaft = shapes.Prim(tib, (0, scy, 0), (sa, sb, 1), z0=-_FAR, z1=z_shaft + 10 * s, c1=(0, scy),
                       s1=(sa, sb))
  shapes.paint(hu, g, plateau, p['hu_shell'], **shell)
  shapes.paint(hu, g, cone, p['hu_shell'], **shell)
  shapes.paint(hu, g, tshaft, p['hu_tibia_cortex'], **cort)
  shapes.paint(hu, g, plateau, p['hu_trabecular'], shrink=sh, **trab)
  shapes.paint(hu, g, cone, p['hu_trabecular'], shrink=sh, **trab)
  canal = dataclasses.replace(tshaft, semi=(sa - p['tibia_cortex'], sb - p['tibia_cortex'], 1),
                              s1=(sa - p['tibia_cortex'], sb - p['tibia_cortex']),
                              z1=z_shaft + canal_into_metaphysis)
  shapes.paint(hu, g, canal, p['hu_marrow'])

  # Fibula: head ellipsoid posterolateral below the plateau, shaft down to the ankle.
  fr = p['fibula_head_d'] / 2
  fc = (40 * s, -13 * s, -29 * s)
  head = shapes.Prim(tib, fc, (fr, 0.9 * fr, 1.15 * fr))
  fshaft = shapes.Prim(tib, (34 * s, -17 * s, 0), (p['fibula_d'] / 2,) * 2 + (1,), z0=-_FAR,
                       z1=fc[2], c1=fc[:2], s1=(p['fibula_d'] / 2,) * 2)
  shapes.paint(hu, g, head, p['hu_fibula_cortex'], **cort)
  shapes.paint(hu, g, fshaft, p['hu_fibula_cortex'], **cort)
  shapes.paint(hu, g, head, p['hu_trabecular'], shrink=sh, **trab)
  shapes.paint(hu, g, dataclasses.replace(fshaft, z1=fc[2] - fr), p['hu_marrow'],
               shrink=0.3 * p['fibula_d'])

  # Femur: two condyles, an epiphysis notched from below, metaphysis cone, shaft.
  cml, cap, notch = p['condyle_ml'], p['condyle_ap'], p['notch']
  cc = 0.45 * cap
  gm, gl = p['gap_medial'], p['gap_lateral']
  xc = notch / 2 + cml / 2
  # Condyles placed in the tibia's frame so the sampled gaps hold whatever the alignment.
  cond_m, cond_l = (
      shapes.Prim(fem, tuple((pivot + rf.T @ (rt @ np.array(c) - pivot)).tolist()),
                  (cml / 2, cap / 2, cc))
      for c in ((-xc, -0.1 * cap, gm + cc), (xc, -0.1 * cap, gl + cc)))
  ez = (gm + gl) / 2 + cc + 8 * s
  ea, eb, ec = notch / 2 + cml - 2 * s, 0.42 * cap, 0.9 * cc
  tn = math.tan(math.radians(40))
  notch_roof = ((np.array([0, -tn, -1]) / math.hypot(1, tn)).tolist(),
                -((gm + gl) / 2 + 0.75 * cc) / math.hypot(1, tn))
  epi = shapes.Prim(fem, (0, 0, ez), (ea, eb, ec), clips=(notch_roof,))
  fr_out, fr_in = p['femur_d'] / 2, p['femur_canal_d'] / 2
  zm0, zm1 = ez, ez + 40 * s
  meta = shapes.Prim(fem, (0, -2 * s, 0), (0.92 * ea, 0.9 * eb, 1), z0=zm0, z1=zm1, c1=(0, 0),
                     s1=(fr_out, fr_out))
  fshaft_f = shapes.Prim(fem, (0, 0, 0), (fr_out, fr_out, 1), z0=zm1 - 10 * s, z1=_FAR,
                         c1=(0, 0), s1=(fr_out, fr_out))
  fcanal = dataclasses.replace(fshaft_f, semi=(fr_in, fr_in, 1), s1=(fr_in, fr_in),
                               z0=zm1 - canal_into_metaphysis)
  for prim in (cond_m, cond_l, epi, meta):
    shapes.paint(hu, g, prim, p['hu_shell'], **shell)
  shapes.paint(hu, g, fshaft_f, p['hu_femur_cortex'], **cort)
  for prim in (cond_m, cond_l, epi, meta):
    shapes.paint(hu, g, prim, p['hu_trabecular'], shrink=sh, **trab)
  shapes.paint(hu, g, fcanal, p['hu_marrow'])

  # Patella: anterior to the trochlea, about 40 mm above the joint line.
  patella = shapes.Prim(fem, (3 * s, p['_patella_y'], p['_patella_z']),
                        (p['patella_w'] / 2, p['patella_t'] / 2, p['patella_h'] / 2))
  shapes.paint(hu, g, patella, p['hu_shell'], **shell)
  shapes.paint(hu, g, patella, p['hu_patella_inside'], shrink=sh, noise=noise, amp=25.0, lo=200.0,
               hi=400.0)


def _derived(p: dict) -> dict:
  """Positions computed from the sizes (also recorded in params)."""
  s, cap, cc = p['scale'], p['condyle_ap'], 0.45 * p['condyle_ap']
  ez = (p['gap_medial'] + p['gap_lateral']) / 2 + cc + 8 * s
  pz = p['gap_medial'] + 40 * s
  eb, ec = 0.42 * cap, 0.9 * cc
  front = eb * math.sqrt(max(0.0, 1 - ((pz - ez) / ec) ** 2))
  py = max(front, 0.3 * eb) + 2 * s + p['patella_t'] / 2
  return dict(_patella_z=pz, _patella_y=py, _patella_front=py + p['patella_t'] / 2,
              femur_pivot=[0.0, -0.1 * cap, (p['gap_medial'] + p['gap_lateral']) / 2 + cc])


def _mesh_patient(p: dict, seed: int) -> dict:
  """Revision 3: revision 2's patient with the mesh bones' draws, and the soft tissue's
  envelope widened where it must cover those bones (skin and half the fat over them)."""
  p = dict(p, **phantom_mesh.sample_params(seed, p))
  bones = phantom_mesh.place_bones(p)
  v = np.concatenate([t.reshape(-1, 3) for t in bones.values()])
  cover = p['skin'] + 0.5 * p['fat']
  knee = v[np.abs(v[:, 2]) < 40 * p['scale']]
  p['notch'] = 0.0
  p['condyle_ml'] = float(np.abs(knee[:, 0]).max()) + cover - 8
  p['_patella_front'] = float(bones['patella'][..., 1].max()) + cover + 4 * p['scale'] - 6
  shin = v[v[:, 2] < -60 * p['scale']]
  p['tibia_ap'] = 2 * (float(shin[:, 1].max()) + cover - 4 * p['scale'])
  p['_bones'] = bones
  return p


def make_phantom(seed: int, *, spacing_mm: float = 1.0,
                 shape_mm: tuple[float, float, float] = DEFAULT_SHAPE_MM,
                 revision: int = REVISION) -> Phantom:
  """Builds patient `seed` on an isotropic grid of `spacing_mm` covering `shape_mm` (z, y, x).

  Deterministic: the same arguments give identical bytes. `revision` picks the anatomy
  (REVISIONS; older ones rebuild older knee_drr versions byte for byte).
  """
  if revision not in REVISIONS:
    raise ValueError(f'revision must be one of {REVISIONS}, got {revision!r}')
  if not spacing_mm > 0:
    raise ValueError(f'spacing_mm must be > 0, got {spacing_mm!r}')
  if len(shape_mm) != 3 or min(shape_mm) <= 0:
    raise ValueError(f'shape_mm must be three positive lengths (z, y, x), got {shape_mm!r}')
  p = sample_params(seed)
  p.update(_derived(p))
  g = shapes.make_grid(shape_mm, float(spacing_mm))
  rng = np.random.default_rng(p['noise_seed'])
  soft = shapes.Noise(rng, shape_mm, _NOISE_SOFT_MM)
  bone = shapes.Noise(rng, shape_mm, _NOISE_BONE_MM)
  if revision == 3:
    p = _mesh_patient(p, seed)
    hu = _soft_tissue(p, g, soft)
    # Trabecular texture at about the scale of trabecular spacing, then a coarser swell.
    fine = shapes.Noise(rng, shape_mm, 1.2)
    phantom_mesh.paint_bones(p, g, hu, p.pop('_bones'), fine, bone)
  else:
    hu = _soft_tissue(p, g, soft)
    _bones(p, g, hu, bone, revision)
  params = {k.lstrip('_'): v for k, v in p.items()}
  params['revision'] = revision
  h = float(spacing_mm)
  return Phantom(hu=hu, spacing_mm=(h, h, h), params=params)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--seed', type=int, required=True)
  ap.add_argument('--out', help='NIfTI path (.nii.gz / .nii; any SimpleITK extension)')
  ap.add_argument('--spacing', type=float, default=1.0, help='voxel size in mm')
  ap.add_argument('--png', help='quick-look PNG path')
  ap.add_argument('--revision', type=int, default=REVISION, choices=REVISIONS)
  ap.add_argument('--compare_png', help='PNG of AP and lateral DRRs of this seed in '
                  'revision 2 (knee_drr 1.1.0) and 3 (knee_drr 2.0.0), side by side')
  args = ap.parse_args(argv)
  ph = make_phantom(args.seed, spacing_mm=args.spacing, revision=args.revision)
  print(json.dumps(ph.params, indent=1, sort_keys=True))
  if args.out:
    from score_sde_knee.xray import ct_io  # pylint: disable=g-import-not-at-top
    ct_io.write_ct(args.out, ph.hu, ph.spacing_mm)
  if args.png:
    from score_sde_knee.xray import preview  # pylint: disable=g-import-not-at-top
    preview.save_phantom_png(args.png, ph)
  if args.compare_png:
    from score_sde_knee.xray import preview  # pylint: disable=g-import-not-at-top
    preview.save_drr_comparison(args.compare_png, {
        f'knee_drr {v} (phantom revision {r})': make_phantom(
            args.seed, spacing_mm=args.spacing, revision=r)
        for v, r in (('1.1.0', 2), ('2.0.0', 3))})


if __name__ == '__main__':
  main()
