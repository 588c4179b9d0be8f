"""Conditional data with a known truth: simulation-based-inference tasks whose posterior
has a closed form, for fitting conditional flows q(theta | x).

A task draws parameters theta from its prior and an observation x from its simulator;
a conditional flow over theta (its context: x) is fitted to (theta, x) pairs from the
joint. It is judged at fixed observations x_1..x_K (the same for every seed, as sbibm's
reference observations are) on draws from each exact posterior p(theta | x_k), so
``mean(log p - log q)`` over an observation's draws estimates KL(p(. | x_k) || q(. | x_k)).

- ``gaussian_linear``: sbibm's task of that name: theta in R^10, prior N(0, 0.1 I),
  x | theta ~ N(theta, 0.1 I) (context 10); posterior N(x / 2, 0.05 I).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)
OBSERVATIONS = 5  # fixed observations each fit is judged at
OBSERVATION_SEED = 1000  # they are drawn from the joint with this seed, whatever the fit's seed


@dataclass(frozen=True)
class Task:
    """A task with an exact posterior. ``simulate(n, generator)`` gives (theta (n, dim),
    x (n, features)) from the joint; ``posterior_sample(x, n, generator)`` n draws
    (n, dim) from p(theta | x) for one x (features,); ``log_posterior(theta, x)`` (m,)
    in nats for theta (m, dim) and x (m, features); ``entropy`` the posterior's
    differential entropy in nats (the same for every x)."""

    name: str
    dim: int
    features: int
    simulate: Callable[[int, torch.Generator], tuple[Tensor, Tensor]]
    posterior_sample: Callable[[Tensor, int, torch.Generator], Tensor]
    log_posterior: Callable[[Tensor, Tensor], Tensor]
    entropy: float
    about: str


def _gaussian_linear(dim: int = 10, prior_var: float = 0.1, noise_var: float = 0.1) -> Task:
    post_var = 1.0 / (1.0 / prior_var + 1.0 / noise_var)  # 0.05
    shrink = post_var / noise_var  # the posterior mean is shrink * x (1/2)

    def simulate(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        theta = math.sqrt(prior_var) * torch.randn(n, dim, generator=generator, dtype=torch.float64)
        return theta, theta + math.sqrt(noise_var) * torch.randn(n, dim, generator=generator, dtype=torch.float64)

    def posterior_sample(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
        noise = torch.randn(n, dim, generator=generator, dtype=torch.float64)
        return shrink * x.double() + math.sqrt(post_var) * noise

    def log_posterior(theta: Tensor, x: Tensor) -> Tensor:
        sq = (theta.double() - shrink * x.double()).square().sum(-1)
        return -0.5 * (sq / post_var + dim * (LOG_2PI + math.log(post_var)))

    entropy = 0.5 * dim * (1 + LOG_2PI + math.log(post_var))
    about = "sbibm's gaussian_linear: prior N(0, 0.1 I_10), x ~ N(theta, 0.1 I_10); posterior N(x/2, 0.05 I)"
    return Task("gaussian_linear", dim, dim, simulate, posterior_sample, log_posterior, entropy, about)


TASKS = {task.name: task for task in (_gaussian_linear(),)}


def observations(task: Task) -> Tensor:
    """The fixed observations (OBSERVATIONS, features), float64: the same for every seed."""
    _, x = task.simulate(OBSERVATIONS, torch.Generator().manual_seed(OBSERVATION_SEED))
    return x


def judged(task: Task, per_observation: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The test split: ``per_observation`` draws from each fixed observation's exact
    posterior (seeded by ``seed``). Returns theta (K m, dim), their contexts (K m,
    features) and each point's observation index (K m,), grouped by observation."""
    generator = torch.Generator().manual_seed(seed)
    xs = observations(task)
    theta = torch.cat([task.posterior_sample(x, per_observation, generator) for x in xs])
    index = torch.arange(len(xs)).repeat_interleave(per_observation)
    return theta, xs[index], index
