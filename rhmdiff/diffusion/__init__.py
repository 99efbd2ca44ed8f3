"""Diffusion processes: uniform-transition D3PM (``d3pm``)."""
