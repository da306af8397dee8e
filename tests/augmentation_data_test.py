"""benchmarks/augmentation_data.py: subsets nested in k, views evenly spaced by angle, and
deformed masks."""
import numpy as np
import pytest

from benchmarks import augmentation_data as ad
from score_sde_knee import segmenter_data as sd


def _source(patients, views):
  """A random-access source of examples: `views` per patient, angles in a shuffled order."""
  rng = np.random.default_rng(1)
  exs = [{'patient_id': p.encode(), 'angle_deg': np.float32(a)}
         for p in patients for a in np.arange(views) * (360.0 / views)]
  return [exs[i] for i in rng.permutation(len(exs))]


def test_subsets_are_nested_in_k_and_masks_come_from_the_other_patients():
  source = _source(['p0', 'p1', 'p2', 'p3', 'p4'], 6)
  got = ad.make_subsets(source, (1, 3), subset_seed=7, views_per_patient=3, mask_views=2)
  order = got['patients']
  assert sorted(order) == ['p0', 'p1', 'p2', 'p3', 'p4']
  assert order == ad.make_subsets(source, (2,), 7, 3, 2)['patients']  # k does not reorder
  assert order != ad.make_subsets(source, (2,), 8, 3, 2)['patients']
  pid = lambda i: source[i]['patient_id'].decode()
  assert len(got['all']) == 5 * 3
  for k in (1, 3):
    sub = got['k'][str(k)]
    assert sub['patients'] == order[:k]
    assert len(sub['real']) == 3 * k and {pid(i) for i in sub['real']} == set(order[:k])
    assert len(sub['masks']) == 2 * (5 - k) and {pid(i) for i in sub['masks']} == set(order[k:])
  assert set(got['k']['1']['real']) < set(got['k']['3']['real'])
  for bad in (0, 5):
    with pytest.raises(ValueError, match=f'--k {bad}: expected 1 <= k < 5'):
      ad.make_subsets(source, (bad,), 7, 3, 2)


def test_a_subset_reads_through_to_its_indices():
  sub = ad.Subset(['a', 'b', 'c', 'd'], np.array([3, 1]))
  assert len(sub) == 2 and [sub[0], sub[1]] == ['d', 'b']


def test_views_are_evenly_spaced_by_angle_within_each_patient():
  rng = np.random.default_rng(0)
  pids = np.repeat(['a', 'b'], 12)
  angles = np.tile(np.arange(12) * 30.0, 2)
  perm = rng.permutation(24)  # file order is not angle order
  pids, angles = pids[perm], angles[perm]
  got = ad.pick_views(pids, angles, ['b', 'a'], 4)
  assert len(got) == 8 and list(pids[got[:4]]) == ['b'] * 4
  assert sorted(angles[got[:4]]) == [0, 90, 180, 270]
  assert sorted(angles[got[4:]]) == [0, 90, 180, 270]
  assert sorted(ad.pick_views(pids, angles, ['a'], 0)) == sorted(np.flatnonzero(pids == 'a'))


def test_deformed_masks_are_warped_labels_of_the_given_ones():
  yy, xx = np.mgrid[0:32, 0:32]
  leg = (np.abs(xx - 15.5) < 9)
  bone = leg & (np.abs(xx - 13.5) < 4) & (yy > 3)
  mask = np.where(bone, 1.0, np.where(leg, 0.5, 0.0)).astype(np.float32)[..., None]
  got = ad.deformed_masks([mask, mask[::-1]], 5, seed=3)
  assert len(got) == 5 and all(m.shape == (32, 32, 1) and m.dtype == np.float32 for m in got)
  assert set(np.unique(np.concatenate(got))) <= {0.0, 0.5, 1.0}
  for j, m in enumerate(got):
    src = sd.labels_from_mask([mask, mask[::-1]][j % 2])
    labels = sd.labels_from_mask(m)
    assert not np.array_equal(labels, src)  # warped ...
    assert sd.dice(labels, src, sd.BONE) > 0.8  # ... a little, and not mirrored
    assert sd.dice(labels, src, sd.LEG) > 0.9
  again = ad.deformed_masks([mask, mask[::-1]], 5, seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(got, again))
