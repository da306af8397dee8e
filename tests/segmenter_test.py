"""The segmenter: labels, Dice, model shapes, loss, augmentation, training, resume, CLI."""
import dataclasses
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from score_sde_knee import segmenter as seg
from score_sde_knee import segmenter_data as sd

# Small enough for a shared CPU; every training test uses it, so train_step compiles once.
SMALL = seg.SegmenterConfig(steps=6, batch_size=4, lr=3e-3, features=8, levels=2,
                            dice_weight=0.5, seed=0, augment=False, checkpoint_every=3)


def _phantoms(n: int, size: int = 16, seed: int = 0) -> list[dict]:
  """Ellipse legs with an ellipse bone inside; the image is a function of the labels
  (air 0.05, soft tissue 0.45, bone 0.9) plus a little noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  out = []
  for _ in range(n):
    cy, cx = rng.uniform(0.4, 0.6, 2) * size
    ry, rx = rng.uniform(0.3, 0.45) * size, rng.uniform(0.2, 0.35) * size
    leg = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    bone = ((yy - cy) / (0.5 * ry)) ** 2 + ((xx - cx - 0.1 * rx) / (0.4 * rx)) ** 2 < 1
    mask = np.where(bone & leg, 1.0, np.where(leg, 0.5, 0.0)).astype(np.float32)
    image = np.array([0.05, 0.45, 0.9], np.float32)[sd.labels_from_mask(mask)]
    image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1).astype(np.float32)
    out.append({'image': image[..., None], 'contour_bone': mask[..., None],
                'contour': (0.5 * (mask > 0))[..., None], 'patient_id': b'p',
                'angle_deg': np.float32(0)})
  return out


def test_labels_from_mask_maps_values_and_fractions_to_the_nearest_label():
  mask = np.array([[0, 0.5, 1], [0.2, 0.3, 0.7], [0.8, 0.25, 0.75]], np.float32)
  want = np.array([[0, 1, 2], [0, 1, 1], [2, 1, 2]])
  got = sd.labels_from_mask(mask[None, ..., None])  # (1, H, W, 1) -> (1, H, W)
  assert got.dtype == np.int32 and got.shape == (1, 3, 3)
  np.testing.assert_array_equal(got[0], want)
  np.testing.assert_array_equal(sd.labels_from_mask(mask), want)


@pytest.mark.parametrize('value', [1.5, -0.1, np.nan])
def test_labels_from_mask_names_a_value_out_of_range(value):
  mask = np.zeros((4, 4, 1), np.float32)
  mask[1, 2] = value
  with pytest.raises(ValueError, match=rf'{value}.*outside \[0, 1\]'):
    sd.labels_from_mask(mask)


def test_dice_of_a_rectangle_itself_shifted_and_empty():
  w, h, k = 6, 4, 2
  true = np.zeros((16, 16), np.int32)
  true[3:3 + h, 2:2 + w] = 2
  true[10:12, 10:12] = 1  # soft tissue elsewhere: counts for the leg, not the bone
  shifted = np.roll(true, k, axis=1)
  both = np.stack([true, shifted])
  got = sd.dice(both, np.stack([true, true]), sd.BONE)
  assert got.shape == (2,)
  np.testing.assert_allclose(got, [1.0, 2 * (w - k) * h / (2 * w * h)], rtol=1e-12)
  leg = sd.dice(shifted, true, sd.LEG)  # the 2x2 square moves 2 px too: no overlap
  np.testing.assert_allclose(leg, 2 * (w - k) * h / (2 * (w * h + 4)), rtol=1e-12)
  empty = np.zeros((16, 16), np.int32)
  assert sd.dice(empty, empty, sd.BONE) == 1.0  # both empty: right by convention
  assert sd.dice(empty, true, sd.BONE) == 0.0 and sd.dice(true, empty, sd.BONE) == 0.0
  assert sd.summary([0.5, 1.0]) == {'mean': 0.75, 'std': 0.25}


def test_model_shapes_and_the_size_it_refuses():
  for size, levels in ((16, 3), (64, 3), (256, 3), (24, 3)):
    model = seg.SegUNet(features=16, levels=levels)
    x = jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    out = jax.eval_shape(model.apply, variables, x)
    assert out.shape == (2, size, size, 3)
  with pytest.raises(ValueError, match=r'\(1, 20, 20, 1\).*2\*\*\(levels-1\) = 8'):
    jax.eval_shape(seg.SegUNet(levels=4).init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct((1, 20, 20, 1), jnp.float32))


def test_loss_is_cross_entropy_plus_weighted_soft_dice():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 4, 4))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, labels[..., None], -1).mean()
  p, y = np.exp(logp), np.eye(3)[labels]
  soft = np.mean((2 * (p * y).sum((1, 2)) + 1) / (p.sum((1, 2)) + y.sum((1, 2)) + 1))
  loss, m = seg.segmentation_loss(jnp.asarray(logits), jnp.asarray(labels), 0.7)
  np.testing.assert_allclose(float(m['ce']), ce, rtol=1e-5)
  np.testing.assert_allclose(float(loss), ce + 0.7 * (1 - soft), rtol=1e-5)


def _misaligned(image: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
  """(pixels whose image value disagrees with their label, pixels checked), over pixels at
  least 2 px inside a region of one label (interpolation mixes values at boundaries)."""
  classify = np.digitize(image[..., 0], [0.3, 0.7])  # 0.1 / 0.5 / 0.9 after any jitter
  inside = np.zeros(labels.shape, bool)
  for c in range(3):
    inside |= ndimage.binary_erosion(labels == c, np.ones((5, 5)), border_value=1)
  return int(np.sum(inside & (classify != labels))), int(inside.sum())


def test_augmentation_keeps_image_and_labels_aligned_and_is_seeded():
  labels = np.zeros((48, 48), np.int32)
  labels[8:40, 6:30] = 1  # off centre, so that a flip of one and not the other shows
  labels[14:26, 10:20] = 2
  image = np.array([0.1, 0.5, 0.9], np.float32)[labels][..., None]
  assert _misaligned(image[:, ::-1], labels)[0] > 50  # the check sees a misalignment
  changed = 0
  for seed in range(6):
    img, lab = sd.augment(image, labels, np.random.default_rng(seed), p=1.0)
    bad, checked = _misaligned(img, lab)
    assert bad == 0 and checked > 0.4 * lab.size, (seed, bad, checked)
    changed += int(np.any(lab != labels))
    img2, lab2 = sd.augment(image, labels, np.random.default_rng(seed), p=1.0)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
  assert changed == 6
  same = sd.augment(image, labels, np.random.default_rng(0), p=0.0)
  np.testing.assert_array_equal(same[0], image)
  np.testing.assert_array_equal(same[1], labels)


def test_batches_are_a_function_of_the_step():
  sources = [_phantoms(5, seed=0), _phantoms(3, seed=1)]
  a = sd.train_batches(sources, batch_size=4, seed=3, augment_=True)
  b = sd.train_batches(sources, batch_size=4, seed=3, augment_=True)
  for i in (0, 5, 2):
    np.testing.assert_array_equal(a[i]['image'], b[i]['image'])
    np.testing.assert_array_equal(a[i]['labels'], b[i]['labels'])
  assert a[0]['image'].shape == (4, 16, 16, 1) and a[0]['labels'].dtype == np.int32
  # Two epochs without augmentation hold every example of both sources twice.
  plain = sd.train_batches(sources, batch_size=4, seed=3, augment_=False)
  seen = np.concatenate([plain[i]['image'] for i in range(4)])
  every = np.stack([ex['image'] for s in sources for ex in s])
  key = lambda x: sorted(map(bytes, x.reshape(len(x), -1)))
  assert key(seen) == sorted(key(every) * 2)


def test_training_lowers_the_loss_and_beats_the_trivial_dice():
  data = _phantoms(8)
  batch = sd.train_batches([data], batch_size=4, seed=0, augment_=False)[0]
  state = seg.create_state(SMALL, 16)
  losses = []
  for _ in range(3):
    state, m = seg.train_step(state, batch)
    losses.append(float(m['loss']))
  assert losses[2] < losses[0]
  params = seg.train_segmenter(
      dataclasses.replace(SMALL, steps=60), [data])
  r = seg.evaluate_segmenter(params, SMALL, data, batch_size=32)
  true = np.stack([sd.example_arrays(ex)['labels'] for ex in data])
  soft = np.ones_like(true)  # everything soft tissue
  assert r['num_images'] == 8 and r['dice_bone'].shape == (8,)
  base_leg = sd.dice(soft, true, sd.LEG).mean()
  assert sd.dice(soft, true, sd.BONE).mean() == 0.0
  assert r['dice_bone_mean'] > 0.8, r
  assert r['dice_leg_mean'] > max(0.9, base_leg + 0.2), (r, base_leg)
  np.testing.assert_allclose(r['dice_leg_std'], np.std(r['dice_leg']))


def test_resume_gives_the_params_of_an_uninterrupted_run(tmp_path, monkeypatch):
  data = _phantoms(6)
  config = dataclasses.replace(SMALL, augment=True)
  whole = seg.train_segmenter(config, [data])
  calls = []
  step = seg.train_step
  monkeypatch.setattr(seg, 'train_step', lambda s, b: (calls.append(1), step(s, b))[1])
  first = dataclasses.replace(config, steps=3)
  seg.train_segmenter(first, [data], str(tmp_path))
  resumed = seg.train_segmenter(config, [data], str(tmp_path))
  assert len(calls) == 6  # 3, then 3 more from the checkpoint of step 3
  jax.tree.map(np.testing.assert_array_equal, whole, resumed)
  with pytest.raises(ValueError, match=r'step 6, past steps=3'):
    seg.train_segmenter(first, [data], str(tmp_path))
  with pytest.raises(ValueError, match=r"segmenter_config.json.*'lr': \(0.003, 0.01\)"):
    seg.train_segmenter(dataclasses.replace(config, lr=0.01), [data],
                        str(tmp_path))


def test_restored_params_are_those_training_returned_and_nothing_is_written(tmp_path):
  data = _phantoms(4)
  config = dataclasses.replace(SMALL, steps=2, image_size=16)
  with pytest.raises(FileNotFoundError, match='no segmenter_config.json'):
    seg.restore_params(config, str(tmp_path), 16)
  trained = seg.train_segmenter(config, [data], str(tmp_path))
  before = {p: os.stat(p).st_mtime_ns for p in glob.glob(f'{tmp_path}/**', recursive=True)}
  restored = seg.restore_params(config, str(tmp_path), 16)
  jax.tree.map(np.testing.assert_array_equal, trained, restored)
  assert {p: os.stat(p).st_mtime_ns
          for p in glob.glob(f'{tmp_path}/**', recursive=True)} == before
  with pytest.raises(ValueError, match=r"trained with another config.*'seed': \(0, 1\)"):
    seg.restore_params(dataclasses.replace(config, seed=1), str(tmp_path), 16)


def test_command_line_on_knee_drr(data_dir, tmp_path, capsys):
  version_dir = glob.glob(os.path.join(data_dir, 'knee_drr', 'tiny', '*'))[0]
  with pytest.raises(SystemExit, match=r"no split 'nope'"):
    seg.main(['--train', version_dir, '--test', version_dir, '--split_test', 'nope',
              '--workdir', str(tmp_path)])
  missing = str(tmp_path / 'missing')
  with pytest.raises(SystemExit, match=missing):
    seg.main(['--train', missing, '--test', version_dir, '--workdir', str(tmp_path)])
  seg.main(['--train', f'{version_dir},{version_dir}', '--test', version_dir,
            '--workdir', str(tmp_path / 'w'), '--steps', '4', '--batch_size', '4',
            '--features', '8', '--levels', '2', '--lr', '0.003', '--augment', 'false'])
  line = capsys.readouterr().out.strip()
  with open(tmp_path / 'w' / 'metrics.json', encoding='utf-8') as f:
    metrics = json.load(f)
  n = metrics['num_images']
  assert n > 0 and len(metrics['dice_bone']) == n and metrics['num_train_examples'][0] > 0
  assert metrics['config']['steps'] == 4 and metrics['test'] == version_dir
  assert line.startswith(f"dice_bone {metrics['dice_bone_mean']:.4f} ± ") and f'over {n}' in line


def test_a_tfrecord_data_set_is_refused_with_the_convert_command(tmp_path):
  from datasets.knee_drr import knee_drr_dataset_builder as kb
  from helpers import TINY  # pylint: disable=g-import-not-at-top
  builder = kb.Builder(config=TINY, data_dir=str(tmp_path), file_format='tfrecord')
  builder.download_and_prepare()
  with pytest.raises(ValueError, match=r'built as tfrecord.*--convert'):
    seg.open_source(os.fspath(builder.data_dir), 'train')
