"""dpgen-jax: differentially private generative models in JAX/Flax."""

__version__ = "0.1.0"
