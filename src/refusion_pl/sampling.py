"""Reverse-time sampling of the IR-SDE: ``sde`` (Euler-Maruyama), ``ode`` (probability flow), ``posterior``,
and the exponential-integrator solvers ``mr_ode1``/``mr_ode2``/``mr_sde1``/``mr_sde2`` (see :func:`sample_ei`).

With all ``T`` steps the samplers apply the one-step formulas of the original exactly. With fewer steps they
walk a sub-sequence of the trained timesteps and jump between non-adjacent ``t > s`` with the closed-form
two-timestep formulas of :class:`~refusion_pl.sde.IRSDE` (reusing one-step formulas over a longer jump would
leave the state at the wrong noise level and never reach ``x_0``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from refusion_pl.sde import IRSDE

# Exponential-integrator solvers of the probability-flow ODE and the reverse SDE, order 1 or 2 (after MR Sampler,
# Li et al. 2025; derived from the IR-SDE marginals in sample_ei's docstring).
EI_SAMPLERS = ("mr_ode1", "mr_ode2", "mr_sde1", "mr_sde2")
SAMPLERS = ("sde", "ode", "posterior", *EI_SAMPLERS)
SPACINGS = ("ou", "uniform", "logsnr")

NoiseModel = Callable[[Tensor, Tensor, Tensor], Tensor]


def timestep_schedule(T: int, steps: int) -> list[int]:
    """Descending timesteps ``[T, ..., 0]`` with ``steps`` evenly spaced jumps (``steps + 1`` entries).

    Rounds half up in integer arithmetic so the entries are strictly decreasing for any ``steps <= T``;
    ``steps == T`` gives every timestep.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T={T!r} must be an integer >= 1")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps={steps!r} must be an integer in 1..T={T}")
    return [(2 * T * i + steps) // (2 * steps) for i in range(steps, -1, -1)]


def ou_time_schedule(thetas_cumsum: Tensor, steps: int) -> list[int]:
    """Descending timesteps ``[T, ..., 0]`` evenly spaced on the process's own clock ``thetas_cumsum``.

    The state moves fastest where theta is large (near T for the cosine schedule), so equal jumps of the
    integrated rate put shorter jumps there and longer ones near 0, where little changes. Each entry is the
    timestep nearest its target on the clock, kept strictly decreasing; ``steps == T`` gives every timestep
    and a constant schedule gives the evenly spaced ``timestep_schedule``.
    """
    T = len(thetas_cumsum) - 1
    timestep_schedule(T, steps)  # same validation
    clock = thetas_cumsum.double().tolist()
    out = [T]
    for i in range(1, steps):
        target = clock[T] * (1 - i / steps)
        lowest = steps - i  # leave room for the remaining distinct entries above 0
        out.append(min(range(lowest, out[-1]), key=lambda t: (abs(clock[t] - target), -t)))
    return [*out, 0]


def logsnr_time_schedule(sde: IRSDE, steps: int) -> list[int]:
    """Descending timesteps ``[T, ..., 1, 0]`` evenly spaced in the log signal-to-noise ``l`` of ``sample_ei``.

    ``l`` is infinite at 0, so the ``steps - 1`` jumps before the last are even in ``l`` from ``T`` to 1 and the
    last goes from 1 to 0. The process clock puts jumps of ``log((k + 1) / k) / 2`` in ``l`` near 0 whatever the
    number of steps, which caps second-order solvers; this spacing does not. ``steps == T`` gives every timestep.
    """
    timestep_schedule(sde.T, steps)  # same validation
    clock = _clock(sde, list(range(sde.T + 1)))
    ell = [math.inf] + [-0.5 * math.log(math.expm1(2 * c)) for c in clock[1:]]
    out = [sde.T]
    for i in range(1, steps):
        target = ell[sde.T] + (ell[1] - ell[sde.T]) * i / (steps - 1)
        lowest = steps - i  # leave room for the remaining distinct entries above 0
        out.append(min(range(lowest, out[-1]), key=lambda t: (abs(ell[t] - target), -t)))
    return [*out, 0]


class _Noise:
    """Fresh normals of std ``scale`` into one reused buffer, from ``generator`` whatever device it lives on.

    ``scale=0`` (temperature 0) returns zeros and draws nothing.
    """

    def __init__(self, like: Tensor, generator: torch.Generator | None, scale: float = 1.0) -> None:
        self.generator = generator
        self.like = like
        self.scale = scale
        gen_device = generator.device if generator is not None else like.device
        self.buffer = torch.empty(like.shape, dtype=like.dtype, device=gen_device)
        if scale == 0:
            self.buffer.zero_()

    def __call__(self) -> Tensor:
        if self.scale != 0:
            self.buffer.normal_(generator=self.generator)
            if self.scale != 1:
                self.buffer.mul_(self.scale)
        return self.buffer.to(self.like.device)


def check_temperature(temperature: float, key: str = "temperature") -> float:
    """A sampling temperature: a finite number >= 0 (1 = the original process), else a ValueError naming ``key``."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"{key}={temperature!r} must be a number >= 0 (1 samples the trained process)")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(
            f"{key}={temperature!r} must be a finite number >= 0 (1 samples the trained process)"
        )
    return float(temperature)


@torch.no_grad()
def sample(
    sde: IRSDE,
    model: NoiseModel,
    mu: Tensor,
    x_T: Tensor | None = None,
    sampler: str = "sde",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    spacing: str = "ou",
    temperature: float = 1.0,
) -> Tensor:
    """Run the reverse process from ``x_T`` (default ``mu + temperature lambda z``) down to ``x_0``.

    ``model(x, mu, t)`` predicts the noise; ``t`` is an int64 tensor of shape ``(B,)``.
    ``steps=None`` or ``T`` reproduces the original sampler; fewer steps use the respaced jumps along
    ``spacing``: ``ou`` (even on the process clock ``thetas_cumsum``, the default), ``uniform`` in t, or
    ``logsnr`` (even in the log signal-to-noise, see :func:`logsnr_time_schedule`).

    ``temperature`` scales every noise draw: the start state's and, for the stochastic samplers, each step's.
    1 is the trained process (and the original's sampler). 0 starts from ``mu`` itself and draws nothing, so
    the result is deterministic: a small network reads the start noise of a dark or barely degraded region as
    something to restore and paints latent-scale blotches there; without it, it changes what it is sure of.
    """
    temperature = check_temperature(temperature)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown; allowed: {', '.join(SAMPLERS)}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing={spacing!r} is unknown; allowed: {', '.join(SPACINGS)}")
    steps = sde.T if steps is None else steps
    schedule: list[int] = []
    if sampler in EI_SAMPLERS and steps == sde.T:
        schedule = list(range(sde.T, -1, -1))
    elif steps != sde.T:  # the full loop needs no schedule; building one also validates ``steps``
        if spacing == "ou":
            schedule = ou_time_schedule(sde.thetas_cumsum, steps)
        elif spacing == "logsnr":
            schedule = logsnr_time_schedule(sde, steps)
        else:
            schedule = timestep_schedule(sde.T, steps)
    noise = _Noise(mu, generator, temperature)
    x = mu + sde.lam * noise() if x_T is None else x_T.to(mu)
    if sampler in EI_SAMPLERS:
        return sample_ei(sde, model, mu, x, schedule, sampler, noise, progress)
    if steps == sde.T:
        return _full_loop(sde, model, mu, x, sampler, noise, progress)
    return sample_between(sde, model, mu, x, schedule, sampler, noise, progress)


def _batch_timesteps(schedule: list[int], mu: Tensor) -> Tensor:
    """All model timesteps at once, ``(len(schedule), B)`` int64 on ``mu``'s device: no per-step copies."""
    t = torch.tensor(schedule, dtype=torch.int64, device=mu.device)
    return t[:, None].repeat(1, mu.shape[0])


def _full_loop(
    sde: IRSDE, model: NoiseModel, mu: Tensor, x: Tensor, sampler: str, noise: _Noise, progress: bool
) -> Tensor:
    """The original's ``t = T..1`` loop with the one-step formulas."""
    t_batch = _batch_timesteps(list(range(sde.T, 0, -1)), mu)
    for i in tqdm(range(sde.T), desc=f"{sampler} sampling", disable=not progress):
        t = sde.T - i
        noise_pred = model(x, mu, t_batch[i])
        if sampler == "posterior":
            x0 = sde.x0_from_noise(x, mu, noise_pred, t)
            x = sde.reverse_optimum(x, x0, mu, t) + sde.posterior_std(t) * noise()
            continue
        score = sde.score_from_noise(noise_pred, t)
        if sampler == "sde":
            x = sde.reverse_sde_step(x, mu, score, t, noise())
        else:
            x = sde.reverse_ode_step(x, mu, score, t)
    return x


def sample_between(
    sde: IRSDE,
    model: NoiseModel,
    mu: Tensor,
    x: Tensor,
    schedule: list[int],
    sampler: str = "posterior",
    noise: _Noise | torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Respaced reverse process along ``schedule`` (descending, ending at 0) with two-timestep jumps.

    ``sde`` and ``posterior`` draw ``x_s ~ q(x_s | x_t, x0_hat)``; ``ode`` takes the deterministic
    DDIM-like jump. The last jump lands on ``s = 0`` and so returns ``x0_hat``, as the full sampler's
    ``t = 1`` step does. Usable with every timestep too (then equal to the one-step posterior up to rounding).
    """
    if sampler not in SAMPLERS[:3]:
        raise ValueError(f"sampler={sampler!r} is unknown here; allowed: {', '.join(SAMPLERS[:3])}")
    _check_schedule(sde, schedule)
    if not isinstance(noise, _Noise):
        noise = _Noise(mu, noise)
    t_batch = _batch_timesteps(schedule, mu)
    for i in tqdm(range(len(schedule) - 1), desc=f"{sampler} sampling", disable=not progress):
        t, s = schedule[i], schedule[i + 1]
        x0 = sde.x0_from_noise(x, mu, model(x, mu, t_batch[i]), t)
        if sampler == "ode":
            x = sde.ode_jump(x, x0, mu, t, s)
        else:
            x = sde.posterior_mean_between(x, x0, mu, t, s) + sde.posterior_std_between(t, s) * noise()
    return x


def _check_schedule(sde: IRSDE, schedule: list[int]) -> None:
    bad = any(b >= a for a, b in itertools.pairwise(schedule)) or len(schedule) < 2
    if bad or schedule[-1] != 0 or schedule[0] > sde.T:
        raise ValueError(f"schedule={schedule!r} must be strictly decreasing from <= T={sde.T} to 0")


def _clock(sde: IRSDE, schedule: list[int]) -> list[float]:
    """``Theta_t = thetas_cumsum[t] dt`` in float64 (from the hi/lo pair), for each entry of ``schedule``."""
    hi, lo = sde._cumsum_hi.double().cpu(), sde._cumsum_lo.double().cpu()
    return [float(hi[t] + lo[t]) * sde.dt for t in schedule]


def sample_ei(
    sde: IRSDE,
    model: NoiseModel,
    mu: Tensor,
    x: Tensor,
    schedule: list[int],
    sampler: str = "mr_ode2",
    noise: _Noise | torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Exponential-integrator solvers along ``schedule`` (descending, ending at 0): one network call per step.

    With ``y = x - mu``, ``alpha_t = exp(-Theta_t)``, ``sigma_bar_t = lambda sqrt(1 - alpha_t^2)`` and
    ``d = x0_hat - mu`` (the network's output converted to data whatever it predicts), the log signal-to-noise
    ``l_t = log(alpha_t lambda / sigma_bar_t) = -log(expm1(2 Theta_t)) / 2`` makes both reverse processes
    linear with exact solutions from ``t`` to ``s`` (``h = l_s - l_t > 0``):

    - probability-flow ODE: ``y_s / sigma_bar_s = y_t / sigma_bar_t + (1 / lambda) int d(l) e^l dl``;
    - reverse SDE: ``y_s e^{2 l_s} / alpha_s = y_t e^{2 l_t} / alpha_t + int d(l) 2 e^{2l} dl`` plus Gaussian noise
      of variance ``lambda^2 (1 - alpha_s^2)(1 - e^{-2h})``.

    Only the integral of ``d`` is approximated: order 1 holds ``d`` at ``d_t`` (then ``mr_ode1`` is the
    DDIM-like ``ode`` jump and ``mr_sde1`` the ``posterior`` jump, exactly), order 2 makes it linear in ``l``
    through the previous step's ``d`` (multistep: no extra network call). The last jump, to ``s = 0`` where
    ``l`` is infinite, returns ``d`` extrapolated to ``t = 0`` linearly in ``e^{-2l}`` (Tweedie: ``d`` deviates
    from its ``t = 0`` value by ``O(sigma_bar^2)``); the first step, lacking a previous ``d``, is order 1.
    """
    if sampler not in EI_SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is unknown here; allowed: {', '.join(EI_SAMPLERS)}")
    _check_schedule(sde, schedule)
    if not isinstance(noise, _Noise):
        noise = _Noise(mu, noise)
    stochastic, order = sampler.startswith("mr_sde"), int(sampler[-1])
    clock = _clock(sde, schedule)
    t_batch = _batch_timesteps(schedule, mu)
    y = x - mu
    prev: tuple[float, Tensor] | None = None  # (l, d) of the previous step
    for i in tqdm(range(len(schedule) - 1), desc=f"{sampler} sampling", disable=not progress):
        t = schedule[i]
        d = sde.x0_from_noise(x, mu, model(x, mu, t_batch[i]), t) - mu
        th_t, th_s = clock[i], clock[i + 1]
        l_t = -0.5 * math.log(math.expm1(2 * th_t))
        if schedule[i + 1] == 0:
            if order == 2 and prev is not None:
                # Extrapolate d to e^{-2l} = 0 through (e^{-2l_prev}, d_prev) and (e^{-2l_t}, d_t).
                w_t, w_p = math.expm1(2 * th_t), math.exp(-2 * prev[0])
                d = d - (d - prev[1]) * (w_t / (w_t - w_p))
            y = d
            break
        l_s = -0.5 * math.log(math.expm1(2 * th_s))
        h = l_s - l_t
        alpha_s = math.exp(-th_s)
        slope = (d - prev[1]) / (l_t - prev[0]) if order == 2 and prev is not None else None
        if stochastic:
            e2h = math.exp(-2 * h)
            y = (alpha_s / math.exp(-th_t)) * e2h * y + alpha_s * (1 - e2h) * d
            if slope is not None:
                y = y + alpha_s * (h - 0.5 + 0.5 * e2h) * slope
            y = y + sde.lam * math.sqrt(-math.expm1(-2 * th_s) * -math.expm1(-2 * h)) * noise()
        else:
            eh = math.exp(-h)
            ratio = math.sqrt(math.expm1(-2 * th_s) / math.expm1(-2 * th_t))  # sigma_bar_s / sigma_bar_t
            y = ratio * y + alpha_s * (1 - eh) * d
            if slope is not None:
                y = y + alpha_s * (h - 1 + eh) * slope
        prev = (l_t, d)
        x = mu + y
    return mu + y
