"""Tests of the FID Inception-v3 (architecture, preprocessing, weight files).

Agreement with pytorch-fid itself needs torch and lives in
`experiments/convert_pytorch_fid_weights.py --self-test`; these tests run without it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.errors import UserError
from dpgen_jax.models import inception
from dpgen_jax.models import inception_weights


def _random_flat_weights(seed: int = 0) -> dict[str, np.ndarray]:
  """Random weights in the .npz scheme, with activations of order 1 at every layer.

  Drawn with numpy from the expected shapes: `FIDInceptionV3().init` takes about a
  minute on a 2-core CPU (one random kernel per layer shape), numpy a second.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for key, shape in inception.inception_variable_shapes().items():
    leaf = key.rsplit('/', 1)[-1]
    if leaf == 'kernel':  # HWIO; He scaling keeps ReLU activations O(1)
      fan_in = shape[0] * shape[1] * shape[2]
      value = rng.normal(scale=np.sqrt(2.0 / fan_in), size=shape)
    elif leaf in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, size=shape)
    else:  # bias, mean
      value = rng.normal(scale=0.2, size=shape)
    flat[key] = value.astype(np.float32)
  return flat


@pytest.fixture(scope='module')
def flat_weights():
  return _random_flat_weights()


def _conv_layers():
  """(in, out, kh, kw) of every BasicConv2d of torchvision's Inception-v3 minus
  AuxLogits, transcribed from the torchvision block definitions (the FID patches
  change pooling only), independently of `FIDInceptionV3`'s code."""
  layers = [(3, 32, 3, 3), (32, 32, 3, 3), (32, 64, 3, 3), (64, 80, 1, 1),
            (80, 192, 3, 3)]
  for cin, pool_features in ((192, 32), (256, 64), (288, 64)):  # Mixed_5b-d
    layers += [(cin, 64, 1, 1), (cin, 48, 1, 1), (48, 64, 5, 5), (cin, 64, 1, 1),
               (64, 96, 3, 3), (96, 96, 3, 3), (cin, pool_features, 1, 1)]
  layers += [(288, 384, 3, 3), (288, 64, 1, 1), (64, 96, 3, 3),
             (96, 96, 3, 3)]  # Mixed_6a
  for c7 in (128, 160, 160, 192):  # Mixed_6b-e
    layers += [(768, 192, 1, 1), (768, c7, 1, 1), (c7, c7, 1, 7), (c7, 192, 7, 1),
               (768, c7, 1, 1), (c7, c7, 7, 1), (c7, c7, 1, 7), (c7, c7, 7, 1),
               (c7, 192, 1, 7), (768, 192, 1, 1)]
  layers += [(768, 192, 1, 1), (192, 320, 3, 3), (768, 192, 1, 1),
             (192, 192, 1, 7), (192, 192, 7, 1), (192, 192, 3, 3)]  # Mixed_7a
  for cin in (1280, 2048):  # Mixed_7b, Mixed_7c
    layers += [(cin, 320, 1, 1), (cin, 384, 1, 1), (384, 384, 1, 3),
               (384, 384, 3, 1), (cin, 448, 1, 1), (448, 384, 3, 3),
               (384, 384, 1, 3), (384, 384, 3, 1), (cin, 192, 1, 1)]
  return layers


def test_parameter_count_matches_pytorch_fid():
  shapes = inception.inception_variable_shapes()
  is_stat = lambda key: key.endswith(('/mean', '/var'))
  params = sum(int(np.prod(s)) for k, s in shapes.items() if not is_stat(k))
  stats = sum(int(np.prod(s)) for k, s in shapes.items() if is_stat(k))

  layers = _conv_layers()
  assert len(layers) == 94
  # Each BasicConv2d: a bias-free kernel plus BN scale and bias (trainable), and BN
  # running mean and var (statistics).
  assert params == sum(i * o * h * w + 2 * o for i, o, h, w in layers)
  assert stats == sum(2 * o for _, o, _, _ in layers)
  assert len(shapes) == 94 * 5
  # 21,785,568 is also what torch reports: the sum of numel over pytorch-fid's
  # fid_inception_v3() parameters without fc.* (torch 2.13 / torchvision 0.28), and
  # torchvision's published 27,161,264 for inception_v3 minus fc (2,049,000) and
  # AuxLogits (3,326,696). Counting only one of BN's two per-channel vectors gives
  # 21,785,568 - 17,216 = 21,768,352, a figure sometimes quoted for this network.
  assert params == 21_785_568
  assert stats == 34_432  # 17,216 BN channels x (mean, var)


def test_full_size_forward_shape():
  model = inception.FIDInceptionV3()
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  out = jax.eval_shape(model.apply, variables,
                       jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32))
  assert out.shape == (2, inception.FEATURE_DIM)
  assert out.dtype == jnp.float32


def test_save_load_round_trip_and_chunking(flat_weights, tmp_path):
  # Compiles the full 299x299 network once (~6 s on 2 CPU cores), ~1 s per call.
  original = inception_weights.unflatten_variables(flat_weights)
  path = tmp_path / 'round_trip.npz'
  inception.save_inception_params(original, path)
  loaded = inception.load_inception_params(path)
  assert jax.tree.structure(loaded) == jax.tree.structure(original)

  images = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype(np.float32)
  feats = inception.inception_feature_fn(original, batch_size=2)(images)
  assert feats.shape == (3, inception.FEATURE_DIM)
  assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # mean of ReLU outputs
  assert feats.std() > 1e-3  # not collapsed to a constant by the random weights
  np.testing.assert_array_equal(
      inception.inception_feature_fn(loaded, batch_size=2)(images), feats)
  # Chunk [1, 2] instead of [0, 1] + [2, padding]: per-image features must not move.
  np.testing.assert_allclose(
      inception.inception_feature_fn(loaded, batch_size=2)(images[1:]), feats[1:],
      rtol=1e-5, atol=1e-5)


def _torch_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
  """Row i = weights of PyTorch's bilinear, align_corners=False, output pixel i."""
  matrix = np.zeros((size_out, size_in))
  for i in range(size_out):
    src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)  # PyTorch clamps below at 0
    lo = min(int(np.floor(src)), size_in - 1)
    hi = min(lo + 1, size_in - 1)
    frac = src - lo
    matrix[i, lo] += 1 - frac
    matrix[i, hi] += frac
  return matrix


# Upscaling (MNIST, odd non-square) and downscaling, where antialiasing would differ.
@pytest.mark.parametrize('height,width,channels',
                         [(28, 28, 1), (5, 7, 3), (400, 310, 1)])
def test_preprocess_matches_torch_bilinear(height, width, channels):
  images = np.random.default_rng(2).uniform(size=(2, height, width, channels))
  out = np.asarray(inception.preprocess_for_inception(images))
  assert out.shape == (2, 299, 299, 3) and out.dtype == np.float32
  assert out.min() >= -1.0 and out.max() <= 1.0
  rows, cols = _torch_bilinear_matrix(height, 299), _torch_bilinear_matrix(width, 299)
  expected = 2 * np.einsum('ih,jw,nhwc->nijc', rows, cols, images, optimize=True) - 1
  np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-4)


def test_preprocess_keeps_299_and_spans_range():
  images = np.zeros((1, 299, 299, 3), np.float32)
  images[0, :100] = 1.0
  out = np.asarray(inception.preprocess_for_inception(images))
  np.testing.assert_array_equal(out, 2 * images - 1)
  with pytest.raises(ValueError, match='1 or 3'):
    inception.preprocess_for_inception(np.zeros((1, 28, 28, 2)))


def _write(path, flat):
  inception_weights.save_flat_npz(flat, path)
  return path


def test_wrong_shape_names_key_and_both_shapes(flat_weights, tmp_path):
  key = 'Mixed_6b/branch7x7_2/conv/kernel'
  assert flat_weights[key].shape == (1, 7, 128, 128)
  bad = dict(flat_weights)
  bad[key] = np.zeros((7, 1, 128, 128), np.float32)  # OIHW->HWIO transposed wrongly
  with pytest.raises(UserError) as info:
    inception.load_inception_params(_write(tmp_path / 'bad.npz', bad))
  message = str(info.value)
  assert key in message
  assert '(7, 1, 128, 128)' in message and '(1, 7, 128, 128)' in message


def test_missing_and_unexpected_keys(flat_weights, tmp_path):
  missing = dict(flat_weights)
  del missing['Mixed_7c/branch_pool/bn/var']
  with pytest.raises(UserError, match=r"lacks expected keys, 1: 'Mixed_7c/branch_pool/"
                     r"bn/var'"):
    inception.load_inception_params(_write(tmp_path / 'missing.npz', missing))

  extra = dict(flat_weights, **{'fc/kernel': np.zeros((2048, 1008), np.float32)})
  with pytest.raises(UserError, match="unexpected keys, 1: 'fc/kernel'"):
    inception.load_inception_params(_write(tmp_path / 'extra.npz', extra))


def test_missing_or_malformed_file(tmp_path):
  with pytest.raises(UserError, match='file not found: .*nowhere.npz'):
    inception.load_inception_params(tmp_path / 'nowhere.npz')
  text = tmp_path / 'weights.npz'
  text.write_text('not numpy')
  with pytest.raises(UserError, match=r'is not an \.npz file'):
    inception.load_inception_params(text)
  single = tmp_path / 'single.npy'
  np.save(single, np.zeros(3))
  with pytest.raises(UserError, match='single .npy array'):
    inception.load_inception_params(single)


def test_non_finite_weights_are_rejected(flat_weights, tmp_path):
  bad = dict(flat_weights)
  bad['Conv2d_1a_3x3/bn/var'] = np.full((32,), np.nan, np.float32)
  with pytest.raises(UserError, match="'Conv2d_1a_3x3/bn/var' has non-finite"):
    inception.load_inception_params(_write(tmp_path / 'nan.npz', bad))
