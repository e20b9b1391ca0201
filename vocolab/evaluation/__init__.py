"""Measuring: held-out runs with exact-match accuracy per family, bounds and retention,
the language-prior baselines, attention diagnostics, and the scaling-law fit."""
