"""Each paper form against a float64 NumPy transcription of the paper's equations.

The transcriptions below follow /work/shared/reference/papers.md symbol for symbol; they
are deliberately written from the papers, not from our code. Every rule is elementwise,
so the pytree of the parity problem is flattened into one vector for NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optimizers as opt
from tests.optimizers.cases import make_problem, trajectories

STEPS = 50


def duchi_adagrad(eta, delta):
    """Duchi et al. 2011: x ← x − η g / (δ + √Σ g²), the sum from 0."""

    def rule(x, g, t, s):
        s["G"] = s.get("G", 0.0) + g**2
        return x - eta * g / (delta + np.sqrt(s["G"]))

    return rule


def zeiler_adadelta(rho, eps):
    """Zeiler 2012, Algorithm 1 (no learning rate)."""

    def rule(x, g, t, s):
        s["Eg2"] = rho * s.get("Eg2", 0.0) + (1 - rho) * g**2
        dx = -(np.sqrt(s.get("Edx2", 0.0) + eps) / np.sqrt(s["Eg2"] + eps)) * g
        s["Edx2"] = rho * s.get("Edx2", 0.0) + (1 - rho) * dx**2
        return x + dx

    return rule


def kingma_adam(alpha, b1, b2, eps):
    """Kingma & Ba, Algorithm 1: ε outside the root."""

    def rule(x, g, t, s):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g**2
        m_hat = s["m"] / (1 - b1**t)
        v_hat = s["v"] / (1 - b2**t)
        return x - alpha * m_hat / (np.sqrt(v_hat) + eps)

    return rule


def kingma_adam_efficient(alpha, b1, b2, eps_hat):
    """Kingma & Ba, Sec. 2: α_t = α √(1 − β₂ᵗ)/(1 − β₁ᵗ), θ ← θ − α_t m / (√v + ε̂)."""

    def rule(x, g, t, s):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g**2
        alpha_t = alpha * np.sqrt(1 - b2**t) / (1 - b1**t)
        return x - alpha_t * s["m"] / (np.sqrt(s["v"]) + eps_hat)

    return rule


def kingma_adamax(alpha, b1, b2):
    """Kingma & Ba, Algorithm 2: u ← max(β₂ u, |g|), θ ← θ − (α / (1 − β₁ᵗ)) m / u."""

    def rule(x, g, t, s):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g))
        return x - (alpha / (1 - b1**t)) * s["m"] / s["u"]

    return rule


def hinton_rmsprop(eta):
    """Hinton, lecture 6e: MeanSquare = 0.9 MeanSquare + 0.1 g², divide g by √MeanSquare."""

    def rule(x, g, t, s):
        s["ms"] = 0.9 * s.get("ms", 0.0) + 0.1 * g**2
        return x - eta * g / np.sqrt(s["ms"])

    return rule


def ewma_momentum(eta, beta):
    """Course notes: v ← β v + (1 − β) g ; θ ← θ − η v."""

    def rule(x, g, t, s):
        s["v"] = beta * s.get("v", 0.0) + (1 - beta) * g
        return x - eta * s["v"]

    return rule


def polyak_heavy_ball(eta, beta):
    """Polyak 1964 as in Sutskever et al. 2013: v ← β v + g ; θ ← θ − η v."""

    def rule(x, g, t, s):
        s["v"] = beta * s.get("v", 0.0) + g
        return x - eta * s["v"]

    return rule


PAPER_FORMS = {
    "adagrad_duchi": (opt.adagrad_paper(0.1, eps=1e-8), duchi_adagrad(0.1, 1e-8)),
    "adadelta_zeiler": (opt.adadelta_paper(), zeiler_adadelta(0.95, 1e-6)),
    "adam_algorithm1": (opt.adam(0.01), kingma_adam(0.01, 0.9, 0.999, 1e-8)),
    "adam_efficient_sec2": (
        opt.adam_efficient(0.01),
        kingma_adam_efficient(0.01, 0.9, 0.999, 1e-8),
    ),
    "adamax_algorithm2": (opt.adamax_paper(0.002), kingma_adamax(0.002, 0.9, 0.999)),
    "rmsprop_hinton": (opt.rmsprop(0.01, decay=0.9, eps=0.0), hinton_rmsprop(0.01)),
    "sgdm_ewma": (opt.sgdm(0.1, beta=0.9), ewma_momentum(0.1, 0.9)),
    "momentum_heavy_ball": (opt.heavy_ball(0.05, momentum=0.9), polyak_heavy_ball(0.05, 0.9)),
}


def numpy_trajectory(rule, params, target, noise):
    def flat(tree):
        return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])

    centre, curvature = (flat(t) for t in target)
    noise = np.concatenate([np.asarray(n).reshape(STEPS, -1) for n in jax.tree.leaves(noise)], 1)
    x, state, path = flat(params), {}, []
    for t in range(1, STEPS + 1):
        g = curvature * (x - centre) + noise[t - 1]
        x = rule(x, g, t, state)
        path.append(x)
    return np.stack(path)


@pytest.fixture(scope="module")
def ours_float64():
    """All our paper-form trajectories in float64, in one compilation."""
    with jax.enable_x64(True):
        problem = make_problem(jnp.float64, steps=STEPS)
        paths = trajectories([tx for tx, _ in PAPER_FORMS.values()], *problem)
        flat = [
            np.concatenate([np.asarray(x).reshape(STEPS, -1) for x in jax.tree.leaves(p)], axis=1)
            for p in paths
        ]
        return problem, dict(zip(PAPER_FORMS, flat, strict=True))


@pytest.mark.parametrize("form", list(PAPER_FORMS))
def test_paper_form_matches_numpy_transcription(form, ours_float64):
    problem, ours = ours_float64
    reference = numpy_trajectory(PAPER_FORMS[form][1], *problem)
    assert ours[form].dtype == np.float64 and ours[form].shape == reference.shape
    np.testing.assert_allclose(ours[form], reference, rtol=1e-10, atol=1e-12)


def test_efficient_adam_is_close_to_algorithm1_but_not_equal(ours_float64):
    _, ours = ours_float64
    gap = np.abs(ours["adam_efficient_sec2"] - ours["adam_algorithm1"])
    assert 0 < gap.max() < 1e-6  # they differ only through where ε sits (√v̂ ≫ ε here)
