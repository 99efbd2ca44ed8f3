"""rhmdiff: diffusion models on the Random Hierarchy Model (Favero et al., ICML 2025).

Version ranges: the lower bounds are the versions ``constraints.txt`` pins, which CI installs
and tests (``pip install -e ".[test]" -c constraints.txt``); the upper bounds stop at the next
release series, whose API may change.
"""
import re

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', open("rhmdiff/__init__.py").read()).group(1)
# MD4 on text: BPE from a local .tiktoken file, corpora as parquet shards / HF datasets
# directories, and a local causal LM for perplexity (the Flax classes of transformers 4.x).
TEXT = ["tiktoken>=0.14,<1", "datasets>=4.8,<5", "transformers>=4.57,<5"]
# gs:// workdirs: epath's fsspec backend (gcsfs) and orbax's bucket checks (google-cloud-storage).
GCS = ["gcsfs>=2026.2", "google-cloud-storage>=3"]

setup(
    name="rhmdiff",
    version=VERSION,
    description=(
        "JAX/Flax reproduction of 'How Compositional Generalization and Creativity "
        "Improve as Diffusion Models are Trained' (Favero et al., ICML 2025)"
    ),
    license="MIT",
    packages=find_packages(include=["rhmdiff", "rhmdiff.*"]),
    python_requires=">=3.11",  # as JAX 0.10
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "etils[epath]>=1.15,<2",  # paths on local disks and object stores (orbax's path layer)
        "absl-py>=2.5,<3",
        "ml-collections>=1.1,<1.2",
        "numpy>=2.4,<3",
        "tqdm>=4.70,<5",
        "matplotlib>=3.11,<4",
        "pillow>=13,<14",  # image folders (comes with matplotlib)
        "tensorboardX>=2.6.5,<3",  # TensorBoard event files without TensorFlow
        "scikit-learn>=1.9,<2",  # k-means of the clustering algorithm
    ],
    extras_require={
        "text": TEXT,
        "gcs": GCS,
        "test": ["pytest>=9.2,<10", "pytest-xdist>=3.8,<4", "scipy>=1.17,<2", "chex>=0.1.92,<0.2", "fsspec>=2026.2", *TEXT],
        "cuda12": ["jax[cuda12]>=0.10.2,<0.11"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11", *GCS],
        "tensorboard": ["tensorboard>=2.20,<3"],  # the viewer: tensorboard --logdir runs/rhm_L3/tensorboard
    },
)
