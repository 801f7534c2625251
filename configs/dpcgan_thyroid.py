"""DP-CGAN on UCI Thyroid (dpcgan.md §4-5.2, Thyroid notebook): m = B = 32, 21 columns, 3 classes.

Sampling: Poisson with q = B/N = 32/3,772, performed as accounted (upstream shuffled
into fixed batches of 32, ran 5,850 steps and accounted 5,894 as Poisson; here the
5,894 accounted steps are the steps run). Data: max-abs scaled by the training maxima
(upstream scaled train and test separately), mapped to [-1, 1] for the model.
Generator labels uniform over the 3 classes (upstream fed G the real batch labels,
which its accounting does not cover; not reproduced).

Presets:
  paper  upstream: 5,894 steps, sigma 1.15, C 1.1, delta 1e-5, D SGD lr 0.15, G Adam,
         tanh head -> epsilon 3.24 (dp-accounting RDP, improved conversion); upstream
         printed 3.72 (classic conversion). Budget privacy.target_epsilon = 3.24.
  cpu    the paper preset unchanged: training took 26 s on a 2-core CPU (load ~11);
         the evaluation (upstream's 90-point grid search x 5 folds) takes longer.
  smoke  a few seconds, for tests.
Eval: 3,772 synthetic rows with a uniform (balanced) class mix, since the real mix is
private; auroc_thyroid = upstream's grid-searched MLP on one-hot targets fitted on the
synthetic rows, micro-AUROC of hard predictions on the real test set (plus
probability AUROC and subset accuracy); auroc_lr / auroc_mlp as on MNIST. The
synthetic table is exported as CSV and npz (eval.export_csv).
"""

from configs.defaults import dpcgan

CPU = {}


def get_config(preset: str | None = None):
  paper = dpcgan.paper_config(
      "thyroid", batch_size=32, num_steps=5894, num_microbatches=32, target_epsilon=3.24,
      upstream_epsilon=3.718745314966683)
  return dpcgan.get(paper, preset, "configs/dpcgan_thyroid.py", CPU)
