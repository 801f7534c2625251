"""White-box membership inference against a trained discriminator (Hayes et al.,
LOGAN; csl-gan's mem_inf_attack.py protocol, cslgan.md §5.3) and `--mode=audit`.

Attack value: D's output on a record (the max softmax of the ACGAN auxiliary head, or
the critic output); higher means "more likely a member". Protocol: draw 100 members
from the training set and 900 non-members from held-out data (without replacement),
flag the 100 highest values as members, precision = fraction of flagged records that
are members; averaged over many draws. Chance = 100 / 1000 = 10 %. Ties are broken at
random (a saturated softmax gives many equal values; ranking them by position would
bias the result). We also report the ROC AUC over the whole pools (chance 0.5).

The audit reads the discriminator from the workdir's checkpoint. D is private (it was
trained on raw data through the DP mechanism, but it is not part of the released
generator); the audit's numbers are computed from private data and are a diagnostic,
not a release.
"""

import json
import os

import jax
import numpy as np
from sklearn import metrics as sk_metrics

from dpgen_jax import errors


def top_k_precision(member_scores, nonmember_scores, *, num_members: int = 100,
                    num_nonmembers: int = 900, draws: int = 10_000, seed: int = 0) -> dict:
  """Mean (and std) over `draws` of the precision of the top-`num_members` flagged."""
  member_scores = np.asarray(member_scores, np.float64)
  nonmember_scores = np.asarray(nonmember_scores, np.float64)
  if len(member_scores) < num_members or len(nonmember_scores) < num_nonmembers:
    raise errors.ConfigError(
        f"the audit needs at least {num_members} members and {num_nonmembers} non-members; "
        f"got {len(member_scores)} and {len(nonmember_scores)}.")
  gen = np.random.default_rng([seed, 0xA0D17])
  is_member = np.concatenate([np.ones(num_members, bool), np.zeros(num_nonmembers, bool)])
  out = np.empty(draws)
  for d in range(draws):
    m = member_scores[gen.choice(len(member_scores), num_members, replace=False)]
    n = nonmember_scores[gen.choice(len(nonmember_scores), num_nonmembers, replace=False)]
    scores = np.concatenate([m, n])
    order = np.lexsort((gen.random(len(scores)), -scores))  # by score desc, random ties
    out[d] = np.mean(is_member[order[:num_members]])
  return dict(top_k_precision=float(out.mean()), top_k_precision_std=float(out.std()),
              chance=num_members / (num_members + num_nonmembers), draws=int(draws),
              num_members=num_members, num_nonmembers=num_nonmembers)


def roc_auc(member_scores, nonmember_scores) -> float:
  labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
  return float(sk_metrics.roc_auc_score(labels, np.concatenate([member_scores,
                                                                nonmember_scores])))


def _pool(x, y, cap: int, seed: int, salt: int):
  if len(x) <= cap:
    return x, y
  idx = np.sort(np.random.default_rng([seed, salt]).choice(len(x), cap, replace=False))
  return x[idx], y[idx]


def audit_workdir(config, workdir: str) -> dict:
  """Scores training members vs held-out non-members with the latest checkpoint's D;
  writes WORKDIR/audit.json and returns its content."""
  from dpgen_jax.run_folder import open_trained
  errors.require(workdir and os.path.isdir(workdir), "--workdir must be an existing run folder "
                                                     "for --mode=audit.")
  # The run's own config.json: it says which examples were the training set (members).
  run, method, dataset, abstract = open_trained(config, workdir, recorded_config=True)
  run_config = method.config
  errors.require(method.supports_membership_audit,
                 f"method {run_config.method!r} has no discriminator scores for the audit.")
  ckpt = run.checkpointer(read_only=True)
  try:
    restored = ckpt.restore_latest_valid(abstract)
  finally:
    ckpt.close()
  errors.require(restored is not None, f"no readable checkpoint in {workdir}.")
  step, state, meta = restored
  a = config.audit
  public = int(method.public_test_examples)
  mx, my = _pool(dataset.train_x, dataset.train_y, a.max_pool, a.seed, 1)
  nx, ny = _pool(dataset.test_x[public:], dataset.test_y[public:], a.max_pool, a.seed, 2)
  m_scores, kind = method.membership_scores(state, mx, my, a.score)
  n_scores, _ = method.membership_scores(state, nx, ny, a.score)
  result = top_k_precision(m_scores, n_scores, num_members=a.num_members,
                           num_nonmembers=a.num_nonmembers, draws=a.draws, seed=a.seed)
  ledger = meta.get("ledger", {})
  result.update(
      roc_auc=roc_auc(m_scores, n_scores), score=kind, checkpoint_step=int(step),
      member_pool=int(len(mx)), nonmember_pool=int(len(nx)),
      members=(f"training set: first {run_config.data.num_train_subset} training examples"
               if run_config.data.get("num_train_subset") else "training set: whole split"),
      nonmembers=f"test split of {run_config.data.name}" + (
          f" after the first {public} (public) examples" if public else ""),
      mean_member_score=float(np.mean(m_scores)), mean_nonmember_score=float(np.mean(n_scores)),
      private=ledger.get("private"), epsilon=ledger.get("epsilon"), delta=ledger.get("delta"),
      note="computed from private data with the private discriminator: a diagnostic, "
           "not a release")
  if ledger.get("epsilon_caveat"):
    result["epsilon_caveat"] = ledger["epsilon_caveat"]
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "audit.json"), "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
      f.write("\n")
  return result
