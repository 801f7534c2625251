"""The DP gradient of a discriminator over labelled real and fake rows.

One mechanism for every method whose discriminator sees private data through DP-SGD
(DP-GAN, DP-CGAN, CSL-GAN): the rows of a step are the padded Poisson batch of real
examples (`real`: x, y, mask) and a fixed number of generated ones (`fake`: x, y; they
are functions of the generator and public randomness, not data). Records are clipped,
summed, and the mechanism adds one Gaussian draw and divides by its constant:

  grouping='rows'          every real row and every fake row is one record (fakes first,
                           then reals, then padding to a multiple of `row_multiple`):
                           adding or removing a real example adds or removes one clipped
                           record, sensitivity C;
  grouping='pairs'         real row j and fake row j form one record (as many fakes as
                           padded real rows; a padding row drops its fake): sensitivity C;
  grouping='microbatches'  real rows fall into `num_groups` microbatches by ids drawn
                           i.i.d. per row from `group_key` (independent of the data), fakes
                           into `num_groups` fixed groups; each group's mean gradient is one
                           record: one example can flip its group's clipped mean, sensitivity
                           2C (sums.clipped_group_sum).

`mechanism.sensitivity_factor` must be the grouping's (checked), so the noise and the
event the ledger charges always describe the sum computed here.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from dpgen_jax.privacy import clipping, mechanisms, sums

PyTree = Any
GROUPINGS = {"rows": 1.0, "pairs": 1.0, "microbatches": 2.0}
# row_loss(params, x, y, is_real) -> loss of ONE row (x, y without a batch axis), or
# (loss, aux) with has_aux.
RowLoss = Callable[..., Any]


def mechanism(noise_multiplier: float, clip_norm: float, divisor: float,
              grouping: str = "rows") -> mechanisms.GaussianSum:
  """The Gaussian sum for `real_fake_gradient` with `grouping`: noise N(0, (sigma C)^2)
  on the clipped sum (as DP-SGD adds it), the sensitivity the grouping gives (C or 2C),
  divided by the method's data-independent constant."""
  if grouping not in GROUPINGS:
    raise ValueError(f"grouping must be one of {sorted(GROUPINGS)}, got {grouping!r}")
  # clip_norm may be traced (CSL-GAN's adaptive bound from public data): not cast.
  return mechanisms.GaussianSum(noise_multiplier=float(noise_multiplier), clip_norm=clip_norm,
                                sensitivity_factor=GROUPINGS[grouping], divisor=float(divisor))


def _pad_rows(tree: PyTree, rows: int) -> PyTree:
  return jax.tree.map(lambda x: jnp.concatenate(
      [x, jnp.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)]), tree)


def real_fake_gradient(row_loss: RowLoss, params: PyTree, real: dict, fake: dict,
                       noise_key: jax.Array, *, mechanism: mechanisms.GaussianSum,
                       clip: clipping.ClippingSpec, grouping: str = "rows",
                       num_groups: int | None = None, group_key: jax.Array | None = None,
                       mesh: jax.sharding.Mesh | None = None,
                       microbatch_size: int | None = None, row_multiple: int = 1,
                       strategy: str = "vmap", has_aux: bool = False):
  """The privatised D gradient (module docstring).

  Returns (gradient, norms, present, aux): the noised, divided sum; the unclipped norm
  of every record; which records exist (real rows / non-empty microbatches, fakes); the
  per-row aux of `row_loss` in the order rows were laid out (None without has_aux).
  """
  if grouping not in GROUPINGS:
    raise ValueError(f"grouping must be one of {sorted(GROUPINGS)}, got {grouping!r}")
  if mechanism.sensitivity_factor != GROUPINGS[grouping]:
    raise ValueError(f"grouping {grouping!r} has sensitivity factor {GROUPINGS[grouping]}, "
                     f"the mechanism says {mechanism.sensitivity_factor}")
  num_real, num_fake = real["mask"].shape[0], fake["x"].shape[0]

  if grouping == "pairs":
    if num_fake != num_real:
      raise ValueError(f"pairs need one fake per real row: {num_fake} fakes, {num_real} rows")
    batch = {"xr": real["x"], "yr": real["y"], "xf": fake["x"], "yf": fake["y"]}

    def loss(p, ex):
      lr = row_loss(p, ex["xr"], ex["yr"], True)
      lf = row_loss(p, ex["xf"], ex["yf"], False)
      if has_aux:
        return lr[0] + lf[0], (lr[1], lf[1])
      return lr + lf

    mask = real["mask"]
  else:
    batch = {"x": jnp.concatenate([fake["x"], real["x"]]),
             "y": jnp.concatenate([fake["y"], real["y"]]),
             "t": jnp.concatenate([jnp.zeros((num_fake,), bool), jnp.ones((num_real,), bool)])}
    mask = jnp.concatenate([jnp.ones((num_fake,), bool), real["mask"]])

    def loss(p, ex):
      return row_loss(p, ex["x"], ex["y"], ex["t"])

  if grouping == "microbatches":
    if num_groups is None or group_key is None or num_fake % num_groups:
      raise ValueError("microbatches need num_groups (dividing the number of fakes) and a "
                       "group_key")
    ids = jnp.concatenate([num_groups + jnp.arange(num_fake) // (num_fake // num_groups),
                           jax.random.randint(group_key, (num_real,), 0, num_groups)])
    plain = (lambda p, ex: loss(p, ex)[0]) if has_aux else loss
    total, norms, counts = sums.clipped_group_sum(plain, params, batch, mask, ids,
                                                  2 * num_groups, clip,
                                                  chunk_size=microbatch_size)
    return mechanism(total, noise_key), norms, counts > 0, None

  multiple = row_multiple * sums.split_multiple(mesh, microbatch_size)
  rows = -(-mask.shape[0] // multiple) * multiple
  batch, mask = _pad_rows(batch, rows), _pad_rows(mask, rows)
  total, norms, aux = sums.sharded_clipped_grad_sum(
      mesh, loss, params, batch, mask, clip, microbatch_size=microbatch_size,
      strategy=strategy, has_aux=has_aux)
  return mechanism(total, noise_key), norms, mask, aux
