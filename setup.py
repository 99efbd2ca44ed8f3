"""Legacy entry point for tools that run ``setup.py``; the package metadata is in pyproject.toml."""
from setuptools import setup

setup()
