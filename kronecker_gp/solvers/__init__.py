"""Solvers: one class per route from (data, grid, kernels, noise) to a factorisation."""
