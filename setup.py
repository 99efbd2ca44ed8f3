"""rhmdiff: diffusion models on the Random Hierarchy Model (Favero et al., ICML 2025)."""
from setuptools import find_packages, setup

TEXT = ["tiktoken>=0.7,<1", "datasets>=2.19,<5", "transformers>=4.45,<5"]

setup(
    name="rhmdiff",
    version="0.1.0",
    description=(
        "JAX/Flax reproduction of 'How Compositional Generalization and Creativity "
        "Improve as Diffusion Models are Trained' (Favero et al., ICML 2025)"
    ),
    packages=find_packages(include=["rhmdiff", "rhmdiff.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.3,<0.3",
        "orbax-checkpoint>=0.6,<0.13",
        "chex>=0.1.87,<0.2",
        "absl-py>=2.1,<3",
        "ml-collections>=0.1.1,<1.2",
        "numpy>=1.26,<3",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "tensorboardX>=2.6,<3",  # TensorBoard event files without TensorFlow
        "scikit-learn>=1.3,<2",  # k-means of the clustering algorithm
    ],
    extras_require={
        # MD4 on text: BPE from a local file, corpora as HF datasets / parquet / arrow, and a
        # local causal LM for perplexity (the Flax classes of transformers 4.x)
        "text": TEXT,
        "test": ["pytest>=8,<10", "scipy>=1.11,<2", *TEXT],
        "cuda12": ["jax[cuda12]>=0.4.30,<0.11"],
        "tpu": ["jax[tpu]>=0.4.30,<0.11"],
    },
)
