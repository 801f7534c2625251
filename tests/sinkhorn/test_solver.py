"""The geomloss-style solver: reference values, gradients, ott-jax agreement, masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpgen_jax.sinkhorn import costs, loss, solver
from tests.sinkhorn import reference

# Everything under jit: op-by-op (eager) evaluation compiles every small op separately
# and takes ~10x longer than compiling the whole function once.
_div = jax.jit(solver.sinkhorn_divergence, static_argnums=2)
_semi = jax.jit(loss.semi_debiased_loss, static_argnums=4)
_full = jax.jit(loss.full_divergence_loss, static_argnums=3)


def _vg(fn, **kw):
  return jax.jit(jax.value_and_grad(fn, **kw))


def _grad(fn, **kw):
  return jax.jit(jax.grad(fn, **kw))


def _points(n, d, seed, low=-1.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, (n, d)).astype(np.float32)


def _cfg(kind="l1_sq_l2", blur=0.05, exponent=1.0, dim=5, **kw):
  loops = solver.loop_iterations_for(costs.max_feature_diameter(dim, 0, 0.0), blur, exponent)
  return solver.SinkhornConfig(blur=blur, exponent=exponent, cost=kind, mixture=kw.pop("m", 1.0),
                               max_loop_iterations=loops, **kw)


@pytest.mark.parametrize("diam,blur,p,expected", [
    (73.4, 0.05, 1.0, 13), (112.9, 5.0, 2.0, 7), (3.0, 0.05, 1.0, 8), (0.04, 0.05, 1.0, 2)])
def test_schedule_lengths_are_geomloss(diam, blur, p, expected):
  # dp_sinkhorn.md §2.4: 13 values for MNIST's bound, 7 for CelebA's.
  assert len(solver.geomloss_schedule(diam, blur, p)) == expected
  cfg = solver.SinkhornConfig(blur=blur, exponent=p, max_loop_iterations=16)
  eps, active = solver.epsilon_schedule(jnp.asarray(diam), cfg)
  assert int(active.sum()) == expected
  np.testing.assert_allclose(np.asarray(eps)[:expected], solver.geomloss_schedule(diam, blur, p),
                             rtol=1e-5)


def test_mnist_and_celeba_loop_counts_from_the_feature_bound():
  d_mnist = costs.max_feature_diameter(784, 10, 15.0)
  d_celeba = costs.max_feature_diameter(3072, 2, 15.0)
  assert d_mnist == pytest.approx(73.39, abs=0.01) and d_celeba == pytest.approx(112.86, abs=0.01)
  assert solver.loop_iterations_for(d_mnist, 0.05, 1.0) == 13
  assert solver.loop_iterations_for(d_celeba, 5.0, 2.0) == 7


@pytest.mark.parametrize("kind,blur,p,n,m", [
    ("l1_sq_l2", 0.05, 1.0, 7, 9), ("sq_l2", 0.5, 2.0, 6, 4), ("l1_sq_l2", 0.3, 1.0, 5, 8)])
def test_matches_the_float64_reference_value_and_gradient(kind, blur, p, n, m):
  x, y = _points(n, 5, 0), _points(m, 5, 1, -0.5, 1.0)
  cfg = _cfg(kind, blur, p)
  value, grad = _vg(lambda a: solver.entropic_ot(a, jnp.asarray(y), cfg))(
      jnp.asarray(x))
  ref_value, ref_grad, loops = reference.ot(x, y, kind, 1.0, blur, p)
  assert loops <= cfg.max_loop_iterations
  assert float(value) == pytest.approx(ref_value, rel=1e-5, abs=1e-5)
  np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,blur,p", [("l1_sq_l2", 0.05, 1.0), ("sq_l2", 0.5, 2.0)])
def test_full_divergence_matches_the_float64_reference(kind, blur, p):
  """geomloss's debiased divergence (the CelebA loss): value and gradient w.r.t. x."""
  x, y = _points(6, 5, 20), _points(8, 5, 21, -0.5, 1.0)
  cfg = _cfg(kind, blur, p)
  value, grad = _vg(lambda a: solver.sinkhorn_divergence(a, jnp.asarray(y), cfg))(
      jnp.asarray(x))
  ref_value, ref_grad = reference.divergence(x, y, kind, 1.0, blur, p)
  assert float(value) == pytest.approx(ref_value, rel=1e-4, abs=1e-5)
  np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-4, atol=1e-5)


def test_identical_sets_give_zero_divergence_which_grows_with_a_shift():
  x = _points(12, 6, 2)
  for kind, blur, p in (("sq_l2", 0.05, 1.0), ("l1_sq_l2", 0.05, 1.0), ("sq_l2", 0.5, 2.0)):
    cfg = _cfg(kind, blur, p, dim=6)
    values = [float(_div(jnp.asarray(x), jnp.asarray(x + shift), cfg))
              for shift in (0.0, 0.1, 0.3, 0.6)]
    assert abs(values[0]) < 1e-5
    assert values[0] < values[1] < values[2] < values[3]
    if kind == "sq_l2":  # a translation: W2^2 = d * shift^2 in the small-blur limit
      assert values[2] == pytest.approx(6 * 0.3 ** 2, rel=0.05)


def test_semi_debiased_loss_of_identical_sets_is_the_small_entropic_bias():
  x = jnp.asarray(_points(10, 6, 3))
  cfg = _cfg(dim=6)
  mask = jnp.ones(10, bool)
  same = float(_semi(x, x, x, mask, cfg))
  # 2 OT(X, X) - OT(X, X) = OT(X, X) <= eps log n for distinct points.
  assert 0.0 <= same <= cfg.epsilon * np.log(10) + 1e-5
  shifted = [float(_semi(x, x, x + s, mask, cfg)) for s in (0.2, 0.5)]
  assert same < shifted[0] < shifted[1]


def test_gradients_are_finite_with_tied_rows():
  """The self term shares rows between its arguments: L1 sub-gradient 0 at ties."""
  x = _points(8, 5, 4)
  second = np.concatenate([x[2:], _points(2, 5, 5)])
  cfg = _cfg()
  grad = _grad(lambda a, b: solver.entropic_ot(a, b, cfg), argnums=(0, 1))(
      jnp.asarray(x), jnp.asarray(second))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grad)
  _, ref_grad, _ = reference.ot(x, second, "l1_sq_l2", 1.0, 0.05, 1.0)
  np.testing.assert_allclose(np.asarray(grad[0]), ref_grad, rtol=1e-4, atol=1e-5)
  full = _grad(lambda a: loss.semi_debiased_loss(
      a, jnp.concatenate([a[2:], jnp.asarray(second[6:])]), jnp.asarray(_points(9, 5, 6)),
      jnp.ones(9, bool), cfg))(jnp.asarray(x))
  assert np.all(np.isfinite(np.asarray(full)))


def test_padded_real_rows_change_nothing():
  x, y = jnp.asarray(_points(6, 5, 7)), _points(4, 5, 8)
  cfg = _cfg()
  mask = jnp.asarray([True] * 4 + [False] * 5)

  padded = _vg(lambda a, rows: loss.semi_debiased_loss(a, a, rows, mask, cfg))
  exact = _vg(lambda a: loss.semi_debiased_loss(
      a, a, jnp.asarray(y), jnp.ones(4, bool), cfg))(x)
  for garbage in (0.0, 37.0):
    value, grad = padded(x, jnp.asarray(np.concatenate([y, np.full((5, 5), garbage,
                                                                  np.float32)])))
    assert float(value) == pytest.approx(float(exact[0]), rel=1e-6)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(exact[1]), rtol=1e-5, atol=1e-7)
  # Full divergence, too.
  div = lambda rows, m: _div(x, jnp.asarray(rows), cfg, y_mask=m)
  rows = np.concatenate([y, np.full((5, 5), 9.0, np.float32)])
  assert float(div(rows, mask)) == pytest.approx(float(div(y, jnp.ones(4, bool))), rel=1e-6)


def test_an_empty_real_batch_gives_a_finite_data_free_loss():
  x = jnp.asarray(_points(6, 5, 9))
  cfg = _cfg()
  rows = jnp.asarray(_points(5, 5, 10))
  none = jnp.zeros(5, bool)
  value, grad = _vg(lambda a: loss.semi_debiased_loss(a, a, rows, none, cfg))(x)
  self_only = _vg(lambda a: -solver.entropic_ot(a, a, cfg))(x)
  assert float(value) == pytest.approx(float(self_only[0]), rel=1e-6)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(self_only[1]), rtol=1e-5, atol=1e-7)
  assert float(_full(x, rows, none, cfg)) == 0.0


# ---- ott-jax, on what both compute ----


def test_fixed_epsilon_iterations_equal_ott_parallel_updates_with_momentum_half():
  """geomloss's averaged symmetric update = ott's parallel dual updates with momentum 0.5
  (ott's potentials are geomloss's plus eps * log(weights))."""
  from ott.geometry import geometry
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import acceleration, sinkhorn
  x, y = jnp.asarray(_points(7, 5, 11)), jnp.asarray(_points(9, 5, 12))
  eps, k = 0.7, 12
  c = costs.pairwise_cost(x, y, "l1_sq_l2", 1.0)
  log_a, log_b = jnp.full(7, -jnp.log(7.0)), jnp.full(9, -jnp.log(9.0))
  f, g = jax.jit(solver.cross_potentials)(c, log_a, log_b, jnp.full(k, eps), jnp.ones(k, bool))
  f0, g0 = solver.softmin(eps, c, log_b), solver.softmin(eps, c.T, log_a)

  @jax.jit
  def ott_potentials(c, f0, g0):
    problem = linear_problem.LinearProblem(geometry.Geometry(cost_matrix=c, epsilon=eps),
                                           a=jnp.exp(log_a), b=jnp.exp(log_b))
    return sinkhorn.Sinkhorn(lse_mode=True, parallel_dual_updates=True,
                             momentum=acceleration.Momentum(value=0.5), min_iterations=k,
                             max_iterations=k, inner_iterations=1, threshold=-1.0)(
        problem, init=(f0 + eps * log_a, g0 + eps * log_b))

  out = ott_potentials(c, f0, g0)
  assert int(out.n_iters) == k
  np.testing.assert_allclose(np.asarray(out.f - eps * log_a), np.asarray(f), atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.g - eps * log_b), np.asarray(g), atol=1e-5)


def test_converged_value_divergence_and_gradients_equal_ott():
  from ott.geometry import costs as ott_costs, pointcloud
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn
  from ott.tools import sinkhorn_divergence
  x, y = jnp.asarray(_points(7, 5, 13)), jnp.asarray(_points(9, 5, 14))
  cfg = solver.SinkhornConfig(blur=1.0, exponent=1.0, cost="sq_l2", max_loop_iterations=400,
                              epsilon_scaling=False)
  solve = dict(threshold=1e-7, max_iterations=5000)

  def ott_ot(a):
    geom = pointcloud.PointCloud(a, y, cost_fn=ott_costs.SqEuclidean(), epsilon=1.0,
                                 batch_size=None)
    return sinkhorn.Sinkhorn(**solve)(linear_problem.LinearProblem(geom)).kl_reg_cost

  def ott_div(a):
    return sinkhorn_divergence.sinkdiv(a, y, cost_fn=ott_costs.SqEuclidean(), epsilon=1.0,
                                       solve_kwargs=solve)[0]

  for ours, theirs in ((lambda a: solver.entropic_ot(a, y, cfg), ott_ot),
                       (lambda a: solver.sinkhorn_divergence(a, y, cfg), ott_div)):
    v1, g1 = _vg(ours)(x)
    v2, g2 = _vg(theirs)(x)
    assert float(v1) == pytest.approx(float(v2), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), atol=1e-5)
