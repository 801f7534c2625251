"""geomloss-style entropic OT for DP-Sinkhorn: costs, the solver, the losses."""

from dpgen_jax.sinkhorn.costs import COSTS, max_feature_diameter, pairwise_cost
from dpgen_jax.sinkhorn.loss import features, full_divergence_loss, semi_debiased_loss
from dpgen_jax.sinkhorn.solver import (SinkhornConfig, entropic_ot, geomloss_schedule,
                                       loop_iterations_for, sinkhorn_divergence)
