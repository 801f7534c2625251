"""The configuration every method shares, and the presets machinery.

Each file in configs/ starts from `base_config()` (through its method's module in
configs/defaults/) and fills in its method's sections. `train.num_steps` always counts
the steps the accountant composes.
"""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = ""
  c.config_file = ""  # set by the presets: e.g. 'configs/mnist_eps10.py'
  c.preset = ""

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"
  c.data.data_dir = ""  # first place to look (see dpgen_jax/data/registry.py)
  c.data.download = True  # let tensorflow-datasets download when online
  c.data.tfds_data_dir = ""
  c.data.image_size = config_dict.placeholder(int)  # resize images (e.g. digits to 28)
  # The padded Poisson batch is sized so a larger realised batch has at most this
  # probability per step (then the batch grows; nothing is truncated).
  c.data.poisson_overflow_probability = 1e-6

  c.model = ml_collections.ConfigDict()

  c.privacy = ml_collections.ConfigDict()
  c.privacy.enabled = True
  # Unset (None) with a target_epsilon: calibrated so that train.num_steps steps
  # spend at most target_epsilon.
  c.privacy.noise_multiplier = config_dict.placeholder(float)
  c.privacy.clip_norm = 1.0
  c.privacy.delta = 1e-5
  # The budget: a run that would spend more is refused before it starts.
  c.privacy.target_epsilon = config_dict.placeholder(float)
  c.privacy.accountant = "rdp"  # 'rdp' or 'pld' (dp-accounting)
  c.privacy.rdp_orders = "dp_accounting"  # named grid, see privacy/accounting.py
  c.privacy.neighboring = "add_or_remove_one"
  # True: batches, random choices of records and noise all follow train.seed (tests,
  # debugging). The randomness is then public: the run reports no epsilon.
  c.privacy.reproducible = False
  c.privacy.clipping = "flat"  # 'flat' or 'per_layer'
  c.privacy.clipping_strategy = "vmap"
  c.privacy.max_physical_bsz = 0  # 0: one pass; else lax.scan over chunks of this size

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = config_dict.placeholder(int)  # accounted steps; None: from the budget
  c.train.batch_size = 128
  c.train.seed = 0
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.sample_every = 1000  # PNG grid of samples
  c.train.progress_every_secs = 30.0
  # Un-noised statistics of the private data (losses on real batches, gradient norms,
  # clip fractions, batch sizes) are not covered by epsilon. False: TensorBoard and the
  # progress line show only each method's public metrics. True: the others too, under
  # 'private/', and privacy.json records that they were written.
  c.train.log_private_metrics = False
  c.train.prng_impl = "rbg"  # JAX key implementation (see dpgen_jax/rng.py)

  c.eval = ml_collections.ConfigDict()
  # 'full': the protocol of reported numbers; 'quick': <= 10,000 samples and 3 classifier
  # epochs for monitoring and sweeps (eval/metrics_quick.jsonl; docs/results.md gives
  # its agreement with the full protocol).
  c.eval.protocol = "full"
  c.eval.num_samples = 60_000
  c.eval.batch_size = 500  # generation batch
  c.eval.labels = "uniform"  # 'uniform' (i.i.d.) or 'balanced' (0..K-1 repeated)
  c.eval.quantize = True  # images rounded to multiples of 1/255, as upstream saves them
  c.eval.metrics = ("fid_lenet", "acc_cnn")  # see dpgen_jax/evaluation/metrics.py
  c.eval.seeds = (0,)  # classifier metrics are averaged over these seeds
  c.eval.checkpoint = config_dict.placeholder(int)  # evaluate only this step
  c.eval.idle_timeout_secs = 3600.0  # stop after this long without a new checkpoint
  c.eval.poll_secs = 30.0
  c.eval.export_npz = False  # WORKDIR/eval/gen_data_<step>.npz (data_x, data_y)
  c.eval.export_csv = False  # tabular data: WORKDIR/eval/gen_table_<step>.csv and .npz
  c.eval.export_grid = True  # WORKDIR/eval/samples_<step>.png
  c.eval.cache_dir = ""  # feature extractors and real statistics; default ~/.cache/dpgen_jax
  c.eval.inception_weights = ""  # .npz for fid_inception (experiments/convert_pytorch_fid_weights.py)
  c.eval.inception_batch_size = 100
  c.eval.lenet_epochs = 10
  c.eval.cnn_epochs = 10  # dpgan-revisit protocol
  c.eval.max_epochs = config_dict.placeholder(int)  # override the DP-Sinkhorn protocol's
  c.eval.patience = config_dict.placeholder(int)
  c.eval.threshold_background = False  # DP-Sinkhorn's pixel post-processing

  # --mode=generate: WORKDIR/synthetic/step_<S>.npz (+ .json, .csv for tables).
  c.generate = ml_collections.ConfigDict()
  c.generate.num_samples = 60_000
  c.generate.checkpoint = config_dict.placeholder(int)  # default: the newest
  c.generate.batch_size = 500

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # set for multi-host jax.distributed
  c.distributed.num_processes = config_dict.placeholder(int)
  c.distributed.process_id = config_dict.placeholder(int)
  c.distributed.auto = False  # jax.distributed.initialize() auto-detection (TPU pods, SLURM)
  return c


def smoke_eval(c: ml_collections.ConfigDict, num_samples: int = 240,
               batch_size: int | None = 120) -> ml_collections.ConfigDict:
  """The evaluation part of every `smoke` preset: a few hundred samples, a one-epoch LeNet,
  and an eval job that stops after a minute without a new checkpoint."""
  c.eval.num_samples = num_samples
  if batch_size is not None:
    c.eval.batch_size = batch_size
  c.eval.lenet_epochs = 1
  c.eval.idle_timeout_secs = 60.0
  c.eval.poll_secs = 1.0
  return c


def select_preset(preset: str | None, presets: dict, config_name: str) -> str:
  """Validates a preset name given as `configs/x.py:NAME`; '' or None means 'paper'."""
  from dpgen_jax import errors
  preset = preset or "paper"
  if preset not in presets:
    raise errors.ConfigError(
        f"{config_name} has no preset {preset!r}; choose one of: {', '.join(presets)}.")
  return preset


def apply_preset(preset: str | None, config_name: str, paper: ml_collections.ConfigDict,
                 smoke, cpu: dict) -> ml_collections.ConfigDict:
  """`paper` with a preset: 'paper' as is, 'smoke' = smoke(paper), 'cpu' = `cpu`'s
  {"section.key": value} overrides applied to it. Unknown presets are a ConfigError."""
  preset = select_preset(preset, ("paper", "cpu", "smoke"), config_name)
  # Where the config came from (the run warns on a CPU with the `cpu` preset to use).
  paper.config_file, paper.preset = config_name, preset
  if preset == "smoke":
    return smoke(paper)
  if preset == "cpu":
    for dotted, value in cpu.items():
      section, key = dotted.split(".")
      paper[section][key] = value
  return paper
