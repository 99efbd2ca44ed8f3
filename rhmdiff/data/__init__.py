"""Data streams."""
