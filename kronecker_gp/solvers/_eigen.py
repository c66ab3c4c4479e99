"""Dispatch between the complete-grid and the missing-cell (Schur) solves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kronecker_gp._typing import FloatArray, IntArray
from kronecker_gp.linalg._eigenbasis import (
    GridPosterior,
    factorize,
    grid_eigen,
    lml_gradient,
)
from kronecker_gp.solvers._cell_noise import CellNoiseSystem, cell_noise_factorize
from kronecker_gp.solvers._cell_noise_missing import cell_noise_missing_factorize
from kronecker_gp.solvers._eigen_missing import SchurSystem, missing_factorize
from kronecker_gp.solvers._protocol import SolverInfo


@dataclass
class SolveResult:
    """Output of :meth:`GridSolver.solve`."""

    post: GridPosterior
    lml: float
    grad: FloatArray | None
    system: SchurSystem | CellNoiseSystem | None
    info: SolverInfo


@dataclass
class GridSolver:
    """Targets on a grid (zeros on missing cells) and the settings to solve them.

    Parameters
    ----------
    y : ndarray of shape (N,)
        Targets in C order, zero on missing cells.
    missing : ndarray of int or None
        Flat indices of missing cells; None for a complete grid.
    method : {"auto", "exact", "cg"}
        Missing-cell solver (see
        :class:`~kronecker_gp.solvers._eigen_missing.SchurSystem`).
    tol, max_iter : float, int
        CG settings.
    n_probes : int
        Probe vectors for the stochastic estimates on the CG path.
    seed : int
        Seed of the probes: every evaluation uses the same probes, so the
        estimated objective is a deterministic function of theta.
    cell_noise : ndarray of shape (N,) or None
        Known per-cell noise variances ``v``; the noise is then ``noise * v``
        (``noise`` a learned scale). Entries on missing cells are ignored.
    block_axis : int or None
        Axis of the missing-cell block-Jacobi factor on the CG path. None
        until the first CG-path solve chooses it; later solves keep it, so
        the estimated LML is one function of theta during an optimisation.
    """

    y: FloatArray
    missing: IntArray | None
    method: str = "auto"
    tol: float = 1e-10
    max_iter: int = 2000
    n_probes: int = 32
    seed: int = 0
    cell_noise: FloatArray | None = None
    block_axis: int | None = None

    def solve(
        self,
        grams: Sequence[FloatArray],
        noise: float,
        grad_grams: Sequence[FloatArray] | None = None,
        *,
        noise_free: bool = True,
        need_lml: bool = True,
    ) -> SolveResult:
        """Factorise, and return weights, LML and (optionally) its gradient."""
        want_grad = grad_grams is not None
        if self.cell_noise is not None and self.missing is not None:
            post, lml, grad, on_obs, info = cell_noise_missing_factorize(
                grams,
                noise * self.cell_noise,
                self.y,
                self.missing,
                grad_grams=grad_grams,
                noise_free=noise_free,
                need_lml=need_lml,
                method=self.method,
                tol=self.tol,
                max_iter=self.max_iter,
                n_probes=self.n_probes,
                rng=np.random.default_rng(self.seed),
            )
            return SolveResult(post, lml, grad, on_obs, info)
        if self.cell_noise is not None:
            post, lml, grad, cells, info = cell_noise_factorize(
                grams,
                noise * self.cell_noise,
                self.y,
                grad_grams=grad_grams,
                noise_free=noise_free,
                need_lml=need_lml,
                tol=self.tol,
                max_iter=self.max_iter,
                n_probes=self.n_probes,
                rng=np.random.default_rng(self.seed),
            )
            return SolveResult(post, lml, grad, cells, info)
        if self.missing is None or self.missing.size == 0:
            post, lml = factorize(grams, noise, self.y)
            grad = (
                lml_gradient(post, grad_grams, noise_free=noise_free)
                if grad_grams is not None
                else None
            )
            return SolveResult(post, lml, grad, None, SolverInfo("complete", 0))
        post, lml, system, corr, info = missing_factorize(
            grid_eigen(grams, noise),
            self.y,
            self.missing,
            method=self.method,
            tol=self.tol,
            max_iter=self.max_iter,
            n_probes=self.n_probes,
            rng=np.random.default_rng(self.seed),
            eval_gradient=want_grad,
            need_lml=need_lml,
            block_axis=self.block_axis,
        )
        self.block_axis = info.extra.get("block_axis", self.block_axis)
        grad = None
        if grad_grams is not None:
            grad = lml_gradient(
                post, grad_grams, noise_free=noise_free, correction=corr
            )
        return SolveResult(post, lml, grad, system, info)
