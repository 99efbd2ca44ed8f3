"""rhmdiff: diffusion models on the Random Hierarchy Model (Favero et al., ICML 2025)."""

__version__ = "0.2.0"
