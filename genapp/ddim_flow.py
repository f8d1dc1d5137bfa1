"""A trained DDPM's DDIM sampler (eta = 0) read as a normalizing flow. Beyond the lecture: DDIM (Song et al. 2021).

Each strided DDIM step g_j: x_k -> x_{k'} (k' < k the next visited step) is, with ab = alpha_bar_k, ab' = alpha_bar_k',
    x0_hat = (x - sqrt(1 - ab) eps_theta(x, k)) / sqrt(ab)           (1.21) solved for x_0
    g_j(x) = sqrt(ab') x0_hat + sqrt(1 - ab') eps_theta(x, k)
           = sqrt(ab'/ab) x + (sqrt(1 - ab') - sqrt(ab'/ab) sqrt(1 - ab)) eps_theta(x, k),
a smooth map of R^d, invertible where it does not fold. So x = f(z) = g_N' o ... o g_1 (z), z = x_N ~ N(0, I), is a
flow: log p_x(x) = log p_z(f^{-1}(x)) + log|det J_{f^{-1}}(x)| (1.29), the log-det a sum over steps (1.30, 1.32).
Unlike `DDPM.ddim_chain`, nothing is clipped: clipping x0_hat to the data box makes g flat (det J = 0) where it bites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import jacrev

from genapp.diffusion import DDPM


class NotInvertibleError(ValueError):
    """A DDIM step could not be inverted at some point: Newton did not reach the tolerance, or the step folds there.
    `failed`: a bool tensor over the batch, True at those points (None where not known)."""

    def __init__(self, message: str, failed: torch.Tensor | None = None) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass
class DDIMInverse:
    """The result of inverting the flow: z = f^{-1}(x), log|det J_{f^{-1}}(x)|, and how well each step was solved.

    residual: per point, max over steps of max_i |g_j(x_k)_i - x_{k'}_i| at the accepted solution x_k (the
    round-trip error of that step); iterations: the most Newton updates any step needed.
    """

    z: torch.Tensor
    log_det: torch.Tensor
    residual: torch.Tensor
    iterations: int


def _check_no_fold(sign: torch.Tensor, k: int, k_prev: int) -> None:
    """Raise NotInvertibleError where det J_g <= 0: there the step folds the plane and (1.29) does not apply."""
    if bool((sign <= 0).any()):
        folded = int((sign <= 0).sum())
        raise NotInvertibleError(f"DDIM step {k} -> {k_prev} folds: det J <= 0 at {folded} of {len(sign)} points",
                                 sign <= 0)


class DDIMFlow(nn.Module):
    """The DDIM sampler of a vector-data `DDPM` over `num_steps` strided steps as a flow, with `Flow`'s interface.

    forward(z) -> (x, log|det J_f(z)|), x differentiable in z, the log-det a plain value (no training through it).
    inverse(x) -> (z, log|det J_{f^-1}(x)|) (1.32): each step inverted by Newton's method with its exact d x d
    Jacobian until max_i |g(x)_i - y_i| <= tol (1 + max_i |y_i|) (tol 1e-9 in float64, 1e-4 in float32 by
    default) within `max_iter` updates, else `NotInvertibleError`. Both directions also raise it at a state where
    det J_g <= 0: g is the scaling x -> sqrt(ab'/ab) x plus a network term, so det J_g <= 0 means the step folds
    the plane and (1.29) does not apply. The check is local: a fold elsewhere can still hide a second preimage.
    Computes in the model's dtype (use `.double()` for likelihoods). The network must treat points independently
    (true of `EpsMLP`): the per-point Jacobians are read off the Jacobian of the batch sum.
    """

    def __init__(self, ddpm: DDPM, num_steps: int = 50, tol: float | None = None, max_iter: int = 50) -> None:
        super().__init__()
        if len(ddpm.config.data_shape) != 1:
            raise ValueError(f"DDIMFlow takes vector data (data_shape (d,)), got {ddpm.config.data_shape}")
        if not 1 <= max_iter <= 1000:
            raise ValueError(f"max_iter must lie in [1, 1000], got {max_iter}")
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        self.ddpm = ddpm
        timesteps = ddpm.ddim_timesteps(num_steps)  # validates 1 <= num_steps <= N
        self._steps = list(zip(timesteps[:-1], timesteps[1:]))
        self._tol, self.max_iter = tol, max_iter

    # -- the steps ---------------------------------------------------------------------------------------
    @property
    def steps(self) -> list[tuple[int, int]]:
        """The (k, k') pairs of the steps g_1, ..., g_N' in sampling order: k = N first, k' = 0 last."""
        return list(self._steps)

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def tol(self) -> float:
        return self._tol if self._tol is not None else (1e-9 if self.ddpm.dtype == torch.float64 else 1e-4)

    def layer_info(self) -> list[dict[str, Any]]:
        """One entry per step, as `Flow.layer_info`: {"k": 1..N', "layer": "DDIM step", "from_k": k, "to_k": k'}."""
        return [{"k": j, "layer": "DDIM step", "from_k": k, "to_k": kp} for j, (k, kp) in enumerate(self._steps, 1)]

    def step(self, x: torch.Tensor, k: int, k_prev: int) -> torch.Tensor:
        """g(x) = sqrt(ab') x0_hat + sqrt(1 - ab') eps_theta(x, k), x0_hat from (1.21); no clipping."""
        ab_prev = self.ddpm.alpha_bar[k_prev].to(x.dtype)
        eps_pred = self.ddpm.eps_theta(x, k)
        x0_pred = self.ddpm.predict_x0(x, k, eps_pred)  # (1.21) solved for x_0
        return ab_prev.sqrt() * x0_pred + (1 - ab_prev).sqrt() * eps_pred  # DDIM, eta = 0 (Song et al. 2021)

    def step_and_jacobian(self, x: torch.Tensor, k: int, k_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        """g(x) and J_g(x) per point, shape (n, d, d), J[i, a, b] = d g_a / d x_b at x[i]; one forward, d backward
        passes, both detached (log-dets are for evaluation: no graph through the parameters)."""
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone()

            def summed(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                g = self.step(v, k, k_prev)
                return g.sum(0), g  # d sum_i g(x_i) / d x_j = J_g(x_j): points do not interact

            jac, value = jacrev(summed, has_aux=True)(x)  # jac (d, n, d)
        return value.detach(), jac.permute(1, 0, 2).detach()

    def invert_step(self, y: torch.Tensor, k: int, k_prev: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """x with g(x) = y by Newton, x <- x - J_g(x)^{-1} (g(x) - y). Returns x, log|det J_g(x)|, the max-norm
        residual |g(x) - y| per point, and the number of Newton updates.

        Starts from the fixed-point guess x = (y - b eps_theta(y, k)) / c, g(x) = c x + b eps_theta(x, k).
        Raises NotInvertibleError if some point misses `tol` after `max_iter` updates or has det J_g(x) <= 0.
        """
        ab, ab_prev = self.ddpm.alpha_bar[k].to(y.dtype), self.ddpm.alpha_bar[k_prev].to(y.dtype)
        c = (ab_prev / ab).sqrt()
        b = (1 - ab_prev).sqrt() - c * (1 - ab).sqrt()
        y = y.detach()
        tol = self.tol * (1 + y.abs().amax(1))  # relative to the size of y
        with torch.no_grad():
            x = (y - b * self.ddpm.eps_theta(y, k)) / c
            for iteration in range(self.max_iter + 1):
                value, jac = self.step_and_jacobian(x, k, k_prev)
                residual = (value - y).abs().amax(1).nan_to_num(math.inf)
                if bool((residual <= tol).all()) or iteration == self.max_iter:
                    break
                x = x - torch.linalg.solve_ex(jac, (value - y)[..., None]).result[..., 0]  # Newton
            bad = residual > tol
            if bool(bad.any()):
                raise NotInvertibleError(
                    f"DDIM step {k} -> {k_prev}: Newton missed tol {self.tol:.0e} after {self.max_iter} iterations "
                    f"at {int(bad.sum())} of {len(y)} points (worst residual {float(residual.max()):.2e})", bad
                )
            sign, log_det = torch.linalg.slogdet(jac)
            _check_no_fold(sign, k, k_prev)
        return x, log_det, residual, iteration

    # -- the flow ----------------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f(z) = g_N' o ... o g_1 (z) and log|det J_f(z)| = sum_j log|det J_{g_j}(x_k)|   (1.30).
        Raises NotInvertibleError where a step folds (det J_{g_j} <= 0 on the way)."""
        log_det = z.new_zeros(z.shape[0])
        for k, k_prev in self._steps:
            sign, step_log_det = torch.linalg.slogdet(self.step_and_jacobian(z, k, k_prev)[1])
            _check_no_fold(sign, k, k_prev)
            log_det = log_det + step_log_det
            z = self.step(z, k, k_prev)
        return z, log_det

    def solve(self, x: torch.Tensor) -> DDIMInverse:
        """z = f^{-1}(x), inverting the steps last to first, with log|det J_{f^-1}(x)| = -sum_j log|det J_{g_j}|
        at the recovered states (1.32), and the per-point residuals; raises NotInvertibleError (see the class)."""
        log_det, residual, iterations = x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0]), 0
        for k, k_prev in reversed(self._steps):
            x, step_log_det, step_residual, step_iterations = self.invert_step(x, k, k_prev)
            log_det = log_det - step_log_det  # det J_{g^-1}(y) = 1 / det J_g(x)
            residual, iterations = torch.maximum(residual, step_residual), max(iterations, step_iterations)
        return DDIMInverse(x, log_det, residual, iterations)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f^{-1}(x) and log|det J_{f^-1}(x)|   (1.32); `solve` also returns the residuals."""
        result = self.solve(x)
        return result.z, result.log_det

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p_z(z) for the base p_z = N(0, I)."""
        return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_x(x) = log p_z(f^{-1}(x)) + log|det J_{f^-1}(x)|   (1.29)."""
        z, log_det = self.inverse(x)
        return self.base_log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x = f(z), z ~ N(0, I): the same draws as `ddpm.sample(n, generator, ddim_steps=len(self))`, unclipped."""
        z = self.ddpm._noise(n, generator)  # the DDPM's own noise: same generator, same z as its DDIM chain
        with torch.no_grad():
            for k, k_prev in self._steps:
                z = self.step(z, k, k_prev)
        return z

    def trajectory(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The states [z_0 = z = x_N, z_1, ..., z_N' = x_0], z_j = g_j(z_{j-1})   (1.33)."""
        states = [z]
        for k, k_prev in self._steps:
            states.append(self.step(states[-1], k, k_prev))
        return states

    def inverse_trajectory(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The same states from data: z_N' = x, z_{j-1} = g_j^{-1}(z_j); returned as [z_0, ..., z_N' = x]."""
        states = [x]
        for k, k_prev in reversed(self._steps):
            states.append(self.invert_step(states[-1], k, k_prev)[0])
        return states[::-1]
