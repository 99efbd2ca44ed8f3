"""Analyses that are not training: correlations, clustering, sample complexities, figures."""
