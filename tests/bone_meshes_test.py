"""bone_meshes: exact voxelising and projection of a closed mesh, refusals, the knee's
range and motion, and the joint spaces the placed bones keep."""
import numpy as np
import pytest
import trimesh

from score_sde_knee.xray import bone_meshes
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom
from score_sde_knee.xray import phantom_mesh
from score_sde_knee.xray import projector
from score_sde_knee.xray import shapes


def _exact_lengths(tri, src, pix):
  """Length of each ray src -> pix inside the closed surface: Moller-Trumbore hits in
  float64, sorted; inside between odd and even hits."""
  out = []
  a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
  e1, e2 = b - a, c - a
  for p in pix:
    d = p - src
    h = np.cross(d, e2)
    det = np.einsum('ij,ij->i', e1, h)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
    s = src - a
    u = np.einsum('ij,ij->i', s, h) * inv
    q = np.cross(s, e1)
    v = (q @ d) * inv
    t = np.einsum('ij,ij->i', e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & (t < 1)
    ts = np.sort(t[hit])
    assert ts.size % 2 == 0
    out.append(np.sum(ts[1::2] - ts[0::2]) * np.linalg.norm(d))
  return np.array(out)


def test_projected_voxelised_mesh_matches_exact_ray_lengths():
  # A lumpy closed surface the size of a femoral condyle block (not a sphere, so no
  # symmetry hides an error), 1 mm voxels.
  mesh = trimesh.creation.icosphere(subdivisions=3, radius=45.0)
  v = mesh.vertices
  v = v * np.array([1.0, 0.8, 1.3]) + 3.0 * np.sin(v / 14.0)
  tri = v[mesh.faces] + np.array([2.0, -3.0, 1.0])
  g = shapes.make_grid((144.0, 144.0, 144.0), 1.0)
  box, occ = bone_meshes.occupancy(tri, g)
  vol = np.zeros((g.z.size, g.y.size, g.x.size), np.float32)
  vol[box] = occ
  # Volume check: the occupancy integrates to the mesh's volume.
  vol_exact = trimesh.Trimesh(v, mesh.faces).volume
  assert abs(vol.sum() - vol_exact) / vol_exact < 2e-3
  # A whole 64 x 64 image over the 144 mm field (2.25 mm pixels at the isocentre).
  geo = geometry_lib.ConeBeamGeometry(detector_rows=64, detector_cols=64, pixel_pitch_mm=3.6)
  for angle in (0.0, 33.0, 90.0):
    img = np.asarray(projector.project(vol, (1.0, 1.0, 1.0), geo, [angle]))[0]
    th = np.radians(angle)
    src = geo.source_to_isocentre_mm * np.array([np.sin(th), -np.cos(th), 0.0])
    e_d = np.array([-np.sin(th), np.cos(th), 0.0])
    e_u = np.array([np.cos(th), np.sin(th), 0.0])
    vv, uu = geo.detector_coords_mm()
    # Every pixel: rays through the middle and rays grazing the surface, where a
    # misplaced voxel or a wrong edge weight changes the length most.
    rows, cols = (a.ravel() for a in np.indices((64, 64)))
    pix = [src + geo.source_to_detector_mm * e_d + uu[c] * e_u + np.array([0, 0, vv[r]])
           for r, c in zip(rows, cols)]
    exact = _exact_lengths(tri, src, pix)
    got = img[rows, cols]
    assert exact.max() > 40.0 and (exact == 0).sum() > 500  # through it, and past it
    # Every ray that meets the mesh, and those deep through it: <= 1 % (0.5-0.7 %
    # measured). Rays that just miss it cross voxels the surface cuts, and sampling those
    # between voxel centres spreads them up to a voxel outward, so all rays together are
    # looser: 0.9-1.2 % measured, about two thirds of the squared error on rays whose exact
    # length is 0; no 1 mm voxel model of a surface knows where in the voxel it lies.
    for rays in (exact > 0, exact >= 5.0):
      assert np.linalg.norm((got - exact)[rays]) / np.linalg.norm(exact[rays]) <= 0.01
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) <= 0.015


def test_open_mesh_is_refused_by_name():
  mesh = trimesh.creation.icosphere(subdivisions=2)
  mesh.update_faces(np.arange(1, len(mesh.faces)))
  with pytest.raises(ValueError, match="'tibia' is not a closed"):
    bone_meshes.check_watertight(mesh, 'tibia')
  with pytest.raises(ValueError, match='unknown bone'):
    bone_meshes.load_bone('humerus')


def test_flexion_out_of_range_is_refused():
  for bad in (-1.0, 15.5, 40.0):
    with pytest.raises(ValueError, match=r'knee flexion must be in \[0, 15'):
      bone_meshes.posed_bones(bad)


def test_knee_follows_the_model_and_keeps_a_joint_space():
  straight, bent = bone_meshes.posed_bones(0.0), bone_meshes.posed_bones(15.0)
  np.testing.assert_array_equal(straight['femur'], bent['femur'])  # the femur is the base
  # Flexion takes the shank's far end (150-175 mm down) posterior (-y) by about
  # 160 mm * sin(15 deg) = 41 mm.
  far = straight['tibia'][..., 2] < -150
  dy = bent['tibia'][..., 1][far].mean() - straight['tibia'][..., 1][far].mean()
  assert -50 < dy < -32
  # Joint spaces as radiographs measure them (radiographic norms, about 3-8 mm), on a
  # nearly straight knee so that the vertical is still the tibia's axis.
  for seed in (2, 5, 10):
    p = phantom.sample_params(seed)
    p.update(phantom_mesh.sample_params(seed, p))
    assert p['flexion_deg'] < 3
    b = phantom_mesh.place_bones(p)
    medial, lateral, _, _ = phantom_mesh.joint_gaps(b['femur'], b['tibia'])
    assert abs(medial - p['gap_mm']) < 0.5 and 2.0 <= lateral < 8.0, (medial, lateral)
