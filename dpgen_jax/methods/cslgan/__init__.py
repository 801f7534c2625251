"""CSL-GAN (twosixlabs/csl-gan): configurable DP GAN with gc / is modes (cslgan.md).

One `train_step` = one D step (the accounted unit) on a Poisson batch of expected
size B = train.batch_size (q = B / N), then, every cslgan.n_d_steps D steps, one G
step (post-processing of the privatised D).

Privacy guarantee (privacy.mode = 'gc'): each D step is the Poisson-subsampled
Gaussian mechanism with noise multiplier sigma on D's clipped gradient sum
(losses.py); the noised mean samples (if any) are a one-time Poisson-subsampled
Gaussian release charged to the ledger once; everything else (G steps, gradient
penalty on public data / mean samples, adaptive thresholds, the G-step gate computed
on public data / mean samples) is post-processing. With data.sampling = 'shuffle'
(upstream's loader) the accounting still assumes Poisson: NOT a guarantee.
privacy.mode = 'is' (immediate sensitivity) is NOT formally DP: its epsilon is
printed everywhere as "approximate, not formally DP".

Deviations from upstream (choices of cslgan.md §7): D's fake labels come from the
prior, not from the real batch; q uses the true N; mean-sample sensitivity uses the
true image shape; the G-step gate never reads the private batch under DP.
"""

import dp_accounting

from dpgen_jax import errors
from dpgen_jax.data import registry
from dpgen_jax.methods import protocol
from dpgen_jax.methods.cslgan import losses as dp
from dpgen_jax.methods.cslgan.losses import mean_sample_rate
from dpgen_jax.methods.cslgan.method import CSLGAN
from dpgen_jax.models import cslgan_nets as nets
from dpgen_jax.privacy import immediate_sensitivity

IS_CAVEAT = immediate_sensitivity.CAVEAT
MODES = ("gc", "is")
CLIP_MODES = ("standard", "constant-pl", "adaptive", "adaptive-pl")


def sampling_rate(config, num_examples: int) -> float:
  return config.train.batch_size / num_examples


def declaration(config, num_examples: int, sigma: float) -> protocol.PrivacyDeclaration:
  """One D step: PoissonSampled(B/N, Gaussian(sigma)) from the gc mechanism (C_tot scales
  the noise and the sensitivity alike); for 'is' the nominal DP-SGD event, with the
  caveat. The noised mean samples, if any, are a one-time release."""
  q = sampling_rate(config, num_examples)
  if config.privacy.mode == "is":
    step = immediate_sensitivity.nominal_event(sigma, q)
  else:
    step = dp.gc_mechanism(float(sigma), 1.0, float(config.train.batch_size)).poisson_event(q)
  one_time = tuple(fixed_events(config, num_examples))
  return protocol.PrivacyDeclaration(
      step_event=step, one_time=one_time, sampling_rate=q,
      caveat=IS_CAVEAT if config.privacy.enabled and config.privacy.mode == "is" else None,
      fields=lambda: privacy_fields(config, num_examples, sigma))


def fixed_events(config, num_examples: int) -> list:
  """The noised mean samples' one-time cost (cslgan.md §3.6), if any."""
  g = config.cslgan
  if not g.num_mean_samples:
    return []
  spec = registry.static_spec(config.data)
  k = spec.num_classes if dp.conditional(config) else 1
  one = dp.mean_sample_event(g.mean_sample_noise_std, g.mean_sample_size, spec.example_shape,
                            mean_sample_rate(config, num_examples), 1, 1).event
  return [(one, g.num_mean_samples * k)]


def privacy_fields(config, num_examples: int, sigma: float) -> dict:
  p, g = config.privacy, config.cslgan
  fields = dict(
      sampling_rate=sampling_rate(config, num_examples),
      noise_multiplier=sigma if p.enabled else None,
      clip_norm=p.clip_norm if p.mode == "gc" else None,
      privacy_mode=p.mode if p.enabled else "none",
      grad_clip_mode=p.grad_clip_mode if p.mode == "gc" else None,
      grad_clip_split=bool(p.grad_clip_split) if p.mode == "gc" else None,
      gradient_divisor=config.train.batch_size,
      conditional_arch=g.conditional_arch, model=g.model,
      num_train_examples=num_examples,
      training_set=(f"the first {config.data.num_train_subset} examples of the training split"
                    if config.data.get("num_train_subset") else "the whole training split"),
      sampling_assumption=("Poisson sampling, performed as accounted"
                           if config.data.sampling == "poisson" else
                           "shuffled fixed-size batches (data.sampling='shuffle') accounted AS "
                           "IF Poisson: the reported epsilon is not a proven guarantee"))
  if p.enabled and p.mode == "gc":
    fields["mechanism"] = ("DP-SGD on D: per-example clipping (real and fake, "
                           + ("split" if p.grad_clip_split else "combined")
                           + "), one Gaussian draw N(0, sigma^2 C_tot^2) per D step, / B")
  if p.enabled and p.mode == "is":
    fields["mechanism"] = ("immediate sensitivity (data-dependent noise scale, no clipping): "
                           "NOT formally DP; epsilon is the nominal DP-SGD value")
  if p.enabled and g.num_mean_samples:
    (event, count), = fixed_events(config, num_examples)
    fields["mean_samples"] = dict(
        count=count, sampling_rate=event.sampling_probability,
        noise_multiplier=event.event.noise_multiplier,
        epsilon_alone=_eps_alone(config, dp_accounting.SelfComposedDpEvent(event, count)))
  return fields


def _eps_alone(config, event) -> float:
  from dpgen_jax.privacy import accounting
  p = config.privacy
  return accounting.epsilon(event, p.delta, accountant=p.accountant, orders=p.rdp_orders,
                            neighboring=p.neighboring)


def validate(config, spec) -> None:
  """ConfigError for settings that cannot work (cslgan.md §4.2's errors and more)."""
  p, g, req = config.privacy, config.cslgan, errors.require
  req(p.mode in MODES, f"privacy.mode must be one of {MODES}, got {p.mode!r}.")
  req(g.conditional_arch in nets.ARCHS,
      f"cslgan.conditional_arch must be one of {nets.ARCHS}, got {g.conditional_arch!r}.")
  req(g.model in ("vanilla", "resnet"), "cslgan.model must be 'vanilla' or 'resnet'.")
  req(g.loss in ("bce", "wgan"), f"cslgan.loss must be 'bce' or 'wgan', got {g.loss!r}.")
  req(g.aux_loss_type in ("cross_entropy", "wasserstein"),
      "cslgan.aux_loss_type must be 'cross_entropy' or 'wasserstein'.")
  req(g.penalty in ("none", "wgan-gp", "wgan-gp-1"),
      f"cslgan.penalty must be 'none', 'wgan-gp' or 'wgan-gp-1', got {g.penalty!r}.")
  req(g.penalty_source in ("auto", "public", "mean_samples", "private"),
      "cslgan.penalty_source must be 'auto', 'public', 'mean_samples' or 'private'.")
  req(p.grad_clip_mode in CLIP_MODES, f"privacy.grad_clip_mode must be one of {CLIP_MODES}.")
  req(p.adaptive_stat in ("mean", "max"), "privacy.adaptive_stat must be 'mean' or 'max'.")
  req(p.imm_sens_scaling_mode in ("standard", "constant-pl"),
      "privacy.imm_sens_scaling_mode must be 'standard' or 'constant-pl' (upstream's "
      "'moving-avg-pl' and adaptive scalings are broken).")
  req(not (p.imm_sens_per_param and p.imm_sens_scaling_mode != "standard"),
      "per-parameter immediate sensitivity (privacy.imm_sens_per_param) requires "
      "privacy.imm_sens_scaling_mode = 'standard', as upstream.")
  req(config.data.sampling in ("poisson", "shuffle"),
      "data.sampling must be 'poisson' or 'shuffle'.")
  req(p.clipping == "flat", "cslgan sets per-layer clipping with privacy.grad_clip_mode "
                            "('constant-pl' / 'adaptive-pl'); leave privacy.clipping = 'flat'.")
  req(not (g.public_set_size and g.num_mean_samples),
      "cslgan.public_set_size and cslgan.num_mean_samples are mutually exclusive.")
  req(not (g.model == "vanilla" and g.label_mode != "concat"),
      "the Vanilla model supports only cslgan.label_mode = 'concat'.")
  req(g.n_d_steps >= 1, "cslgan.n_d_steps must be >= 1.")
  req(g.num_mean_samples >= 0 and g.public_set_size >= 0,
      "cslgan.num_mean_samples and cslgan.public_set_size must be >= 0.")
  private = bool(p.enabled)
  source = public_source(config)
  req(source != "public" or g.public_set_size > 0,
      "cslgan.penalty_source = 'public' needs cslgan.public_set_size > 0.")
  req(source != "mean_samples" or g.num_mean_samples > 0,
      "cslgan.penalty_source = 'mean_samples' needs cslgan.num_mean_samples > 0.")
  if private and g.penalty != "none":
    req(source in ("public", "mean_samples"),
        "a gradient penalty under DP needs public data or mean samples (set "
        "cslgan.public_set_size or cslgan.num_mean_samples); the private batch cannot be "
        "used for it.")
  if private and p.mode == "gc" and p.grad_clip_mode.startswith("adaptive"):
    req(source in ("public", "mean_samples"),
        "adaptive clipping needs public data or mean samples (cslgan.public_set_size or "
        "cslgan.num_mean_samples).")
  if private and threshold(config) < 1e10:
    req(source in ("public", "mean_samples"),
        "cslgan.train_d_until_threshold under DP is evaluated on public data or mean samples "
        "(never on the private batch); configure one of them.")
  if spec is None:
    return
  req(spec.kind == "image", f"cslgan trains on images; {spec.name} is {spec.kind}.")
  if g.model == "resnet":
    h, w, _ = spec.example_shape
    req(h == w and h in nets.RESNET_PRESETS,
        f"the DeepConvResNet supports {sorted(nets.RESNET_PRESETS)} pixel square images; "
        f"{spec.name} has {h}x{w} (set data.image_size).")
  req(config.train.batch_size <= spec.num_train,
      f"train.batch_size = {config.train.batch_size} exceeds the {spec.num_train} examples.")
  if g.public_set_size:
    req(g.public_set_size <= spec.num_test,
        f"cslgan.public_set_size exceeds the {spec.num_test} test examples.")


def public_source(config) -> str | None:
  """Where the penalty / adaptive thresholds / G gate read "real" data (None: nowhere)."""
  g = config.cslgan
  if g.penalty_source != "auto":
    return g.penalty_source
  if g.public_set_size:
    return "public"
  if g.num_mean_samples:
    return "mean_samples"
  return None if config.privacy.enabled else "private"


def threshold(config) -> float:
  g = config.cslgan
  if g.train_d_until_threshold is not None:
    return float(g.train_d_until_threshold)
  return -1.0 if (g.model == "resnet" and config.privacy.enabled) else 1e10


def build(plan, config, spec, mesh) -> CSLGAN:
  return CSLGAN(plan, config, spec, mesh, public_source=public_source(config),
                g_threshold=threshold(config))


DEFINITION = protocol.MethodDefinition(name="cslgan", validate=validate, privacy=declaration,
                                       build=build)

