"""generate: mask files, their checks and options, outputs, seeds, resume, TFDS export."""
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from score_sde_knee import generate
from helpers import TINY
from helpers import read_split
from helpers import make_workdir
from helpers import tiny_config

LABELS = (0.0, 0.5, 1.0)


def label_mask(shape, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).choice(LABELS, size=shape)


@pytest.fixture(scope='module')
def ctm_workdir(tmp_path_factory, data_dir):
  """A CTM contour_bone workdir as training leaves it (random parameters, step 2)."""
  config = tiny_config('ctm', 'contour_bone', data_dir)
  return config, make_workdir(tmp_path_factory.mktemp('ctm_cb'), config)


def test_png_8_and_16_bit_and_npy_masks_read_exactly(tmp_path):
  m = label_mask((16, 16))
  Image.fromarray(np.round(m * 255).astype(np.uint8)).save(tmp_path / 'a8.png')
  Image.fromarray(np.round(m * 65535).astype(np.uint16)).save(tmp_path / 'a16.png')
  np.save(tmp_path / 'b.npy', m.astype(np.float32))
  np.save(tmp_path / 'c.npy', m[..., None])
  for name in ('a8.png', 'a16.png', 'b.npy', 'c.npy'):
    got = generate.prepare_mask(generate.read_mask_file(str(tmp_path / name)), name,
                                size=16, labels=LABELS)
    assert got.shape == (16, 16, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got[..., 0], m)


def test_bad_masks_are_clear_errors(tmp_path):
  def prep(mask, labels=LABELS, **kw):
    return generate.prepare_mask(np.asarray(mask, np.float64), 'm.png', size=16,
                                 labels=labels, **kw)
  with pytest.raises(generate.MaskError, match=r'm\.png.*24x16.*16x16.*--resize'):
    prep(label_mask((24, 16)))
  bad = label_mask((16, 16))
  bad[3, 4] = 0.3
  with pytest.raises(generate.MaskError, match=r'm\.png.*0\.3;.*--snap'):
    prep(bad)
  with pytest.raises(generate.MaskError, match=r'm\.png.*bone labels.*contour_bone.*--snap'):
    prep(label_mask((16, 16)), labels=(0.0, 0.5))
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'rgb.png')
  with pytest.raises(generate.MaskError, match=r'rgb\.png.*grayscale.*RGB'):
    generate.read_mask_file(str(tmp_path / 'rgb.png'))
  np.save(tmp_path / 'cube.npy', np.zeros((4, 16, 16)))
  with pytest.raises(generate.MaskError, match=r'cube\.npy.*\(4, 16, 16\)'):
    generate.read_mask_file(str(tmp_path / 'cube.npy'))
  # A contour model refuses a contour_bone mask file, naming it.
  Image.fromarray(np.round(label_mask((16, 16)) * 255).astype(np.uint8)).save(
      tmp_path / 'cb.png')
  with pytest.raises(generate.MaskError, match=r'cb\.png.*bone'):
    generate.load_masks(str(tmp_path / 'cb.png'), tiny_config('unet', 'contour'))


def test_resize_is_nearest_neighbour_and_snap_rounds_to_labels():
  m = label_mask((24, 40), seed=1)
  got = generate.prepare_mask(m, 'm', size=16, labels=LABELS, resize=True)[..., 0]
  ref = np.asarray(Image.fromarray((m * 2).astype(np.uint8)).resize((16, 16),
                                                                      Image.NEAREST)) / 2
  np.testing.assert_array_equal(got, ref)
  noisy = np.resize([0.2, 0.3, 0.74, 0.8, 1.0, 0.0], (16, 16))
  got = generate.prepare_mask(noisy, 'm', size=16, labels=LABELS, snap=True)[..., 0]
  np.testing.assert_array_equal(got, np.select([noisy < 0.25, noisy < 0.75], [0, 0.5], 1))
  got = generate.prepare_mask(noisy, 'm', size=16, labels=(0.0, 0.5), snap=True)[..., 0]
  np.testing.assert_array_equal(got, np.where(noisy < 0.25, 0, 0.5))


def test_generate_resume_seeds_and_tfds_export(tmp_path, ctm_workdir, data_dir):
  config, wd = ctm_workdir
  masks = tmp_path / 'masks'
  masks.mkdir()
  ma, mb = label_mask((16, 16), 2), label_mask((16, 16), 3)
  Image.fromarray(np.round(ma * 255).astype(np.uint8)).save(masks / 'a.png')
  np.save(masks / 'b.npy', mb)
  (masks / 'notes.txt').write_text('ignored')
  out = str(tmp_path / 'out')
  manifest = generate.generate(config, wd, masks=str(masks), out=out, num_samples=2, seed=5)

  names = ['a_s0', 'a_s1', 'b_s0', 'b_s1']
  with open(os.path.join(out, 'manifest.json')) as f:
    saved = json.load(f)
  assert [(e['name'], e['sample'], e['seed']) for e in saved['outputs']] == [
      ('a', 0, 5), ('a', 1, 6), ('b', 0, 7), ('b', 1, 8)]
  assert saved['settings']['checkpoint_step'] == 2 and saved['settings']['seed'] == 5
  assert saved['outputs'] == json.loads(json.dumps(manifest['outputs']))
  arrays = {}
  for n in names:
    x = np.load(os.path.join(out, n + '.npy'))
    assert x.shape == (16, 16, 1) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    with Image.open(os.path.join(out, n + '.png')) as im:
      png = np.asarray(im)
    assert png.dtype == np.uint16 and png.shape == (16, 16)
    np.testing.assert_array_equal(png, np.round(x[..., 0].astype(np.float64) * 65535))
    arrays[n] = x
  assert not np.array_equal(arrays['a_s0'], arrays['a_s1'])
  # The overview: each mask as the model got it, then its samples as written.
  rows, titles = generate.overview_rows(out, saved['outputs'])
  assert titles == ['a', 'b']
  for row, m, stems in zip(rows, (ma, mb), (names[:2], names[2:])):
    assert len(row) == 3
    np.testing.assert_array_equal(row[0][..., 0], m)
    for got, stem in zip(row[1:], stems):
      np.testing.assert_array_equal(got, arrays[stem])
  with Image.open(os.path.join(out, 'overview.png')) as im:
    assert im.width > im.height  # 3 columns, 2 rows

  # Same mask and seed -> the same image, whatever else is sampled with it.
  alone = str(tmp_path / 'alone')
  generate.generate(config, wd, masks=str(masks / 'b.npy'), out=alone, seed=7)
  np.testing.assert_array_equal(np.load(os.path.join(alone, 'b_s0.npy')), arrays['b_s0'])

  # Resume: only the missing output is made again, identical.
  for ext in ('.png', '.npy'):
    os.remove(os.path.join(out, 'a_s1' + ext))
  before = os.stat(os.path.join(out, 'b_s1.npy')).st_mtime_ns
  generate.generate(config, wd, masks=str(masks), out=out, num_samples=2, seed=5)
  np.testing.assert_array_equal(np.load(os.path.join(out, 'a_s1.npy')), arrays['a_s1'])
  assert os.stat(os.path.join(out, 'b_s1.npy')).st_mtime_ns == before
  with pytest.raises(ValueError, match='seed'):
    generate.generate(config, wd, masks=str(masks), out=out, num_samples=2, seed=6)

  # Export: loadable without this code, knee_drr's features, the generated triples.
  tfds_dir = generate.export_tfds(out, str(tmp_path / 'tfds_out'))
  ds = tfds.builder_from_directory(tfds_dir)
  real = tfds.builder(f'knee_drr/{TINY.name}', data_dir=data_dir)
  assert repr(ds.info.features) == repr(real.info.features)
  assert ds.info.features.get_serialized_info() == real.info.features.get_serialized_info()
  source = ds.as_data_source(split='train')   # random access, as Grain reads it
  exs = [source[i] for i in range(len(source))]
  assert len(exs) == 4
  for e, n, m in zip(exs, names, [ma, ma, mb, mb]):
    np.testing.assert_array_equal(e['image'], arrays[n])
    np.testing.assert_array_equal(e['contour_bone'][..., 0], m)
    np.testing.assert_array_equal(e['contour'][..., 0], np.where(m > 0, 0.5, 0))
    assert e['patient_id'].decode() == n[0] and np.isnan(e['angle_deg'])


def test_test_split_masks(tmp_path, ctm_workdir, data_dir):
  config, wd = ctm_workdir
  out = str(tmp_path / 'out')
  m = generate.generate(config, wd, masks='test', out=out, seed=0,
                        tfds_dir=str(tmp_path / 'tfds_out'))
  truth = read_split(data_dir)
  n = config.eval.num_images
  assert [e['name'] for e in m['outputs']] == [f'test_{i:05d}' for i in range(n)]
  for i, e in enumerate(m['outputs']):
    np.testing.assert_array_equal(np.load(os.path.join(out, e['mask_npy'])),
                                  truth[i]['contour_bone'])
    assert e['patient_id'] == truth[i]['patient_id'].decode()
    assert e['angle_deg'] == float(truth[i]['angle_deg'])
  source = tfds.builder_from_directory(m['tfds_dir']).as_data_source('train')
  exs = [source[i] for i in range(len(source))]
  assert [float(x['angle_deg']) for x in exs] == [float(t['angle_deg']) for t in truth[:n]]
  with pytest.raises(ValueError, match='contour_bone'):
    generate.generate(tiny_config('ctm', 'contour', data_dir), wd, masks='test',
                      out=str(tmp_path / 'x'), tfds_dir=str(tmp_path / 'y'))


def test_sampler_is_recorded_and_an_out_folder_holds_one_samplers_images(tmp_path,
                                                                         ctm_workdir):
  config, wd = ctm_workdir
  out = str(tmp_path / 'out')
  m = generate.generate(config, wd, masks='test', out=out, sampler='pc:2:snr=0.2')
  assert (m['settings']['sampler']['N'], m['settings']['sampler']['snr']) == (2, 0.2)
  assert len(m['outputs']) == config.eval.num_images
  with pytest.raises(ValueError, match=r'other settings \(sampler differ'):
    generate.generate(config, wd, masks='test', out=out)  # the config's own sampler


def test_overview_caps_masks_and_samples_evenly(tmp_path):
  entries = []
  for i in range(20):
    np.save(tmp_path / f'm{i}.npy', np.full((4, 4, 1), i, np.float32))
    for k in range(6):
      np.save(tmp_path / f'm{i}_s{k}.npy', np.full((4, 4, 1), 100 * i + k, np.float32))
      entries.append({'mask_index': i, 'sample': k, 'name': f'm{i}',
                      'mask_npy': f'm{i}.npy', 'npy': f'm{i}_s{k}.npy'})
  rows, titles = generate.overview_rows(str(tmp_path), entries[::-1])  # order-free
  picked = [0, 3, 5, 8, 11, 14, 16, 19]  # round(linspace(0, 19, 8))
  assert titles == [f'm{i}' for i in picked]
  for row, i in zip(rows, picked):
    assert [float(x[0, 0, 0]) for x in row] == [i] + [100 * i + k for k in range(4)]
  path = generate.save_overview(str(tmp_path), entries)
  with Image.open(path) as im:
    assert im.height > im.width  # 8 rows of 5
