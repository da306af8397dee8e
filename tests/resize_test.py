"""Area resizing: against tf.image.resize(method='area') and against hand-computed means."""
import numpy as np
import pytest

from score_sde_knee.utils import resize

SIZES = [(256, 64), (64, 16), (100, 64), (64, 100), (16, 16),
         # ratios near 1, where TensorFlow's float32 span edges matter (~3e-5 if ignored)
         (256, 255), (99, 100), (7, 3), (3, 7)]


@pytest.mark.parametrize('n_in,n_out', SIZES)
def test_equals_tensorflow_area_resize(n_in, n_out):
  tf = pytest.importorskip('tensorflow')
  rng = np.random.default_rng(n_in * 1000 + n_out)
  batch = rng.uniform(0, 1, size=(2, n_in, n_in, 3)).astype(np.float32)
  for x in (batch, batch[0, ..., :1]):  # 4-D and 3-D
    want = tf.image.resize(x, (n_out, n_out), method='area').numpy()
    got = resize.area_resize(x, n_out)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_non_square_input_is_resized_to_a_square_as_tensorflow_does():
  tf = pytest.importorskip('tensorflow')
  x = np.random.default_rng(1).uniform(0, 1, size=(37, 53, 2)).astype(np.float32)
  want = tf.image.resize(x, (20, 20), method='area').numpy()
  np.testing.assert_allclose(resize.area_resize(x, 20), want, rtol=0, atol=1e-6)


def test_4x_downsampling_gives_the_block_means_exactly():
  # Multiples of 1/256: every sum and mean below is exact in float32 and float64.
  x = np.random.default_rng(2).integers(0, 256, size=(3, 16, 16, 2)).astype(np.float32) / 256
  blocks = x.reshape(3, 4, 4, 4, 4, 2).astype(np.float64).mean(axis=(2, 4))
  np.testing.assert_array_equal(resize.area_resize(x, 4), blocks.astype(np.float32))


def test_4x_upsampling_repeats_each_pixel():
  x = np.random.default_rng(3).uniform(0, 1, size=(4, 4, 1)).astype(np.float32)
  np.testing.assert_array_equal(resize.area_resize(x, 16),
                                np.repeat(np.repeat(x, 4, axis=0), 4, axis=1))


def test_4_to_3_weights_by_overlap():
  # Output row 0 covers source rows [0, 4/3): all of row 0, a third of row 1; row 1 covers
  # [4/3, 8/3): two thirds of rows 1 and 2; row 2 the rest. Columns alike.
  a = np.array([1.0, 10.0, 100.0, 1000.0])
  m = np.array([[1, 1 / 3, 0, 0], [0, 2 / 3, 2 / 3, 0], [0, 0, 1 / 3, 1]]) * 3 / 4
  x = np.outer(a, a[::-1])[..., None].astype(np.float32)
  np.testing.assert_allclose(resize.area_resize(x, 3)[..., 0], m @ x[..., 0] @ m.T,
                             rtol=1e-6)


def test_same_size_is_a_float32_copy():
  x = np.arange(2 * 5 * 5 * 1, dtype=np.float64).reshape(2, 5, 5, 1)
  y = resize.area_resize(x, 5)
  assert y.dtype == np.float32 and not np.shares_memory(x, y)
  np.testing.assert_array_equal(y, x)
  x32 = x.astype(np.float32)
  assert not np.shares_memory(x32, resize.area_resize(x32, 5))


def test_batch_equals_one_image_at_a_time():
  x = np.random.default_rng(4).uniform(0, 1, size=(3, 30, 30, 1)).astype(np.float32)
  np.testing.assert_array_equal(resize.area_resize(x, 13),
                                np.stack([resize.area_resize(im, 13) for im in x]))


def test_bad_shapes_and_sizes_are_named():
  with pytest.raises(ValueError, match=r'x has shape \(8, 8\); expected \(H, W, C\)'):
    resize.area_resize(np.zeros((8, 8)), 4)
  with pytest.raises(ValueError, match=r'x has shape \(1, 0, 8, 1\)'):
    resize.area_resize(np.zeros((1, 0, 8, 1)), 4)
  with pytest.raises(ValueError, match='size is 0; expected an integer >= 1'):
    resize.area_resize(np.zeros((8, 8, 1)), 0)
  with pytest.raises(ValueError, match='size is 2.5'):
    resize.area_resize(np.zeros((8, 8, 1)), 2.5)
