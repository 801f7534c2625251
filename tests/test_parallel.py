"""Sharding over a 4-device CPU mesh gives the single-device result.

JAX fixes the device count when it starts, so the check runs in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import os
import subprocess
import sys
import textwrap

from tests import helpers

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from dpgen_jax import methods, parallel, rng
    from dpgen_jax.privacy import clipping, mechanisms, sums
    from dpgen_jax.data.dataset import DataSpec
    from tests import helpers

    assert jax.device_count() == 4, jax.devices()
    mesh4, mesh1 = parallel.make_mesh(), parallel.make_mesh(jax.devices()[:1])
    data = np.random.default_rng(0)
    params = {"w": jnp.asarray(data.normal(size=(6, 3)), jnp.float32),
              "b": jnp.asarray(data.normal(size=(3,)), jnp.float32)}
    batch = {"x": jnp.asarray(data.normal(size=(16, 6)) * 4, jnp.float32),
             "y": jnp.asarray(data.integers(0, 3, 16), jnp.int32)}
    mask = jnp.asarray(np.arange(16) % 5 != 0)

    def loss(p, ex):
      logits = ex["x"] @ p["w"] + p["b"]
      return -jax.nn.log_softmax(logits)[ex["y"]]

    spec = clipping.ClippingSpec(clip_norm=0.3)
    for mb in (None, 2):
      run = lambda mesh: jax.jit(lambda p, b, m: sums.sharded_clipped_grad_sum(
          mesh, loss, p, b, m, spec, microbatch_size=mb))(params, batch, mask)
      s4, n4, _ = run(mesh4)
      s1, n1, _ = run(mesh1)
      ref = sums.clipped_grad_sum(loss, params, batch, mask, spec)[0]
      for a, b, c in zip(jax.tree.leaves(s4), jax.tree.leaves(s1), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(np.asarray(n4), np.asarray(n1), rtol=1e-5)
      assert len(s4["w"].sharding.device_set) == 4  # the sum is replicated on all devices

    # Noise is drawn once: every device holds the same noised sum.
    mech = mechanisms.GaussianSum(noise_multiplier=1.0, clip_norm=0.3, divisor=4.0)
    noised = jax.jit(lambda s, k: mech(s, k),
                     out_shardings=parallel.replicated(mesh4))(s4, rng.make_key(3))
    shards = [np.asarray(x.data) for x in noised["w"].addressable_shards]
    assert all(np.array_equal(shards[0], s) for s in shards[1:])

    # A whole DP-GAN D step on 4 devices equals the 1-device one.
    spec_d = DataSpec("mnist", "image", (28, 28, 1), 10, 60_000, 10_000)
    c = helpers.config("mnist_eps10", "smoke")
    a, b = methods.build(c, spec_d, mesh4), methods.build(c, spec_d, mesh1)
    state = a.init(rng.make_key(0))
    xb = {"x": jnp.asarray(data.uniform(size=(64, 28, 28, 1)), jnp.float32),
          "y": jnp.asarray(data.integers(0, 10, 64), jnp.int32),
          "mask": jnp.asarray(np.arange(64) < 41)}
    keys = (rng.make_key(1), rng.make_key(2))
    pa = jax.jit(a._d_update)(state, xb, *keys)[0]
    pb = jax.jit(b._d_update)(state, xb, *keys)[0]
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)
    print("OK")
""")


def test_sharded_clipped_sum_and_dp_step_equal_single_device():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=4").strip()
  proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                        env=env, cwd=helpers.ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith("OK")
