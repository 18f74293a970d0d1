"""IRSDE against the original implementation's reference vectors, plus closed-form and statistical checks."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import Tensor

from refusion_pl.sde import IRSDE

FIXTURES = Path(__file__).parent / "fixtures" / "original"
FIXTURE_NAMES = ("irsde_cosine_s50_T100.pt", "irsde_linear_s10_T20.pt")
TABLES = ("thetas", "sigmas", "thetas_cumsum", "sigma_bars", "dt")
STEPS = (
    "mu_bar",
    "xt",
    "score",
    "reverse_sde_step_mean",
    "reverse_optimum_step",
    "reverse_ode_step",
    "reverse_optimum_std",
    "x0_from_noise",
    "loss_l1",
)
REL_TOL = 1e-5


@cache
def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def _sde_for(ref: dict) -> IRSDE:
    return IRSDE(float(ref["max_sigma"]), int(ref["T"]), ref["schedule"], float(ref["eps"]))


def assert_rel_close(actual: Tensor, expected: Tensor, tol: float = REL_TOL) -> None:
    """Relative Frobenius error < tol AND every element within tol * max|expected| (no per-element cheating)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.isfinite(actual).all()
    scale = expected.abs().max().clamp_min(1e-30)
    rel_norm = ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()
    max_rel = ((actual - expected).abs().max() / scale).item()
    assert rel_norm < tol and max_rel < tol, (
        f"relative norm error {rel_norm:.3g}, max error/scale {max_rel:.3g}"
    )


def _computed(sde: IRSDE, ref: dict, name: str) -> Tensor:
    """Recompute fixture entry ``name`` from the fixture's inputs only (each step on the reference x_t)."""
    x0, mu, t, noise, noise_pred, xt = (ref[k] for k in ("x0", "mu", "t", "noise", "noise_pred", "xt"))
    score = ref["score"]
    if name in TABLES:
        return torch.as_tensor(sde.dt) if name == "dt" else getattr(sde, name)
    return {
        "mu_bar": lambda: sde.mu_bar(x0, mu, t),
        "xt": lambda: sde.forward_sample(x0, mu, t, noise),
        "score": lambda: sde.score_from_noise(noise_pred, t),
        "reverse_sde_step_mean": lambda: sde.reverse_sde_mean(xt, mu, score, t),
        "reverse_optimum_step": lambda: sde.reverse_optimum(xt, x0, mu, t),
        "reverse_ode_step": lambda: sde.reverse_ode_step(xt, mu, score, t),
        "reverse_optimum_std": lambda: sde.posterior_std(t),
        "x0_from_noise": lambda: sde.x0_from_noise(xt, mu, noise_pred, t),
        "loss_l1": lambda: sde.training_loss(noise_pred, xt, x0, mu, t),
    }[name]()


@pytest.mark.parametrize("name", TABLES + STEPS)
@pytest.mark.parametrize("fixture", FIXTURE_NAMES)
def test_matches_original(fixture: str, name: str) -> None:
    ref = _fixture(fixture)
    sde = _sde_for(ref)
    assert_rel_close(_computed(sde, ref, name), ref[name])


def test_tables_are_float32_length_T_plus_1() -> None:
    sde = IRSDE(50, 100, "cosine", 0.005)
    for name in ("thetas", "sigmas", "thetas_cumsum", "sigma_bars"):
        table = getattr(sde, name)
        assert table.dtype == torch.float32 and table.shape == (101,)
    assert sde.lam == pytest.approx(50 / 255)
    assert IRSDE(0.2, 10).lam == pytest.approx(0.2)
    assert sde.thetas_cumsum[0] == 0 and sde.sigma_bars[0] == 0
    # dt is defined so that only eps of x0 - mu survives at t = T.
    assert math.exp(-float(sde.thetas_cumsum[-1]) * sde.dt) == pytest.approx(0.005, rel=1e-5)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules_are_finite_and_positive(schedule: str) -> None:
    sde = IRSDE(10, 7, schedule, 0.01)
    assert torch.all(sde.thetas[1:] > 0) and torch.all(torch.diff(sde.thetas_cumsum) > 0)
    assert torch.isfinite(sde.sigma_bars).all()


def _step_outputs(sde: IRSDE, t, x0: Tensor, mu: Tensor, noise: Tensor) -> list[Tensor]:
    xt = sde.forward_sample(x0, mu, t, noise)
    score = sde.score_from_noise(noise, t)
    x0_hat = sde.x0_from_noise(xt, mu, noise, t)
    return [
        sde.mu_bar(x0, mu, t),
        xt,
        score,
        x0_hat,
        sde.reverse_sde_mean(xt, mu, score, t),
        sde.reverse_sde_step(xt, mu, score, t, noise),
        sde.reverse_ode_step(xt, mu, score, t),
        sde.reverse_optimum(xt, x0, mu, t),
        sde.posterior_mean_between(xt, x0, mu, t, 2),
        sde.ode_jump(xt, x0, mu, t, 2),
        sde.training_loss(noise, xt, x0, mu, t),
    ]


@pytest.mark.parametrize("shape", [(3, 2, 5, 4), (3, 7), (3, 2, 2, 3, 3)])
def test_timestep_forms_agree(shape: tuple[int, ...]) -> None:
    """An int, a (B,) tensor and a (B,1,...,1) tensor must give identical results on any rank."""
    sde = IRSDE(50, 20, "cosine", 0.005)
    g = torch.Generator().manual_seed(0)
    x0, mu, noise = (torch.randn(shape, generator=g) for _ in range(3))
    b = shape[0]
    forms = [7, torch.full((b,), 7), torch.full((b,) + (1,) * (len(shape) - 1), 7)]
    outs = [_step_outputs(sde, t, x0, mu, noise) for t in forms]
    for other in outs[1:]:
        for got, want in zip(other, outs[0]):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    stds = [sde.posterior_std(t).reshape(-1) for t in forms]
    assert all(torch.equal(s.expand(b), stds[0].expand(b)) for s in stds)
    # With `like`, table look-ups broadcast against x whatever form t takes.
    for lookup in (sde.sigma_bar, sde.posterior_std):
        want = lookup(forms[2])
        for t in forms:
            got = lookup(t, like=x0)
            assert torch.equal((got * torch.ones(shape)), (want * torch.ones(shape)))
            assert got.ndim in (0, len(shape))


def test_per_image_timesteps_broadcast() -> None:
    """Each image uses its own t: batching must equal running images one by one."""
    sde = IRSDE(50, 20, "linear", 0.005)
    g = torch.Generator().manual_seed(1)
    x0, mu, noise = (torch.randn(3, 2, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([1, 9, 20])
    batched = _step_outputs(sde, t, x0, mu, noise)[:-1]
    for i in range(3):
        single = _step_outputs(sde, int(t[i]), x0[i : i + 1], mu[i : i + 1], noise[i : i + 1])[:-1]
        for got, want in zip(batched, single):
            torch.testing.assert_close(got[i : i + 1], want, rtol=0, atol=0)


def test_forward_marginal_matches_stepwise_simulation() -> None:
    """Monte Carlo: simulate x_t step by step and compare with the closed-form marginal (4 sigma bounds).

    The exact one-step transition of dx = theta (mu - x) dt + sigma dW over one step is Gaussian with
    decay exp(-theta_i dt) and variance sigma_i^2 / (2 theta_i) (1 - exp(-2 theta_i dt)); composing steps
    1..t must give thetas_cumsum[t] (which excludes theta_0) and sigma_bars[t].
    """
    sde = IRSDE(50, 100, "cosine", 0.005)
    g = torch.Generator().manual_seed(2)
    n, t_end, x0_val, mu_val = 20000, 37, 0.9, 0.2
    x = torch.full((n,), x0_val, dtype=torch.float64)
    for i in range(1, t_end + 1):
        theta, sigma = float(sde.thetas[i]), float(sde.sigmas[i])
        decay = math.exp(-theta * sde.dt)
        std = math.sqrt(sigma**2 / (2 * theta) * (1 - decay**2))
        x = mu_val + (x - mu_val) * decay + std * torch.randn(n, generator=g, dtype=torch.float64)
    mean = float(sde.mu_bar(torch.tensor(x0_val), torch.tensor(mu_val), t_end))
    var = float(sde.sigma_bar(t_end)) ** 2
    assert abs(x.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert abs(x.var().item() - var) < 4 * var * math.sqrt(2 / (n - 1))


def test_reverse_optimum_at_t1_is_x0() -> None:
    sde = IRSDE(50, 100, "cosine", 0.005)
    g = torch.Generator().manual_seed(3)
    x0, mu, xt = (torch.rand(2, 3, 4, 4, generator=g) for _ in range(3))
    torch.testing.assert_close(sde.reverse_optimum(xt, x0, mu, 1), x0, rtol=1e-5, atol=1e-5)
    # Zero variance at the last step, clamped at 1e-20 * dt before the square root.
    assert float(sde.posterior_std(1)) == pytest.approx(sde.lam * math.sqrt(1e-20 * sde.dt), rel=1e-3)


def _posterior_float64(sde: IRSDE, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q(x_s | x_t, x0) in float64 from the float32 thetas: (coef of x_t - mu, coef of x0 - mu, std)."""
    thetas = sde.thetas.double()
    cumsum = torch.cumsum(thetas, 0) - thetas[0]
    a2, b2, c2 = (torch.exp(-2 * u * sde.dt) for u in (cumsum[t] - cumsum[s], cumsum[t], cumsum[s]))
    k_t = a2.sqrt() * (1 - c2) / (1 - b2)
    k_0 = c2.sqrt() * (1 - a2) / (1 - b2)
    return k_t, k_0, sde.lam * torch.sqrt((1 - a2) * (1 - c2) / (1 - b2))


def _between_coefs(sde: IRSDE, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    ones, zeros = torch.ones(len(t), 1), torch.zeros(len(t), 1)
    k_t = sde.posterior_mean_between(ones, zeros, zeros, t, s)[:, 0].double()
    k_0 = sde.posterior_mean_between(zeros, ones, zeros, t, s)[:, 0].double()
    return k_t, k_0, sde.posterior_std_between(t, s).double()


def _one_step_coefs(sde: IRSDE, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    ones, zeros = torch.ones(len(t), 1), torch.zeros(len(t), 1)
    k_t = sde.reverse_optimum(ones, zeros, zeros, t)[:, 0].double()
    k_0 = sde.reverse_optimum(zeros, ones, zeros, t)[:, 0].double()
    return k_t, k_0, sde.posterior_std(t).double()


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_between_with_adjacent_steps_equals_one_step(schedule: str) -> None:
    """s = t - 1 reproduces reverse_optimum / posterior_std (both are linear in x_t, x0: compare coefficients)."""
    sde = IRSDE(50, 20, schedule, 0.005)
    t = torch.arange(2, 21)
    for got, want in zip(_between_coefs(sde, t, t - 1), _one_step_coefs(sde, t)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    g = torch.Generator().manual_seed(4)
    x0, mu, xt = (torch.rand(20, 3, 4, 4, generator=g) for _ in range(3))
    t = torch.arange(1, 21)  # t = 1 included: both land on x0
    torch.testing.assert_close(
        sde.posterior_mean_between(xt, x0, mu, t, t - 1),
        sde.reverse_optimum(xt, x0, mu, t),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_adjacent_mismatch_at_large_T_is_the_one_step_rounding(schedule: str) -> None:
    """At T = 100 the two differ by up to ~2e-4 relative; all of it is float32 cancellation in the original's
    one-step formula (1 - exp(-2 theta dt) with small theta), which we keep for fidelity. The jump is never
    further from the float64 truth than the one-step formula (plus 1e-6 relative slack).
    """
    sde = IRSDE(50, 100, schedule, 0.005)
    t = torch.arange(2, 101)
    for got, one, ref in zip(
        _between_coefs(sde, t, t - 1), _one_step_coefs(sde, t), _posterior_float64(sde, t, t - 1)
    ):
        assert torch.all((got - ref).abs() <= (one - ref).abs() + 1e-6 * ref.abs())
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_between_matches_float64_for_all_pairs(schedule: str) -> None:
    sde = IRSDE(50, 40, schedule, 0.005)
    t, s = torch.tril_indices(41, 41, offset=-1)  # every pair 40 >= t > s >= 0
    want = _posterior_float64(sde, t, s)
    for got, ref in zip(_between_coefs(sde, t, s), want):
        torch.testing.assert_close(got[s > 0], ref[s > 0], rtol=1e-6, atol=1e-7)
    # s = 0: the jump lands on x0 (no x_t weight, unit x0 weight) with the clamped, negligible std.
    k_t, k_0, std = _between_coefs(sde, t[s == 0], s[s == 0])
    assert torch.all(k_t == 0) and torch.allclose(k_0, torch.ones_like(k_0), atol=1e-6)
    assert torch.all(std < 1e-10)


def test_between_marginalises_to_forward_marginal() -> None:
    """For every t > s: averaging q(x_s | x_t, x0) over x_t ~ q(x_t | x0) must give back q(x_s | x0).

    Writing the posterior mean as mu + k_t (x_t - mu) + k_0 (x0 - mu): the mean condition is
    k_0 + k_t B_t = C_s and the law of total variance k_t^2 sigma_bar_t^2 + std^2 = sigma_bar_s^2.
    """
    sde = IRSDE(50, 30, "cosine", 0.005)
    t, s = torch.tril_indices(31, 31, offset=-1)  # every pair 30 >= t > s >= 0
    k_t, k_0, std = _between_coefs(sde, t, s)
    b = torch.exp(-sde.thetas_cumsum[t].double() * sde.dt)
    c = torch.exp(-sde.thetas_cumsum[s].double() * sde.dt)
    torch.testing.assert_close(k_0 + k_t * b, c, rtol=1e-5, atol=1e-6)
    var_s = k_t**2 * sde.sigma_bars[t].double() ** 2 + std**2
    torch.testing.assert_close(var_s, sde.sigma_bars[s].double() ** 2, rtol=1e-4, atol=1e-9)


def test_ode_jump_follows_the_trajectory_of_a_known_x0() -> None:
    """With the exact x0, jumping t -> s keeps the implied noise: x_s = mu_bar_s + sigma_bar_s z; s = 0 gives x0."""
    sde = IRSDE(50, 100, "cosine", 0.005)
    g = torch.Generator().manual_seed(5)
    x0, mu, z = (torch.rand(2, 3, 4, 4, generator=g) for _ in range(3))
    for t, s in [(100, 60), (60, 59), (17, 3), (40, 0)]:
        xt = sde.forward_sample(x0, mu, t, z)
        torch.testing.assert_close(sde.ode_jump(xt, x0, mu, t, s), sde.forward_sample(x0, mu, s, z))
    torch.testing.assert_close(sde.ode_jump(sde.forward_sample(x0, mu, 40, z), x0, mu, 40, 0), x0)


def test_x0_from_noise_inverts_the_marginal() -> None:
    sde = IRSDE(10, 20, "linear", 0.01)
    g = torch.Generator().manual_seed(6)
    x0, mu, z = (torch.rand(2, 3, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([3, 20])
    torch.testing.assert_close(sde.x0_from_noise(sde.forward_sample(x0, mu, t, z), mu, z, t), x0)


def test_noise_from_x0_recovers_the_noise_of_the_marginal() -> None:
    sde = IRSDE(50, 100, "cosine", 0.005)
    g = torch.Generator().manual_seed(7)
    x0, mu, z = (torch.rand(3, 3, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([1, 37, 100])
    xt = sde.forward_sample(x0, mu, t, z)
    torch.testing.assert_close(sde.noise_from_x0(xt, mu, x0, t), z, atol=2e-4, rtol=0)
    torch.testing.assert_close(sde.x0_from_noise(xt, mu, sde.noise_from_x0(xt, mu, x0, t), t), x0)


def test_sample_timesteps_range_and_reproducible() -> None:
    sde = IRSDE(50, 10)
    t = sde.sample_timesteps(5000, torch.Generator().manual_seed(7), "cpu")
    assert t.dtype == torch.int64 and t.shape == (5000,)
    assert int(t.min()) == 1 and int(t.max()) == 10
    assert torch.equal(t, sde.sample_timesteps(5000, torch.Generator().manual_seed(7), "cpu"))


def test_bad_timesteps_are_rejected() -> None:
    sde = IRSDE(50, 10)
    with pytest.raises(TypeError, match="integers"):
        sde.sigma_bar(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="timestep 0"):
        sde.posterior_std(0)  # would read thetas_cumsum[-1] = thetas_cumsum[T]
    with pytest.raises(ValueError, match="timestep 11"):
        sde.sigma_bar(11)


# Every tensor IRSDE.to moves (the hi/lo pair is the float64 clock of the two-timestep jumps).
MOVED_TABLES = ("thetas", "sigmas", "thetas_cumsum", "sigma_bars", "_cumsum_hi", "_cumsum_lo")


def test_to_moves_every_table_and_drops_cached_copies() -> None:
    """``to`` places all six tables (the hi/lo clock pair too) and forgets per-device copies made before."""
    sde, reference = IRSDE(50, 10), IRSDE(50, 10)
    sde.sigma_bar(torch.tensor([3, 7]), like=torch.zeros(2, 1))  # caches CPU copies of the tables
    assert sde.to("meta") is sde and sde.device == torch.device("meta")
    for name in MOVED_TABLES:
        moved, kept = getattr(sde, name), getattr(reference, name)
        assert (moved.device.type, moved.dtype, moved.shape) == ("meta", kept.dtype, kept.shape), name
    with pytest.raises(NotImplementedError):  # no stale CPU copy answers: the cache was cleared
        sde.sigma_bar(torch.tensor([3]), like=torch.zeros(1, 1))
    looked_up = sde.sigma_bar(torch.tensor([3], device="meta"), like=torch.zeros(1, 1, device="meta"))
    assert looked_up.device.type == "meta"


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU: a CPU-to-CPU move cannot change values"
)
def test_to_keeps_values_on_a_gpu() -> None:
    sde, reference = IRSDE(50, 10).to("cuda"), IRSDE(50, 10)
    for name in MOVED_TABLES:
        assert torch.equal(getattr(sde, name).cpu(), getattr(reference, name)), name
    t = torch.tensor([1, 5, 10], device="cuda")
    assert torch.equal(sde.sigma_bar(t).cpu(), reference.sigma_bar(t.cpu()))


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"schedule": "sigmoid"}, "schedule='sigmoid'.*cosine, linear, constant"),
        ({"T": 0}, "T=0"),
        ({"T": 10.5}, "T=10.5"),
        ({"T": True}, "T=True"),
        ({"eps": 0.0}, "eps=0.0"),
        ({"eps": 1.0}, "eps=1.0"),
        ({"eps": -0.1}, "eps=-0.1"),
        ({"max_sigma": -1}, "max_sigma=-1"),
        ({"max_sigma": 0}, "max_sigma=0"),
        ({"max_sigma": float("nan")}, "max_sigma=nan"),
    ],
)
def test_invalid_settings_name_the_setting(kwargs: dict, setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        IRSDE(**kwargs)


def test_x0_loss_is_zero_for_the_true_noise_and_weighs_every_timestep() -> None:
    """The x0 loss sees a restoration error at t = T in full; the paper's mean-matching loss barely does."""
    sde = IRSDE(max_sigma=50, T=100)
    gen = torch.Generator().manual_seed(0)
    x0, mu = torch.rand(4, 3, 8, 8, generator=gen), torch.rand(4, 3, 8, 8, generator=gen)
    noise = torch.randn(4, 3, 8, 8, generator=gen)
    for step in (1, 50, 100):
        t = torch.full((4,), step)
        xt = sde.forward_sample(x0, mu, t, noise)
        assert sde.loss("x0", noise, xt, x0, mu, t) < 1e-4
        # A network that restores nothing (x0 = mu): the x0 loss is the restoration error at every t.
        lazy = sde.noise_from_x0(xt, mu, mu, t)
        identity_error = (mu - x0).abs().mean()
        assert sde.loss("x0", lazy, xt, x0, mu, t) == pytest.approx(float(identity_error), rel=1e-3)
    t = torch.full((4,), 100)
    xt = sde.forward_sample(x0, mu, t, noise)
    lazy = sde.noise_from_x0(xt, mu, mu, t)
    assert sde.loss("mean", lazy, xt, x0, mu, t) < 0.05 * identity_error
    with pytest.raises(ValueError, match=r"sde\.loss='l2'"):
        sde.loss("l2", noise, xt, x0, mu, t)


def test_l2_loss_norm_squares_the_errors_that_l1_takes_absolute() -> None:
    """``norm="l2"`` measures the same error squared (its optimum the mean of what the data shows, not the
    median); l1 stays the default; an unknown norm is refused by name."""
    sde = IRSDE(max_sigma=50, T=100)
    gen = torch.Generator().manual_seed(0)
    x0, mu = torch.rand(4, 3, 8, 8, generator=gen), torch.rand(4, 3, 8, 8, generator=gen)
    noise = torch.randn(4, 3, 8, 8, generator=gen)
    t = torch.full((4,), 100)
    xt = sde.forward_sample(x0, mu, t, noise)
    lazy = sde.noise_from_x0(xt, mu, mu, t)  # restores nothing: the x0 error is mu - x0
    assert sde.loss("x0", lazy, xt, x0, mu, t, "l2") == pytest.approx(
        float((mu - x0).square().mean()), rel=1e-3
    )
    assert sde.loss("x0", lazy, xt, x0, mu, t) == sde.loss("x0", lazy, xt, x0, mu, t, "l1")
    pred = sde.reverse_sde_mean(xt, mu, sde.score_from_noise(lazy, t), t)
    mean_error = pred - sde.reverse_optimum(xt, x0, mu, t)
    assert sde.loss("mean", lazy, xt, x0, mu, t, "l2") == pytest.approx(
        float(mean_error.square().mean()), rel=1e-4
    )
    with pytest.raises(ValueError, match=r"sde\.loss_norm='l3'"):
        sde.loss("x0", lazy, xt, x0, mu, t, "l3")
