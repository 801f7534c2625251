"""Shared helpers for tests."""

import os

import numpy as np
import pytest

from dpgen_jax.config_file import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def config(name: str, preset: str | None = None, **overrides):
  """configs/<name>.py with a preset and dotted overrides ('train.num_steps'=...)."""
  spec = os.path.join(ROOT, "configs", name + ".py") + (f":{preset}" if preset else "")
  c = load_config_file(spec)
  for dotted, value in overrides.items():
    section, key = dotted.split("__") if "__" in dotted else dotted.split(".")
    c[section][key] = value
  return c


def config_names() -> list[str]:
  """Every run configuration in configs/ (configs/defaults/ and __init__ excluded)."""
  import glob
  return sorted(os.path.splitext(os.path.basename(p))[0]
                for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                if not os.path.basename(p).startswith("_"))


def configs_of(method: str) -> list[str]:
  """The config files whose method is `method`."""
  return [n for n in config_names() if config(n).method == method]


def mnist_dir() -> str:
  """The folder holding MNIST for tests, or skip the test with the reason."""
  candidates = [os.path.join(os.environ["DPGEN_DATA_DIR"], "mnist")] \
      if os.environ.get("DPGEN_DATA_DIR") else []
  candidates.append(os.path.join(SHARED_DATA, "mnist"))
  for path in candidates:
    if os.path.isfile(os.path.join(path, "train-images-idx3-ubyte.gz")) or \
       os.path.isfile(os.path.join(path, "train-images-idx3-ubyte")):
      return path
  pytest.skip(f"real MNIST not found in {candidates} (set DPGEN_DATA_DIR to a folder "
              f"with mnist/); this test needs the real data")


def fake_celeba(folder, file_name: str, num_train: int, num_test: int, size: int) -> str:
  """CelebA is not on this machine: writes random size x size RGB images with binary
  labels as `folder/file_name` (the registry's .npz layout); returns the folder."""
  r = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  np.savez(os.path.join(folder, file_name),
           x_train=r.integers(0, 256, (num_train, size, size, 3), dtype=np.uint8),
           y_train=r.integers(0, 2, num_train),
           x_test=r.integers(0, 256, (num_test, size, size, 3), dtype=np.uint8),
           y_test=r.integers(0, 2, num_test))
  return str(folder)


# Tags the training loop itself writes besides a method's metrics: epsilon and clu's
# progress report (step rate, uptime), all public.
LOOP_TAGS = {"privacy/epsilon", "steps_per_sec", "uptime", "samples"}


def written_tags(workdir) -> set[str]:
  """Every TensorBoard tag in the event files directly in `workdir`."""
  from tensorflow.compat.v1 import train as tf_train
  tags = set()
  for name in os.listdir(workdir):
    if name.startswith("events.out.tfevents"):
      for event in tf_train.summary_iterator(os.path.join(workdir, name)):
        tags.update(v.tag for v in event.summary.value)
  return tags


def assert_only_public_tags(workdir, method) -> None:
  """A private run with default settings wrote only the method's declared public
  metrics and the loop's own tags (nothing under 'private/', no subsampling outcome)."""
  tags = written_tags(workdir)
  allowed = set(method.public_metrics) | LOOP_TAGS
  assert tags, f"no TensorBoard tags in {workdir}"
  assert tags <= allowed, f"undeclared tags written: {sorted(tags - allowed)}"
  assert not any(t.startswith("private/") or "discriminator" in t or "batch/" in t
                 for t in tags), sorted(tags)


def started(config, dataset, workdir, root=None):
  """(method, initial state, secret root) as the training loop starts a run: the method
  built with its resolved plan, its stages run into `workdir`, `prepare`, `start`."""
  from dpgen_jax import methods, rng
  from dpgen_jax.privacy import randomness
  from dpgen_jax.run_folder import RunFolder
  from dpgen_jax.training.stages import run_stages
  root = root or randomness.SecretRoot.from_entropy()
  method = methods.build(config, dataset.spec)
  run = RunFolder(str(workdir))
  run_stages(method.stages(run, dataset, root), run)
  method.prepare(run, dataset, root)
  return method, method.start(method.init(rng.make_key(0))), root


def _privacy_spec(config, num_examples: int | None):
  import dataclasses
  from dpgen_jax.data import registry
  spec = registry.static_spec(config.data)
  if num_examples is not None:
    spec = dataclasses.replace(spec, num_train=int(num_examples))
  return spec


def privacy_plan(config, num_examples: int | None = None):
  """The resolved PrivacyPlan of `config` (--mode=privacy's, on the static data spec,
  optionally with another number of training examples)."""
  from dpgen_jax import planning
  return planning.plan_for(config, _privacy_spec(config, num_examples))[1]


def privacy_report(config, num_examples: int | None = None, *, compare_accountants=True):
  """What --mode=privacy prints for `config` (see privacy_plan)."""
  from dpgen_jax import planning
  spec = _privacy_spec(config, num_examples)
  _, plan, _ = planning.plan_for(config, spec)
  return planning.report(plan, spec.num_train, compare_accountants=compare_accountants)


def static_spec(name: str, preset: str | None = None):
  """The DataSpec --mode=privacy uses for configs/<name>.py (no data loaded)."""
  from dpgen_jax.data import registry
  return registry.static_spec(config(name, preset).data)
