"""The layer and band RASS selects in: chosen where the margin predicts refusal."""

from __future__ import annotations

import json

import pytest
import torch

from refusal_lens.boundary.refusal_fit import (
    BoundaryFit,
    boundary_fit,
    choose_layer,
    logistic_1d,
    refusal_band,
)
from refusal_lens.errors import RefusalLensError


def synthetic(seed: int, n: int = 400, a: float = 2.0, b: float = -0.5):
    """Margins at three layers: noise, a layer where refusal follows σ(a·m + b), and one where
    it follows the opposite sign."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, 3, generator=g, dtype=torch.float64)
    p = torch.sigmoid(a * m[:, 1] + b)
    refused = torch.rand(n, generator=g, dtype=torch.float64) < p
    m[:, 2] = -m[:, 1]
    return [4, 9, 12], m, refused


@pytest.mark.parametrize("seed", range(5))
def test_the_predictive_layer_is_chosen_and_the_fit_recovers_the_curve(seed):
    layers, m, refused = synthetic(seed)
    fit = boundary_fit(layers, m, refused, l2=0.0)
    assert fit.layer == 9
    assert fit.auroc[9] > 0.75 and abs(fit.auroc[4] - 0.5) < 0.1 and fit.auroc[12] < 0.25
    # n = 400: the maximum-likelihood slope and intercept are within about 3 standard errors
    assert fit.slope == pytest.approx(2.0, abs=0.6) and fit.intercept == pytest.approx(
        -0.5, abs=0.4
    )
    lo, hi = fit.band
    ends = [fit.slope * lo + fit.intercept, fit.slope * hi + fit.intercept]
    p = torch.sigmoid(torch.tensor(ends, dtype=torch.float64))
    assert p.tolist() == pytest.approx([0.25, 0.75], abs=1e-9)


def test_the_fit_is_a_stationary_point_of_the_penalised_likelihood():
    """Finite differences of the objective vanish at the returned (a, b)."""
    _, m, refused = synthetic(7, n=60)
    x, y = m[:, 1], refused.double()
    a, b = logistic_1d(x, refused, l2=1.0)
    sd = float(x.std(unbiased=False))

    def objective(a: float, b: float) -> float:
        z = a * x + b
        nll = float((torch.nn.functional.softplus(z) - y * z).sum())
        return nll + 0.5 * 1.0 * (a * sd) ** 2

    h = 1e-6
    da = (objective(a + h, b) - objective(a - h, b)) / (2 * h)
    db = (objective(a, b + h) - objective(a, b - h)) / (2 * h)
    assert abs(da) < 1e-4 and abs(db) < 1e-4


def test_perfect_separation_gives_a_finite_band_around_the_gap():
    x = torch.tensor([-2.0, -1.5, -1.0, -0.6, 0.4, 0.9, 1.3, 2.0])
    refused = x > 0
    band, a, _, why = refusal_band(x, refused)
    assert why == "" and a > 0 and band is not None
    lo, hi = band
    assert -0.6 < (lo + hi) / 2 < 0.4 and hi - lo < 1.0  # the gap is 1.0 wide


def test_a_margin_that_does_not_predict_refusal_gives_no_band():
    _, m, refused = synthetic(1)
    band, a, _, why = refusal_band(m[:, 2], refused)
    assert band is None and a < 0 and "does not rise" in why


def test_ties_go_to_the_earlier_layer_and_too_few_refusals_choose_nothing():
    m = torch.tensor([[0.1, 0.1], [0.2, 0.2], [0.9, 0.9], [1.0, 1.0]] * 2)
    refused = torch.tensor([False, False, True, True] * 2)
    layer, scores, _ = choose_layer([3, 5], m, refused, min_per_class=4)
    assert layer == 3 and scores == {3: 1.0, 5: 1.0}
    fit = boundary_fit([3, 5], m, torch.tensor([True] + [False] * 7))
    assert fit.layer is None and fit.band is None and "1 refused and 7 answered" in fit.reason
    assert fit.describe().startswith("No layer chosen")


def test_the_fit_round_trips_through_json():
    layers, m, refused = synthetic(2, n=80)
    fit = boundary_fit(layers, m, refused)
    back = BoundaryFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back == fit and "layer 9" in back.describe() and "band" in back.describe()


def test_bad_input_is_refused_clearly():
    with pytest.raises(RefusalLensError, match=r"margins must be \[n prompts, n layers\]"):
        boundary_fit([1, 2], torch.zeros(4, 3), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(RefusalLensError, match="No look-alike prompts"):
        boundary_fit([1], torch.zeros(0, 1), torch.zeros(0, dtype=torch.bool))
    with pytest.raises(RefusalLensError, match="p_band must satisfy"):
        refusal_band(torch.zeros(4), torch.tensor([True, False] * 2), (0.7, 0.3))
