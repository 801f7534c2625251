"""What main.py dispatches to; user mistakes become one message and exit status 2."""

import json
import re
import sys

from dpgen_jax import errors

MODES = ("train", "eval", "privacy", "audit", "generate")
_NOT_YET: dict[str, str] = {}
EXIT_USER_ERROR = 2


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def _privacy(config) -> int:
  from dpgen_jax import planning
  from dpgen_jax.data import registry
  spec = registry.static_spec(config.data)
  _, plan, _ = planning.plan_for(config, spec)
  report = planning.report(plan, spec.num_train)
  report = dict(report, method=config.method, dataset=config.data.name)
  print(json.dumps(report, indent=2, sort_keys=True, default=str))
  return 0


def _train(config, workdir) -> int:
  from dpgen_jax.training import loop
  if not workdir:
    raise errors.ConfigError("--workdir is required for --mode=train.")
  summary = loop.train(config, workdir)
  print(json.dumps(summary, sort_keys=True))
  return 0


def _audit(config, workdir) -> int:
  from dpgen_jax.evaluation import membership
  if not workdir:
    raise errors.ConfigError("--workdir is required for --mode=audit.")
  if "audit" not in config:
    raise errors.ConfigError(f"method {config.method!r} has no audit settings (config.audit): "
                             f"--mode=audit needs a method that declares a membership audit.")
  result = membership.audit_workdir(config, workdir)
  print(json.dumps(result, indent=2, sort_keys=True))
  return 0


def _eval(config, workdir) -> int:
  from dpgen_jax.evaluation import job
  if not workdir:
    raise errors.ConfigError("--workdir is required for --mode=eval.")
  job.evaluate_workdir(config, workdir)
  return 0


def _generate(config, workdir) -> int:
  from dpgen_jax.evaluation import synthetic
  if not workdir:
    raise errors.ConfigError("--workdir is required for --mode=generate.")
  out = synthetic.generate_workdir(config, workdir)
  print(json.dumps(out, indent=2, sort_keys=True))
  return 0


def run(mode: str, config, workdir: str | None) -> int:
  """Runs one mode; returns the exit status (2 with one message for user mistakes)."""
  from dpgen_jax import log
  log.setup()
  if mode in _NOT_YET:
    print(f"error: {_NOT_YET[mode]}", file=sys.stderr)
    return EXIT_USER_ERROR
  try:
    if mode == "privacy":
      return _privacy(config)
    if mode == "train":
      return _train(config, workdir)
    if mode == "eval":
      return _eval(config, workdir)
    if mode == "audit":
      return _audit(config, workdir)
    if mode == "generate":
      return _generate(config, workdir)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USER_ERROR
  raise AssertionError(mode)


def apply_unset(config) -> None:
  """Sets the fields given as `--config.x.y=None` to None (ConfigError for unknown ones)."""
  for dotted in _unset_fields:
    *path, key = dotted.split(".")
    node = config
    for part in path:
      if part not in node:
        raise errors.ConfigError(f"--config.{dotted}=None: no field {dotted!r} in the config.")
      node = node[part]
    if key not in node:
      raise errors.ConfigError(f"--config.{dotted}=None: no field {dotted!r} in the config.")
    with node.unlocked():
      node[key] = None


def run_app(app, main) -> None:
  """absl's app.run, with config-file errors (bad preset, bad override) as one message."""
  try:
    app.run(main, flags_parser=_parse_flags)
  except errors.UserError as e:
    fail(str(e))


# `--config.section.key=None` unsets a field (e.g. privacy.noise_multiplier, to calibrate it
# from the budget): ml_collections cannot parse None for a typed field, so these flags are
# taken out before parsing and applied to the loaded config (a field must exist).
_UNSET = re.compile(r"^--config\.([\w.]+)=(?:None|none|null)$")
_unset_fields: list[str] = []


def _parse_flags(argv):
  from absl import flags
  _unset_fields.clear()
  kept = []
  for arg in argv:
    match = _UNSET.match(arg)
    if match:
      _unset_fields.append(match.group(1))
    else:
      kept.append(arg)
  # ml_collections reads the overrides from sys.argv as well.
  sys.argv[:] = [a for a in sys.argv if not _UNSET.match(a)]
  try:
    return flags.FLAGS(kept)
  except flags.Error as e:
    cause = e.__cause__ or e.__context__
    while cause is not None and not isinstance(cause, errors.UserError):
      cause = cause.__cause__ or cause.__context__
    fail(str(cause) if cause is not None else str(e))
