"""Tests of the dpgan-revisit DCGAN (docs/methods/dpgan.md §1) and the PyTorch-default init."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.errors import ConfigError
from dpgen_jax.models import init
from dpgen_jax.models.dcgan import DCGANDiscriminator, DCGANGenerator, make_dcgan

LATENT = 128

# (resolution, channels, classes, small) -> spec totals (G, D), §1.2 and §1.3.
CONFIGS = {
    "mnist": ((28, 1, 10, True), (2_272_129, 1_724_289)),
    "celeba_small": ((32, 3, 2, True), (3_160_963, 2_635_649)),
    "celeba_large": ((32, 3, 2, False), (12_083_075, 11_033_473)),
}

# Per-layer (output H, output C, parameter count) from the layer tables, d = z = 128.
# The DC32 table gives no per-layer parameter counts; those entries are derived from
# its channel list and k = 4.
LAYERS = {
    "mnist": (
        {"deconv1_1": (4, 256, 524_544), "deconv1_2": (4, 256, 41_216),
         "deconv2": (7, 256, 1_179_904), "deconv3": (14, 128, 524_416),
         "deconv4": (28, 1, 2_049)},
        {"conv1_1": (14, 64, 1_088), "conv1_2": (14, 64, 10_304),
         "conv2": (7, 256, 524_544), "conv3": (4, 512, 1_180_160),
         "conv4": (1, 1, 8_193)},
    ),
    "celeba_small": (
        {"deconv1_1": (4, 256, 524_544), "deconv1_2": (4, 256, 8_448),
         "deconv2": (8, 256, 2_097_408), "deconv3": (16, 128, 524_416),
         "deconv4": (32, 3, 6_147)},
        {"conv1_1": (16, 64, 3_136), "conv1_2": (16, 64, 2_112),
         "conv2": (8, 256, 524_544), "conv3": (4, 512, 2_097_664),
         "conv4": (1, 1, 8_193)},
    ),
    "celeba_large": (
        {"deconv1_1": (2, 512, 128 * 512 * 16 + 512),
         "deconv1_2": (2, 512, 2 * 512 * 16 + 512),
         "deconv2": (4, 512, 1024 * 512 * 16 + 512),
         "deconv3": (8, 256, 512 * 256 * 16 + 256),
         "deconv4": (16, 128, 256 * 128 * 16 + 128),
         "deconv5": (32, 3, 128 * 3 * 16 + 3)},
        {"conv1_1": (16, 64, 3_136), "conv1_2": (16, 64, 2_112),
         "conv2": (8, 256, 524_544), "conv3": (4, 512, 2_097_664),
         "conv4": (2, 1024, 512 * 1024 * 16 + 1024),
         "conv5": (1, 1, 1024 * 16 + 1)},
    ),
}


def _inputs(resolution, channels, num_classes, batch, seed=0):
  rng = np.random.default_rng(seed)
  z = jnp.asarray(rng.standard_normal((batch, LATENT)), jnp.float32)
  x = jnp.asarray(rng.uniform(size=(batch, resolution, resolution, channels)),
                  jnp.float32)
  labels = jnp.asarray(rng.permutation(batch) % num_classes, jnp.int32)
  return z, x, labels


def _key(seed):
  # The 'rbg' PRNG compiles several times faster than threefry on CPU, and the
  # initialisers must work with any key type anyway.
  return jax.random.key(seed, impl="rbg")


def _init(net, seed, *args):
  return jax.jit(net.init)(_key(seed), *args)


def _count(tree):
  return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def _torch_fan_in(layer, kernel_shape):
  """PyTorch fan-in of a Flax (k, k, in, out) kernel: out·k·k for transposed convs."""
  kh, kw, cin, cout = kernel_shape
  return kh * kw * (cout if layer.startswith("deconv") else cin)


@functools.cache
def _abstract_models(name):
  """Parameter shapes and per-layer activation shapes via eval_shape (no FLOPs)."""
  (res, ch, ncls, small), _ = CONFIGS[name]
  g, d = make_dcgan(res, ch, ncls, small=small)
  z, x, labels = _inputs(res, ch, ncls, batch=2)
  out = []
  for net, args in ((g, (z, labels)), (d, (x, labels))):
    params = jax.eval_shape(net.init, _key(0), *args)
    _, state = jax.eval_shape(
        lambda p, net=net, args=args: net.apply(
            p, *args, capture_intermediates=True, mutable=["intermediates"]),
        params)
    out.append((params["params"], state["intermediates"]))
  return out


@pytest.fixture(scope="module")
def mnist():
  """The paper's MNIST networks (d = z = 128) with initial parameters."""
  g, d = make_dcgan(28, 1, 10)
  z, x, labels = _inputs(28, 1, 10, batch=1)
  return g, d, _init(g, 1, z, labels), _init(d, 2, x, labels)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_counts_match_spec(name):
  (g_params, _), (d_params, _) = _abstract_models(name)
  expected_g, expected_d = CONFIGS[name][1]
  assert _count(g_params) == expected_g
  assert _count(d_params) == expected_d


@pytest.mark.parametrize("name", list(CONFIGS))
def test_layer_tables(name):
  """Every layer has the table's output spatial size, channels and parameter count."""
  (g_params, g_acts), (d_params, d_acts) = _abstract_models(name)
  for params, acts, table in ((g_params, g_acts, LAYERS[name][0]),
                              (d_params, d_acts, LAYERS[name][1])):
    assert set(params) == set(table)
    for layer, (size, features, count) in table.items():
      (out,) = acts[layer]["__call__"]
      assert out.shape == (2, size, size, features), layer
      assert _count(params[layer]) == count, layer
  (res, ch, _, _), _ = CONFIGS[name]
  assert g_acts["__call__"][0].shape == (2, res, res, ch)
  assert d_acts["__call__"][0].shape == (2,)


def test_discriminator_width_is_separate_from_generator_width():
  g, d = make_dcgan(28, 1, 10, d_width=32)
  assert g.width == 128 and d.width == 32
  _, x, labels = _inputs(28, 1, 10, batch=1)
  params = jax.eval_shape(d.init, _key(0), x, labels)["params"]
  assert params["conv1_1"]["kernel"].shape == (4, 4, 1, 16)
  assert params["conv4"]["kernel"].shape == (4, 4, 128, 1)


def _saturated(g_params):
  """Scales G's output layer so that tanh saturates, to probe the [0, 1] output range."""
  params = jax.tree.map(lambda a: a, g_params)  # a copy to edit
  last = max((k for k in params["params"] if k.startswith("deconv")),
             key=lambda k: int(k[len("deconv"):].split("_")[0]))
  params["params"][last] = jax.tree.map(lambda a: 1e3 * a, params["params"][last])
  return params


def _torch_like_params(net, seed, *args):
  """U(-b, b) parameters with PyTorch fan-ins, drawn by numpy.

  For tests about shapes and values only: it skips compiling the PRNG, which dominates
  their run time on CPU. The real initialiser is tested on the MNIST networks.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(net.init, _key(0), *args)["params"]
  params = {}
  for layer, p in shapes.items():
    bound = 1.0 / math.sqrt(_torch_fan_in(layer, p["kernel"].shape))
    params[layer] = {name: jnp.asarray(rng.uniform(-bound, bound, leaf.shape),
                                       jnp.float32)
                     for name, leaf in p.items()}
  return {"params": params}


@pytest.mark.parametrize("batch,use_jit", [(1, False), (3, True)])
def test_mnist_output_shapes_and_range(mnist, batch, use_jit):
  g, d, g_params, d_params = mnist
  g_apply, d_apply = (jax.jit(g.apply), jax.jit(d.apply)) if use_jit else (
      g.apply, d.apply)
  z, _, labels = _inputs(28, 1, 10, batch)
  images = g_apply(g_params, z, labels)
  assert images.shape == (batch, 28, 28, 1)
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  saturated = g_apply(_saturated(g_params), z, labels)
  assert float(saturated.min()) >= 0.0 and float(saturated.max()) <= 1.0
  assert float(saturated.min()) < 0.01 and float(saturated.max()) > 0.99
  logits = d_apply(d_params, images, labels)
  assert logits.shape == (batch,)  # (1,) for one example, never a scalar
  assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("small", [True, False])
def test_celeba_output_shapes_and_range(small):
  g, d = make_dcgan(32, 3, 2, small=small, g_width=8, d_width=8)
  z, x, labels = _inputs(32, 3, 2, batch=2)
  g_params = _torch_like_params(g, 3, z, labels)
  images = g.apply(_saturated(g_params), z, labels)
  assert images.shape == (2, 32, 32, 3)
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  assert float(images.min()) < 0.01 and float(images.max()) > 0.99
  logits = d.apply(_torch_like_params(d, 4, x, labels), images, labels)
  assert logits.shape == (2,)
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_labels_condition_both_networks(mnist):
  g, d, g_params, d_params = mnist
  z, x, _ = _inputs(28, 1, 10, batch=1)
  zero, three = jnp.array([0]), jnp.array([3])
  assert not np.allclose(g.apply(g_params, z, zero), g.apply(g_params, z, three))
  assert not np.allclose(d.apply(d_params, x, zero), d.apply(d_params, x, three))


def test_bad_configurations_raise_clear_errors():
  with pytest.raises(ValueError, match="unsupported resolution 64"):
    make_dcgan(64, 3, 2)
  with pytest.raises(ConfigError, match="resolution"):
    make_dcgan(64, 3, 2)
  with pytest.raises(ValueError, match="even"):
    make_dcgan(28, 1, 10, d_width=15)
  with pytest.raises(ValueError, match="unsupported resolution"):
    jax.eval_shape(DCGANGenerator(resolution=16).init, _key(0),
                   jnp.zeros((1, LATENT)), jnp.zeros((1,), jnp.int32))
  with pytest.raises(ValueError, match="x must have shape"):
    jax.eval_shape(DCGANDiscriminator().init, _key(0),
                   jnp.zeros((1, 32, 32, 1)), jnp.zeros((1,), jnp.int32))


# --- PyTorch-default initialisation ----------------------------------------------------


def _assert_torch_uniform(values, fan_in, what):
  values = np.asarray(values).ravel()
  bound = 1.0 / math.sqrt(fan_in)
  assert np.abs(values).max() <= bound, what
  if values.size >= 1000:
    # Close to the bound and with the std of U(-b, b): rules out other fan-in rules
    # and other distributions.
    assert np.abs(values).max() >= 0.99 * bound, what
    np.testing.assert_allclose(values.std(), bound / math.sqrt(3), rtol=0.05,
                               err_msg=what)
    assert abs(values.mean()) < 0.05 * bound, what
  elif values.size >= 64:
    assert np.abs(values).max() >= 0.9 * bound, what


def test_initial_weights_have_pytorch_default_bounds(mnist):
  g, d, g_params, d_params = mnist
  for params in (g_params, d_params):
    for layer, p in params["params"].items():
      fan_in = _torch_fan_in(layer, p["kernel"].shape)
      _assert_torch_uniform(p["kernel"], fan_in, f"{layer}/kernel")
      _assert_torch_uniform(p["bias"], fan_in, f"{layer}/bias")


def test_conv_transpose_fan_in_uses_output_channels(mnist):
  """G's last layer (128 -> 1, k4): PyTorch bound 1/sqrt(1·16) = 0.25, not 1/sqrt(128·16)."""
  kernel = mnist[2]["params"]["deconv4"]["kernel"]
  assert kernel.shape == (4, 4, 128, 1)
  assert 0.24 <= float(jnp.abs(kernel).max()) <= 0.25
  # The label branch (10 -> 256, k4): 1/sqrt(256·16) = 1/64, not 1/sqrt(10·16).
  kernel = mnist[2]["params"]["deconv1_2"]["kernel"]
  assert 0.99 / 64 <= float(jnp.abs(kernel).max()) <= 1 / 64


def test_dense_init_and_in_features_check():
  dense = init.torch_dense(50, 70)
  params = dense.init(_key(0), jnp.zeros((1, 50)))["params"]
  assert params["kernel"].shape == (50, 70)
  _assert_torch_uniform(params["kernel"], 50, "dense kernel")
  _assert_torch_uniform(params["bias"], 50, "dense bias")
  with pytest.raises(ValueError, match="in_features=3"):
    jax.eval_shape(init.torch_conv(3, 8, 3).init, _key(0), jnp.zeros((1, 5, 5, 4)))
  with pytest.raises(ValueError, match="at most kernel_size - 1"):
    init.torch_conv_transpose(8, 3, 1, 3)


def _numpy_conv(x, kernel, bias, stride, padding):
  """Direct PyTorch Conv2d semantics: zero-pad p on both sides, cross-correlate (NHWC)."""
  k = kernel.shape[0]
  xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  out_size = (xp.shape[1] - k) // stride + 1
  out = np.zeros((x.shape[0], out_size, out_size, kernel.shape[-1]))
  for i in range(out_size):
    for j in range(out_size):
      patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
      out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
  return out + bias


# (input size, k, s, p) of the tables' layers.
CONV_CASES = [(28, 4, 2, 1), (7, 3, 2, 1), (8, 4, 2, 1), (4, 4, 1, 0), (2, 4, 2, 1)]
CONV_T_CASES = [(1, 4, 1, 0), (1, 4, 2, 1), (4, 3, 2, 1), (7, 4, 2, 1), (16, 4, 2, 1)]


@pytest.mark.parametrize("size,k,s,p", CONV_CASES)
def test_torch_conv_matches_pytorch_conv2d(size, k, s, p):
  rng = np.random.default_rng(size + k)
  x = rng.standard_normal((2, size, size, 2)).astype(np.float32)
  kernel = rng.standard_normal((k, k, 2, 3)).astype(np.float32)
  bias = rng.standard_normal(3).astype(np.float32)
  y = init.torch_conv(2, 3, k, s, p).apply(
      {"params": {"kernel": kernel, "bias": bias}}, x)
  out_size = init.conv_output_size(size, k, s, p)
  assert y.shape == (2, out_size, out_size, 3)
  np.testing.assert_allclose(y, _numpy_conv(x, kernel, bias, s, p),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size,k,s,p", CONV_T_CASES)
def test_torch_conv_transpose_matches_pytorch_conv_transpose2d(size, k, s, p):
  """Size (i-1)s-2p+k, and the map is the adjoint of Conv2d(k, s, p) (PyTorch's definition)."""
  cin, cout = 3, 2
  rng = np.random.default_rng(size + k)
  x = rng.standard_normal((1, size, size, cin)).astype(np.float32)
  kernel = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
  y = init.torch_conv_transpose(cout, k, s, p, use_bias=False).apply(
      {"params": {"kernel": kernel}}, x)
  out_size = init.conv_transpose_output_size(size, k, s, p)
  assert y.shape == (1, out_size, out_size, cout)

  # PyTorch's ConvTranspose2d is the adjoint of Conv2d(cout -> cin, k, s, p); the Flax
  # kernel (transpose_kernel=False) is the PyTorch one flipped spatially.
  conv_kernel = kernel[::-1, ::-1].transpose(0, 1, 3, 2)  # (k, k, cout, cin)
  probe = rng.standard_normal(y.shape)
  conv_of_probe = _numpy_conv(probe, conv_kernel, 0.0, s, p)
  assert conv_of_probe.shape == x.shape
  np.testing.assert_allclose(np.vdot(np.asarray(y, np.float64), probe),
                             np.vdot(x, conv_of_probe), rtol=1e-4)


# --- Per-example gradients (what DP-SGD on D needs) -------------------------------------


def test_vmap_grad_per_example_matches_loop(mnist):
  _, d, _, params = mnist
  _, x, labels = _inputs(28, 1, 10, batch=3, seed=1)

  def example_loss(params, x_i, label_i):
    logits = d.apply(params, x_i[None], label_i[None])
    assert logits.shape == (1,)
    return jax.nn.softplus(-logits).sum()

  per_example = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))(
      params, x, labels)
  single_grad = jax.jit(jax.grad(example_loss))
  for i in range(x.shape[0]):
    single = single_grad(params, x[i], labels[i])
    jax.tree.map(
        lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6),
        per_example, single)
  # The examples really differ, so the check above is not vacuous.
  leaf = per_example["params"]["conv2"]["kernel"]
  assert not np.allclose(leaf[0], leaf[1])


# --- Discriminator label modes (dpgan.d_label) ------------------------------------------


def _small_d(mode, seed=0, batch=3):
  _, d = make_dcgan(28, 1, 10, g_width=4, d_width=8, d_label=mode)
  _, x, labels = _inputs(28, 1, 10, batch=batch, seed=seed)
  return d, x, labels, _init(d, seed, x, labels)


def test_planes_label_branch_is_a_per_class_vector_inside_the_image():
  """What 'embedding' keeps of 'planes': away from the border, the convolution of the
  one-hot planes is sum over the k x k taps of W[., ., y, :] plus the bias."""
  d, x, labels, params = _small_d("planes")
  _, state = d.apply(params, x, labels, capture_intermediates=True, mutable=["intermediates"])
  (branch,) = state["intermediates"]["conv1_2"]["__call__"]
  w, b = (np.asarray(params["params"]["conv1_2"][k]) for k in ("kernel", "bias"))
  for i, y in enumerate(np.asarray(labels)):
    want = w[:, :, y, :].sum(axis=(0, 1)) + b
    np.testing.assert_allclose(np.asarray(branch[i, 1:-1, 1:-1]),
                               np.broadcast_to(want, (12, 12, 4)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(branch[i, 0, 0]), want)  # the border differs


def test_embedding_mode_broadcasts_one_learned_vector_per_class():
  d, x, labels, params = _small_d("embedding")
  p = params["params"]
  assert "conv1_2" not in p and p["label_embed"]["embedding"].shape == (10, 4)
  assert p["conv1_1"]["kernel"].shape == (4, 4, 1, 4)  # the image branch keeps d/2
  # Same first layer as 'planes' but the label branch is the embedding row, everywhere.
  _, state = d.apply(params, x, labels, capture_intermediates=True, mutable=["intermediates"])
  (first,) = state["intermediates"]["conv2"]["__call__"]
  e = np.asarray(p["label_embed"]["embedding"])
  conv1 = init.torch_conv(1, 4, 4, 2, 1).apply({"params": p["conv1_1"]}, x)
  leaky = lambda v: np.where(v > 0, v, 0.2 * v)
  h = np.concatenate([leaky(np.asarray(conv1)),
                      leaky(np.broadcast_to(e[np.asarray(labels)][:, None, None, :],
                                            (3, 14, 14, 4)))], axis=-1)
  want = init.torch_conv(8, 16, 4, 2, 1).apply({"params": p["conv2"]}, h)
  np.testing.assert_allclose(np.asarray(first), np.asarray(want), rtol=1e-5, atol=1e-5)
  # Initialised like the planes branch's interior: a sum of 17 U(-b, b), b = 1/sqrt(160).
  big = make_dcgan(28, 1, 10, d_width=128, d_label="embedding")[1]
  _, bx, bl = _inputs(28, 1, 10, batch=1)
  table = np.asarray(_init(big, 5, bx, bl)["params"]["label_embed"]["embedding"])
  np.testing.assert_allclose(table.std(), math.sqrt(17 / 3) / math.sqrt(160), rtol=0.08)


def test_projection_logit_difference_is_the_embedding_difference_times_pooled_features():
  d, x, labels, params = _small_d("projection", batch=1)
  p = params["params"]
  assert "conv1_2" not in p and p["conv1_1"]["kernel"].shape == (4, 4, 1, 8)
  assert p["label_embed"]["embedding"].shape == (10, 32)  # 4d channels enter conv4
  _, state = d.apply(params, x, labels, capture_intermediates=True, mutable=["intermediates"])
  (pre,) = state["intermediates"]["conv3"]["__call__"]
  pooled = np.where(pre > 0, pre, 0.2 * pre).sum(axis=(1, 2))[0]  # LeakyReLU, sum-pool
  e = np.asarray(p["label_embed"]["embedding"])
  l3, l7 = (float(d.apply(params, x, jnp.array([c]))[0]) for c in (3, 7))
  np.testing.assert_allclose(l3 - l7, float((e[3] - e[7]) @ pooled), rtol=1e-4, atol=1e-5)
  # Without the embedding the logit is the unconditional conv4 output.
  zero = jax.tree.map(lambda a: a, params)
  zero["params"]["label_embed"]["embedding"] = jnp.zeros_like(e)
  assert float(d.apply(zero, x, jnp.array([3]))[0]) == pytest.approx(
      float(d.apply(zero, x, jnp.array([7]))[0]), abs=1e-6)
  # PyTorch Linear init with conv4's fan-in (32 channels x 4 x 4).
  assert np.abs(e).max() <= 1 / math.sqrt(32 * 16)


@pytest.mark.parametrize("mode", ["planes", "embedding", "projection"])
def test_every_label_mode_is_ghost_clippable(mode):
  """The D stays per-example clippable: ghost clipping gives vmap's clipped sum."""
  from dpgen_jax.privacy import clipping, sums
  d, x, labels, params = _small_d(mode, batch=5)

  def loss(p, ex):
    return jax.nn.softplus(-d.apply({"params": p}, ex["x"][None], ex["y"][None])[0])

  batch, mask = {"x": x, "y": labels}, jnp.array([True, True, True, True, False])
  spec = clipping.ClippingSpec(clip_norm=0.05)
  totals = [sums.clipped_grad_sum(loss, params["params"], batch, mask, spec,
                                 strategy=s)[0] for s in ("vmap", "ghost")]
  for a, b in zip(jax.tree.leaves(totals[0]), jax.tree.leaves(totals[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_unknown_label_mode_is_a_clear_error():
  with pytest.raises(ConfigError, match="d_label must be one of .*'onehot'"):
    make_dcgan(28, 1, 10, d_label="onehot")


# --- Generator normalisation (dpgan.g_norm) ----------------------------------------------


def test_batch_stat_norm_by_hand():
  from dpgen_jax.models.dcgan import BatchStatNorm
  # Channel 0 takes 1, 2, 3, 6 (mean 3, variance 3.5); channel 1 is constant 5.
  x = jnp.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 2, 1)
  x = jnp.concatenate([x, jnp.full_like(x, 5.0)], axis=-1)
  params = {"params": {"scale": jnp.array([2.0, 1.0]), "bias": jnp.array([0.5, -1.0])}}
  y = np.asarray(BatchStatNorm().apply(params, x))
  want0 = (np.array([1.0, 2.0, 3.0, 6.0]) - 3.0) / np.sqrt(3.5 + 1e-5) * 2.0 + 0.5
  np.testing.assert_allclose(y[..., 0].ravel(), want0, rtol=1e-5)
  np.testing.assert_allclose(y[..., 1].ravel(), -1.0, atol=1e-6)  # (5 - 5) * 1 - 1


def test_batch_norm_generator_layers_and_batch_dependence():
  g, _ = make_dcgan(28, 1, 10, g_width=4, d_width=4, latent_dim=LATENT, g_norm="batch")
  z, _, labels = _inputs(28, 1, 10, batch=4)
  params = _init(g, 0, z, labels)
  p = params["params"]
  # norm1 after the concatenated first layer (2 x 2d channels), then 2d and d.
  assert {k: p[k]["scale"].shape for k in p if k.startswith("norm")} == {
      "norm1": (16,), "norm2": (8,), "norm3": (4,)}
  out = g.apply(params, z, labels)
  assert out.shape == (4, 28, 28, 1)
  # Batch statistics: the first image depends on the rest of the batch ...
  other = g.apply(params, z.at[1:].set(-z[1:]), labels)
  assert not np.allclose(np.asarray(out[0]), np.asarray(other[0]))
  # ... and without normalisation it does not.
  plain, _ = make_dcgan(28, 1, 10, g_width=4, d_width=4, latent_dim=LATENT)
  pp = _init(plain, 0, z, labels)
  np.testing.assert_allclose(np.asarray(plain.apply(pp, z, labels)[0]),
                             np.asarray(plain.apply(pp, z.at[1:].set(-z[1:]), labels)[0]),
                             rtol=1e-6)
  assert not any(k.startswith("norm") for k in pp["params"])


def test_unknown_generator_norm_is_a_clear_error():
  with pytest.raises(ConfigError, match="g_norm must be one of .*'layer'"):
    make_dcgan(28, 1, 10, g_norm="layer")
