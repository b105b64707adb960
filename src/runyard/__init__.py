"""runyard: a self-hosted control plane and worker pools for infrastructure runs."""

__version__ = "0.1.0"
