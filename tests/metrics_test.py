import numpy as np
import pytest
from skimage import filters
from skimage import metrics as skm

from score_sde_knee import metrics


def _pair(shape, dtype=np.float64, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape)
  # A blurred, noisy copy: SSIM well inside (0, 1), not a trivial 0 or 1.
  y = np.clip(0.7 * x + 0.3 * np.roll(x, 1, axis=1) + 0.05 * rng.normal(size=shape), 0, 1)
  return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize('shape', [(3, 32, 32), (2, 20, 33, 1)])
def test_mae_mse_psnr_match_skimage(shape):
  x, y = _pair(shape)
  mae, mse, psnr = metrics.mae(x, y), metrics.mse(x, y), metrics.psnr(x, y)
  assert mae.shape == mse.shape == psnr.shape == (shape[0],)
  for i in range(shape[0]):
    np.testing.assert_allclose(mae[i], np.mean(np.abs(x[i] - y[i])), rtol=1e-12)
    np.testing.assert_allclose(mse[i], skm.mean_squared_error(x[i], y[i]), rtol=1e-12)
    np.testing.assert_allclose(
        psnr[i], skm.peak_signal_noise_ratio(x[i], y[i], data_range=1), rtol=1e-12)


def test_psnr_of_identical_images_is_inf_and_data_range_scales():
  x, y = _pair((2, 8, 8))
  assert np.all(np.isinf(metrics.psnr(x, x)))
  np.testing.assert_allclose(metrics.psnr(2 * x, 2 * y, data_range=2.0), metrics.psnr(x, y))


def _ssim_by_windows(x, y, win=7, data_range=1.0):
  """Wang et al.'s SSIM, float64, window by window: the mean over every win x win window
  inside the image, with sample (N - 1) variances, K1 = 0.01, K2 = 0.03."""
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  out = []
  for i in range(x.shape[0] - win + 1):
    for j in range(x.shape[1] - win + 1):
      a, b = x[i:i + win, j:j + win].ravel(), y[i:i + win, j:j + win].ravel()
      cov = np.cov(a, b)  # ddof=1
      out.append((2 * a.mean() * b.mean() + c1) * (2 * cov[0, 1] + c2)
                 / ((a.mean()**2 + b.mean()**2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
  return np.mean(out)


@pytest.mark.parametrize('shape', [(3, 16, 16), (2, 10, 13), (2, 7, 9)])
def test_ssim_matches_the_formula_window_by_window(shape):
  x, y = _pair(shape)
  got = metrics.ssim(x, y)
  want = [_ssim_by_windows(a, b) for a, b in zip(x, y)]
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  assert np.all((got > 0.05) & (got < 0.95))  # A meaningful, non-degenerate case.
  np.testing.assert_allclose(  # data_range scales the constants only
      metrics.ssim(2 * x, 2 * y, data_range=2.0), got, rtol=1e-10)
  np.testing.assert_allclose(metrics.ssim(x, y, win_size=5)[0],
                             _ssim_by_windows(x[0], y[0], win=5), rtol=1e-10)


def test_ssim_of_flat_images_hand_computed():
  # No variance: SSIM = (2 c d + C1) / (c^2 + d^2 + C1) with C1 = 1e-4.
  c, d = 0.3, 0.5
  got = metrics.ssim(np.full((1, 9, 9), c), np.full((1, 9, 9), d))
  np.testing.assert_allclose(got, [(2 * c * d + 1e-4) / (c**2 + d**2 + 1e-4)], rtol=1e-10)


def test_ssim_channels_and_float32_average_the_channels():
  x, y = _pair((2, 12, 12, 3), np.float32, seed=1)
  got = metrics.ssim(x, y)
  # float32 inputs are taken in float64: each channel as the float64 formula.
  want = [np.mean([_ssim_by_windows(a[..., c].astype(np.float64),
                                    b[..., c].astype(np.float64)) for c in range(3)])
          for a, b in zip(x, y)]
  np.testing.assert_allclose(got, want, rtol=1e-10)
  np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-12)


def test_ssim_rejects_small_images_and_mismatched_shapes():
  with pytest.raises(ValueError, match='win_size'):
    metrics.ssim(np.zeros((1, 6, 8)), np.zeros((1, 6, 8)))
  with pytest.raises(ValueError, match='same shape'):
    metrics.mae(np.zeros((1, 8, 8)), np.zeros((1, 8, 9)))


def test_dice_hand_computed():
  a = np.zeros((3, 3, 3), bool)
  b = np.zeros((3, 3, 3), bool)
  # Image 0: A = {(0,0), (0,1), (1,1)}, B = {(0,1), (1,1), (1,0), (2,2)}:
  # |A & B| = 2, |A| + |B| = 7, Dice = 4/7.
  for r, c in [(0, 0), (0, 1), (1, 1)]:
    a[0, r, c] = True
  for r, c in [(0, 1), (1, 1), (1, 0), (2, 2)]:
    b[0, r, c] = True
  # Image 1: both empty -> 1 by definition. Image 2: A = {(2,2)}, B empty -> 0.
  a[2, 2, 2] = True
  np.testing.assert_allclose(metrics.dice(a, b), [4 / 7, 1.0, 0.0])


def _phantom(bone_cols=slice(6, 10)):
  """A 16x16 image: background 0.02, body 0.4 (rows 2..13, cols 3..12), bone 0.9."""
  img = np.full((16, 16), 0.02)
  img[2:14, 3:13] = 0.4
  img[4:12, bone_cols] = 0.9
  return img


def test_mask_adherence_is_one_on_the_true_image():
  img = _phantom()
  contour = 0.5 * (img > 0.1)
  contour_bone = contour + 0.5 * (img > 0.6)
  batch = img[None, ..., None]
  np.testing.assert_allclose(
      metrics.mask_adherence(batch, contour[None, ..., None])['dice_contour'], [1.0])
  got = metrics.mask_adherence(batch, contour_bone[None, ..., None])
  np.testing.assert_allclose(got['dice_contour'], [1.0])
  np.testing.assert_allclose(got['dice_bone'], [1.0])
  assert 'dice_bone' not in metrics.mask_adherence(batch, contour[None, ..., None])


def test_mask_adherence_shifted_sample_hand_computed():
  true = _phantom()
  cond = 0.5 * (true > 0.1) + 0.5 * (true > 0.6)
  sample = _phantom(bone_cols=slice(8, 12))  # Bone shifted by 2 columns.
  sample[2:14, 3] = 0.05                      # Body loses one column (12 of 120 pixels).
  got = metrics.mask_adherence(sample[None], cond[None])
  # Contour: |A| = 108, |B| = 120, |A & B| = 108 -> 216 / 228.
  np.testing.assert_allclose(got['dice_contour'], [216 / 228])
  # Bone: 8x4 each, overlap 8x2 -> 2 * 16 / 64 = 0.5 (Otsu splits 0.4 from 0.9).
  np.testing.assert_allclose(got['dice_bone'], [0.5])
  # A fixed threshold gives the same split here.
  np.testing.assert_allclose(
      metrics.mask_adherence(sample[None], cond[None], bone_threshold=0.6)['dice_bone'], [0.5])


def test_bone_mask_uses_otsu_within_the_body():
  rng = np.random.default_rng(3)
  img = np.clip(_phantom() + 0.03 * rng.normal(size=(16, 16)), 0, 1)
  body = img[img > 0.1]
  np.testing.assert_array_equal(metrics.bone_mask(img[None])[0],
                                img > filters.threshold_otsu(body))
  assert not metrics.bone_mask(np.full((1, 8, 8), 0.5)).any()  # Flat body: no bone.


def test_summarise():
  v = np.array([1.0, 2.0, 4.0])
  assert metrics.summarise(v) == {'mean': 7 / 3, 'std': pytest.approx(np.sqrt(14 / 9))}
  with pytest.raises(ValueError, match='at least one'):
    metrics.summarise([])
