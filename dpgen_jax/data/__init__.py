"""Datasets (registry and sources) and Poisson sampling into padded batches."""

from dpgen_jax.data.dataset import DataSpec, Dataset
from dpgen_jax.data.registry import REGISTRY, dataset_info, load_dataset
from dpgen_jax.data.sampling import PoissonSampler, padded_batch_size
