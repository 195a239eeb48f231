"""mistral-cl: continual learning of reaction yields with Mistral-7B in JAX + Equinox."""

__version__ = "0.1.0"
