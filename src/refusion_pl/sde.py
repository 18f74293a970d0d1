"""The mean-reverting IR-SDE of Refusion: schedules, marginals, reverse steps and the training loss.

Pure torch and stateless per batch: the degraded mean ``mu`` is always passed in, so one object serves
every batch, device and sampler. Formulas follow the method page, section 1.

Timesteps ``t`` (and ``s``) may be a Python int (one step for the whole batch) or an integer tensor of shape
``(B,)`` or ``(B, 1, ..., 1)``; coefficients are reshaped to broadcast against tensors of any rank.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

SCHEDULES = ("cosine", "linear", "constant")
# Stage-2 objectives: "mean" matches the reverse-SDE mean (the paper), "x0" the clean image (IRSDE.x0_loss).
LOSSES = ("mean", "x0")
#: How a training loss measures an error: absolute (the original's) or squared.
LOSS_NORMS = ("l1", "l2")

Timestep = int | Tensor


def _cosine_thetas(T: int) -> Tensor:
    """Cosine schedule of the original; computed in float32 because the reference tables were."""
    n = T + 2
    s = 0.008
    x = torch.linspace(0, n, n + 1, dtype=torch.float32)
    a = torch.cos(((x / n) + s) / (1 + s) * math.pi * 0.5) ** 2
    a = a / a[0]
    return 1 - a[1:-1]


def _linear_thetas(T: int) -> Tensor:
    scale = 1000 / (T + 1)
    return torch.linspace(scale * 1e-4, scale * 0.02, T + 1, dtype=torch.float32)


def _constant_thetas(T: int) -> Tensor:
    return torch.ones(T + 1, dtype=torch.float32)


_THETA_FNS = {"cosine": _cosine_thetas, "linear": _linear_thetas, "constant": _constant_thetas}


def _validate(max_sigma: float, T: int, schedule: str, eps: float) -> None:
    """Reject settings that would silently give NaN tables or a different SDE than asked for."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is unknown; allowed: {', '.join(SCHEDULES)}")
    if isinstance(T, bool) or not isinstance(T, Integral) or T < 1:
        raise ValueError(f"T={T!r} must be an integer >= 1")
    if isinstance(eps, bool) or not isinstance(eps, Real) or not 0 < eps < 1:
        raise ValueError(f"eps={eps!r} must be a number in (0, 1)")
    if isinstance(max_sigma, bool) or not isinstance(max_sigma, Real) or not math.isfinite(max_sigma):
        raise ValueError(f"max_sigma={max_sigma!r} must be a finite number > 0")
    if max_sigma <= 0:
        # Zero is rejected too: sigma_bar would vanish and the score (noise / sigma_bar) be undefined.
        raise ValueError(f"max_sigma={max_sigma!r} must be > 0 (values >= 1 are in /255 units)")


def _device_of(t: Timestep, s: Timestep, default: torch.device) -> torch.device:
    """Device of whichever timestep is a tensor, so int/tensor mixes stay on one device."""
    for v in (t, s):
        if isinstance(v, Tensor):
            return v.device
    return default


class IRSDE:
    """Discrete IR-SDE ``dx = theta_t (mu - x) dt + sigma_t dW`` with ``sigma_t^2 = 2 lambda^2 theta_t``.

    Public tables (1-D float32, length ``T + 1``; index 0 is the clean image and never sampled):
    ``thetas``, ``sigmas``, ``thetas_cumsum``, ``sigma_bars``. ``dt`` is a Python float.
    Tables are built in float32 exactly like the original so that its checkpoints see the same SDE.
    """

    def __init__(self, max_sigma: float = 50, T: int = 100, schedule: str = "cosine", eps: float = 0.005):
        _validate(max_sigma, T, schedule, eps)
        self.max_sigma = float(max_sigma)
        self.T = int(T)
        self.schedule = schedule
        self.eps = float(eps)
        self.lam = self.max_sigma / 255 if self.max_sigma >= 1 else self.max_sigma

        thetas = _THETA_FNS[schedule](self.T)
        cumsum = torch.cumsum(thetas, dim=0) - thetas[0]
        # dt makes exp(-cumsum[T] dt) = eps; kept as the float32 value the original multiplies with.
        self.dt = float(torch.tensor(-math.log(self.eps), dtype=torch.float32) / cumsum[-1])
        self.thetas = thetas
        self.sigmas = torch.sqrt(2 * self.lam**2 * thetas)
        self.thetas_cumsum = cumsum
        # lambda^2 inside the root reproduces the original's rounding bit for bit.
        self.sigma_bars = torch.sqrt(self.lam**2 * (1 - torch.exp(-2 * cumsum * self.dt)))
        # Float32 cumsum differences lose up to ~1e-4 of a small theta_t; a hi/lo float32 pair of the
        # float64 cumsum gives the two-timestep jumps full float32 accuracy on any device (MPS has no float64).
        cumsum64 = torch.cumsum(thetas.double(), dim=0) - thetas[0].double()
        self._cumsum_hi = cumsum64.float()
        self._cumsum_lo = (cumsum64 - self._cumsum_hi.double()).float()
        self._cache: dict[torch.device, dict[str, Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"IRSDE(max_sigma={self.max_sigma:g}, T={self.T}, schedule={self.schedule!r}, "
            f"eps={self.eps:g}, lam={self.lam:.6g}, dt={self.dt:.6g})"
        )

    # ------------------------------------------------------------------ table look-ups

    @property
    def device(self) -> torch.device:
        return self.thetas.device

    def to(self, device: torch.device | str) -> IRSDE:
        """Move the public tables (look-ups already follow each input's device; this just pre-places them)."""
        for name in ("thetas", "sigmas", "thetas_cumsum", "sigma_bars", "_cumsum_hi", "_cumsum_lo"):
            setattr(self, name, getattr(self, name).to(device))
        self._cache.clear()
        return self

    def _tables(self, device: torch.device) -> dict[str, Tensor]:
        """Per-device copies, made once, so steps never copy tables host-to-device."""
        tables = self._cache.get(device)
        if tables is None:
            names = ("thetas", "sigmas", "thetas_cumsum", "sigma_bars", "_cumsum_hi", "_cumsum_lo")
            tables = {n: getattr(self, n).to(device) for n in names}
            self._cache[device] = tables
        return tables

    def _at(
        self,
        name: str,
        t: Timestep,
        like: Tensor | None = None,
        offset: int = 0,
        device: torch.device | None = None,
    ) -> Tensor:
        """``table[t + offset]`` shaped to broadcast against ``like`` (or shaped like ``t`` without it)."""
        if device is None:
            device = like.device if like is not None else t.device if isinstance(t, Tensor) else self.device
        table = self._tables(device)[name]
        if not isinstance(t, Tensor):
            index = int(t) + offset
            if not 0 <= index <= self.T:  # a negative index would silently wrap to the end of the table
                raise ValueError(
                    f"timestep {t} is out of range for this step (table index {index} not in 0..{self.T})"
                )
            return table[index]
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"timesteps must be integers, got dtype {t.dtype}")
        t = t.to(device)
        if offset:
            t = t + offset
        if like is None:
            return table[t]
        return table[t.reshape(-1)].reshape(-1, *([1] * (like.ndim - 1)))

    def _decay(self, t: Timestep, like: Tensor | None = None, offset: int = 0) -> Tensor:
        """``exp(-thetas_cumsum[t] dt)``: how much of ``x_0 - mu`` survives at step ``t``."""
        return torch.exp(-self._at("thetas_cumsum", t, like, offset) * self.dt)

    # ------------------------------------------------------------------ forward process

    def sigma_bar(self, t: Timestep, like: Tensor | None = None) -> Tensor:
        """Marginal standard deviation at ``t``: shaped like ``t``, or to broadcast against ``like``.

        Pass ``like`` with a ``(B,)`` ``t``: a bare ``(B,)`` result would broadcast against the last axis.
        """
        return self._at("sigma_bars", t, like)

    def mu_bar(self, x0: Tensor, mu: Tensor, t: Timestep) -> Tensor:
        """Marginal mean ``mu + (x0 - mu) exp(-thetas_cumsum[t] dt)``."""
        return mu + (x0 - mu) * self._decay(t, x0)

    def forward_sample(self, x0: Tensor, mu: Tensor, t: Timestep, noise: Tensor) -> Tensor:
        """``x_t`` drawn from the closed-form marginal with the given standard normal ``noise``."""
        return self.mu_bar(x0, mu, t) + self._at("sigma_bars", t, x0) * noise

    def sample_timesteps(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Training timesteps ``t ~ U{1..T}``, int64 of shape ``(batch,)``."""
        draw_on = generator.device if generator is not None else device
        t = torch.randint(1, self.T + 1, (batch,), generator=generator, device=draw_on)
        return t.to(device) if device is not None else t

    # ------------------------------------------------------------------ one-step reverse process

    def score_from_noise(self, noise: Tensor, t: Timestep) -> Tensor:
        """Score of the marginal from predicted noise: ``-noise / sigma_bars[t]``."""
        return -noise / self._at("sigma_bars", t, noise)

    def x0_from_noise(self, xt: Tensor, mu: Tensor, noise: Tensor, t: Timestep) -> Tensor:
        """Invert the marginal: the clean image that ``noise`` implies for ``x_t``."""
        sb = self._at("sigma_bars", t, xt)
        return (xt - mu - sb * noise) * torch.exp(self._at("thetas_cumsum", t, xt) * self.dt) + mu

    def noise_from_x0(self, xt: Tensor, mu: Tensor, x0: Tensor, t: Timestep) -> Tensor:
        """The noise that takes ``x0`` to ``x_t`` under the marginal (inverse of :meth:`x0_from_noise`)."""
        return (xt - self.mu_bar(x0, mu, t)) / self._at("sigma_bars", t, xt)

    def _drift(self, x: Tensor, mu: Tensor, score: Tensor, t: Timestep, score_weight: float) -> Tensor:
        theta = self._at("thetas", t, x)
        sigma = self._at("sigmas", t, x)
        return (theta * (mu - x) - score_weight * sigma**2 * score) * self.dt

    def reverse_sde_mean(self, x: Tensor, mu: Tensor, score: Tensor, t: Timestep) -> Tensor:
        """Euler-Maruyama reverse-SDE step without its noise term (also the training prediction)."""
        return x - self._drift(x, mu, score, t, 1.0)

    def reverse_sde_step(self, x: Tensor, mu: Tensor, score: Tensor, t: Timestep, noise: Tensor) -> Tensor:
        """Full reverse-SDE step: the mean plus ``sigma_t sqrt(dt) noise``."""
        sigma = self._at("sigmas", t, x)
        return self.reverse_sde_mean(x, mu, score, t) + sigma * math.sqrt(self.dt) * noise

    def reverse_ode_step(self, x: Tensor, mu: Tensor, score: Tensor, t: Timestep) -> Tensor:
        """Probability-flow ODE Euler step (half the score weight of the SDE, no noise)."""
        return x - self._drift(x, mu, score, t, 0.5)

    def reverse_optimum(self, xt: Tensor, x0: Tensor, mu: Tensor, t: Timestep) -> Tensor:
        """Mean of ``q(x_{t-1} | x_t, x_0)``: the target of the maximum-likelihood loss."""
        a = torch.exp(-self._at("thetas", t, xt) * self.dt)
        b = self._decay(t, xt)
        c = self._decay(t, xt, offset=-1)
        denom = 1 - b**2
        return a * (1 - c**2) / denom * (xt - mu) + c * (1 - a**2) / denom * (x0 - mu) + mu

    def posterior_std(self, t: Timestep, like: Tensor | None = None) -> Tensor:
        """Standard deviation of ``q(x_{t-1} | x_t, x_0)``, shaped like ``t`` or to broadcast against ``like``.

        The variance ratio is clamped at ``1e-20 * dt`` before the square root, as in the original, so that
        the last step (t = 1, zero variance) stays finite.
        """
        a2 = torch.exp(-2 * self._at("thetas", t, like) * self.dt)
        b2 = torch.exp(-2 * self._at("thetas_cumsum", t, like) * self.dt)
        c2 = torch.exp(-2 * self._at("thetas_cumsum", t, like, offset=-1) * self.dt)
        return self._clamped_std((1 - a2) * (1 - c2) / (1 - b2))

    def _clamped_std(self, var_ratio: Tensor) -> Tensor:
        return self.lam * torch.sqrt(torch.clamp(var_ratio, min=1e-20 * self.dt))

    def training_loss(
        self, noise_pred: Tensor, xt: Tensor, x0: Tensor, mu: Tensor, t: Timestep, norm: str = "l1"
    ) -> Tensor:
        """L1 (or ``norm``) between the reverse-SDE mean implied by ``noise_pred`` and the optimal ``x_{t-1}``.

        Mean over pixels, then over the batch (equal to the global mean for equally sized images).
        """
        score = self.score_from_noise(noise_pred, t)
        pred = self.reverse_sde_mean(xt, mu, score, t)
        target = self.reverse_optimum(xt, x0, mu, t)
        return _error(pred - target, norm)

    def x0_loss(
        self, noise_pred: Tensor, xt: Tensor, x0: Tensor, mu: Tensor, t: Timestep, norm: str = "l1"
    ) -> Tensor:
        """L1 (or ``norm``) between the clean image implied by ``noise_pred`` and ``x0``: every timestep weighs
        the restoration.

        :meth:`training_loss` weighs an error in ``x0`` by its share of the next reverse step, which vanishes
        near ``t = T``: there the network must infer ``x0`` from ``mu`` alone (the restoration itself), yet it
        is hardly trained to. Short runs then learn to denoise but not to restore (measured in the README).
        """
        pred = self.x0_from_noise(xt, mu, noise_pred, t)
        return _error(pred - x0, norm)

    def loss(
        self, name: str, noise_pred: Tensor, xt: Tensor, x0: Tensor, mu: Tensor, t: Timestep, norm: str = "l1"
    ) -> Tensor:
        """The training loss ``name`` (one of ``LOSSES``), its errors measured by ``norm`` (``LOSS_NORMS``)."""
        if norm not in LOSS_NORMS:
            raise ValueError(
                f"sde.loss_norm={norm!r} is not supported; choose one of: {', '.join(LOSS_NORMS)}"
            )
        if name == "mean":
            return self.training_loss(noise_pred, xt, x0, mu, t, norm)
        if name == "x0":
            return self.x0_loss(noise_pred, xt, x0, mu, t, norm)
        raise ValueError(f"sde.loss={name!r} is not supported; choose one of: {', '.join(LOSSES)}")

    # ------------------------------------------------------------------ jumps between two timesteps t > s

    def _between(self, t: Timestep, s: Timestep, like: Tensor | None) -> tuple[Tensor, ...]:
        """``(a, 1 - a^2, B, 1 - B^2, C, 1 - C^2)``: decays of ``x_t | x_s``, ``x_t | x_0``, ``x_s | x_0``.

        ``1 - exp(-2 u)`` is taken with ``expm1`` because for small ``u`` it is the whole signal.
        """
        device = like.device if like is not None else _device_of(t, s, self.device)

        def at(name: str, step: Timestep) -> Tensor:
            return self._at(name, step, like, device=device)

        gap = (at("_cumsum_hi", t) - at("_cumsum_hi", s)) + (at("_cumsum_lo", t) - at("_cumsum_lo", s))
        cs_t, cs_s = at("thetas_cumsum", t), at("thetas_cumsum", s)
        out = []
        for u in (gap, cs_t, cs_s):
            out += [torch.exp(-u * self.dt), -torch.expm1(-2 * u * self.dt)]
        return tuple(out)

    def posterior_mean_between(self, xt: Tensor, x0: Tensor, mu: Tensor, t: Timestep, s: Timestep) -> Tensor:
        """Mean of ``q(x_s | x_t, x_0)`` for any ``t > s >= 0`` (``reverse_optimum`` when ``s = t - 1``)."""
        a, one_a2, _, one_b2, c, one_c2 = self._between(t, s, xt)
        return a * one_c2 / one_b2 * (xt - mu) + c * one_a2 / one_b2 * (x0 - mu) + mu

    def posterior_std_between(self, t: Timestep, s: Timestep) -> Tensor:
        """Standard deviation of ``q(x_s | x_t, x_0)`` (shaped like ``t``), clamped like ``posterior_std``."""
        _, one_a2, _, one_b2, _, one_c2 = self._between(t, s, None)
        return self._clamped_std(one_a2 * one_c2 / one_b2)

    def ode_jump(self, xt: Tensor, x0: Tensor, mu: Tensor, t: Timestep, s: Timestep) -> Tensor:
        """Deterministic DDIM-like jump ``t -> s``: keep the implied noise, move the mean to step ``s``.

        Exact along the probability-flow trajectory of a known ``x0``; at ``s = 0`` it returns ``x0``.
        """
        _, _, b, _, c, _ = self._between(t, s, xt)
        ratio = self._at("sigma_bars", s, xt) / self._at("sigma_bars", t, xt)
        return mu + c * (x0 - mu) + ratio * (xt - mu - b * (x0 - mu))


def _error(difference: Tensor, norm: str) -> Tensor:
    """Mean absolute (``l1``) or squared (``l2``) error over each sample's pixels, then over the batch.

    L1's optimum is the median of what the data shows for an input, L2's the mean: where a region is as often
    a degradation as content (a soft dark patch: shadow or dark fur), L1 learns all or nothing, L2 a partial
    correction (README, "Dark objects").
    """
    error = difference.abs() if norm == "l1" else difference.square()
    return error.flatten(1).mean(dim=1).mean()
