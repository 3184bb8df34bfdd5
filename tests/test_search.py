"""The mitigation search: what a trial measures (against independent computations), the
search's bookkeeping (seeded, warm-started, bounded by a budget), the front, the choice, and
clear errors for empty sets, unmet constraints and a budget too small for one trial."""

from __future__ import annotations

import random
import time

import pytest
import torch

from refusal_lens.errors import RefusalLensError
from refusal_lens.mitigation import (
    EditConfig,
    Objective,
    SearchConfig,
    SearchResult,
    ValidationSets,
    Vectors,
    apply_edit,
    resolve,
    search_edits,
)
from refusal_lens.mitigation.search import pareto_front
from refusal_lens.mitigation.space import suggest_edit, wang_params
from refusal_lens.mitigation.views import verdict, wang_at
from refusal_lens.pipeline.search import check_budget
from refusal_lens.pipeline.stage_settings import SearchSettings
from refusal_lens.prompts import PromptSet
from refusal_lens.residual_direction import Direction
from refusal_lens.scoring import SubstringJudge, refusal_scores

WORDS = [
    "the",
    "a",
    "river",
    "poem",
    "kill",
    "knife",
    "bread",
    "cake",
    "process",
    "python",
    "sea",
    "bomb",
    "lock",
    "door",
    "quiet",
]


def prompts(n: int, seed: int, label: str) -> PromptSet:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(n)]
    return PromptSet.from_texts(texts, label, label)


@pytest.fixture(scope="module")
def setup(tiny_llama):
    model = tiny_llama
    gen = torch.Generator().manual_seed(0)
    r = Direction(torch.randn(model.d_model, generator=gen), 1, -1, model.model_id)
    w = Direction(torch.randn(model.d_model, generator=gen), 1, -1, model.model_id)
    vectors = Vectors.build(model, r, w, prompts(10, 1, "harmful"), prompts(10, 2, "harmless"))
    sets = ValidationSets(
        benign={"look-alike": prompts(9, 3, "borderline")},
        harmful={"harmful": prompts(7, 4, "harmful")},
        harmless=prompts(6, 5, "harmless"),
    )
    return model, vectors, sets, Objective(model, sets, batch_size=4, judge="score")


def test_a_trial_measures_what_independent_paths_measure(setup):
    model, vectors, sets, objective = setup
    edit = resolve(EditConfig(directions=("r", "w_prime"), lam=0.3, peak=0.7), vectors)
    m = objective.measure(edit)
    threshold = model.refusal_threshold
    with apply_edit(model, edit):
        benign = refusal_scores(model, sets.benign["look-alike"], 3, show_progress=False)
        harmful = refusal_scores(model, sets.harmful["harmful"], 3, show_progress=False)
    assert m.benign == pytest.approx(float((benign > threshold).float().mean()))
    assert m.harmful == pytest.approx(float((harmful > threshold).float().mean()))
    # KL(unedited ‖ edited) at the first answer position, from full-sequence logits
    batch = model.chat.tokenize(sets.harmless.texts)
    with torch.no_grad():
        base = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
        with apply_edit(model, edit):
            edited = model.bridge(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
    p, q = base.float().log_softmax(-1), edited.float().log_softmax(-1)
    expected = float((p.exp() * (p - q)).sum(-1).mean())
    assert expected > 1e-4  # the edit changes the answers, so the check can fail
    assert m.kl == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert objective.unedited.kl == pytest.approx(0.0, abs=1e-6)


def test_a_generation_judged_trial_reads_what_the_edited_model_says(setup):
    """judge="substring": each prompt answered under the edit, the degeneration detector and
    the refusal phrases; a broken answer counts as a benign prompt not answered and as a
    harmful prompt not refused. Checked against the substring judge under apply_edit."""
    model, vectors, sets, _ = setup
    objective = Objective(model, sets, batch_size=4, judge="substring", max_new_tokens=12)
    edit = resolve(EditConfig(kind="add", directions=("r",), layer=1, coef=8.0), vectors)
    m = objective.measure(edit)
    judge = SubstringJudge(max_new_tokens=12)
    with apply_edit(model, edit):
        benign = judge(model, sets.benign["look-alike"], 3, show_progress=False)
        harmful = judge(model, sets.harmful["harmful"], 3, show_progress=False)
    unedited = judge(model, sets.benign["look-alike"], 3, show_progress=False)
    assert benign.completions != unedited.completions  # the edit is applied while generating
    assert m.benign == pytest.approx(1 - sum(benign.complied) / benign.n)
    assert m.harmful == pytest.approx(harmful.rate)
    broken = benign.counts()["degenerate"] + harmful.counts()["degenerate"]
    assert m.degenerate == pytest.approx(broken / (benign.n + harmful.n))
    with pytest.raises(RefusalLensError, match="judge must be one of"):
        Objective(model, sets, judge="llm")


def test_the_search_is_seeded_warm_started_and_records_its_constraints(setup):
    _, vectors, _, objective = setup
    config = SearchConfig(trials=8, seed=3, harmful_drop=0.1, kl_max=0.05)
    a = search_edits(objective, vectors, config)
    b = search_edits(objective, vectors, config)
    assert [t["edit"] for t in a.trials] == [t["edit"] for t in b.trials]
    other = search_edits(objective, vectors, config.replace(seed=4))
    assert [t["edit"] for t in other.trials][3:] != [t["edit"] for t in a.trials][3:]
    # Wang et al.'s w′ ablations at the warm-start λ come first
    assert [(t["edit"]["directions"], t["edit"]["lam"]) for t in a.trials[:3]] == [
        (["w_prime"], lam) for lam in config.warm_start
    ]
    floor = objective.unedited.harmful - config.harmful_drop
    for t in a.trials:
        m = t["measured"]
        assert t["feasible"] == (m["harmful"] >= floor and m["kl"] <= config.kl_max)
        assert t["value"] == m["benign"]


def test_the_best_trial_is_the_feasible_one_with_the_least_over_refusal(setup):
    """κ between the warm starts' KLs: at least one of Wang's ablations is feasible and one is
    not, whatever the search samples after them."""
    _, vectors, _, objective = setup
    loose = SearchConfig(trials=3, seed=3, harmful_drop=1.0, kl_max=1e9)
    kls = sorted(t["measured"]["kl"] for t in search_edits(objective, vectors, loose).trials)
    assert kls[0] < kls[-1]
    config = loose.replace(trials=8, kl_max=(kls[0] + kls[-1]) / 2)
    result = search_edits(objective, vectors, config)
    feasible = result.feasible()
    assert feasible and len(feasible) < len(result.trials)
    assert all(t["measured"]["kl"] <= config.kl_max for t in feasible)
    best = result.best()
    assert best["feasible"] and best["value"] == min(t["value"] for t in feasible)


def test_the_refusal_only_objective_ignores_the_harmful_floor(setup):
    _, vectors, _, objective = setup
    result = search_edits(objective, vectors, SearchConfig(trials=4, objective="refusal"))
    for t in result.trials:
        assert t["value"] == t["measured"]["harmful"] and t["violation"]["harmful"] == 0


def test_a_deadline_stops_the_search_and_says_so(setup):
    _, vectors, _, objective = setup
    result = search_edits(
        objective, vectors, SearchConfig(trials=50), deadline=time.monotonic() + 0.01
    )
    assert len(result.trials) == 1 and "budget" in result.stopped


def test_unmet_constraints_report_the_closest_trial_and_the_binding_one(setup):
    _, vectors, _, objective = setup
    config = SearchConfig(trials=5, harmful_drop=0.0, kl_max=1e-12, warm_start=(1.0,))
    result = search_edits(objective, vectors, config)
    edited = [t for t in result.trials if t["measured"]["kl"] > 1e-12]
    assert edited and not result.feasible()
    text = result.binding()
    assert "no trial met" in text and "KL ≤ 1e-12" in text and result.best()["label"] in text


def test_the_front_holds_exactly_the_undominated_points():
    rng = random.Random(0)
    trials = [
        {"number": i, "measured": {"benign": rng.random(), "harmful": rng.random()}}
        for i in range(60)
    ]
    front = pareto_front(trials)

    def dominated(t):
        a = t["measured"]
        return any(
            b["measured"]["benign"] <= a["benign"]
            and b["measured"]["harmful"] >= a["harmful"]
            and b["measured"] != a
            for b in trials
        )

    assert {t["number"] for t in front} == {t["number"] for t in trials if not dominated(t)}
    benign = [t["measured"]["benign"] for t in front]
    assert benign == sorted(benign)


def test_the_best_trial_and_the_ranking_prefer_feasible_low_kl_distinct_edits():
    def trial(n, value, kl, feasible, label):
        v = {"harmful": 0.0 if feasible else 0.2, "kl": 0.0}
        m = {"benign": value, "harmful": 0.9, "kl": kl}
        return {"number": n, "value": value, "measured": m, "feasible": feasible,
                "violation": v, "label": label}  # fmt: skip

    result = SearchResult(
        SearchConfig(),
        {"benign": 0.5, "harmful": 0.95, "kl": 0.0},
        [
            trial(0, 0.1, 0.05, False, "a"),
            trial(1, 0.3, 0.02, True, "b"),
            trial(2, 0.3, 0.01, True, "c"),
            trial(3, 0.3, 0.01, True, "c"),
            trial(4, 0.4, 0.00, True, "d"),
        ],
    )
    assert result.best()["number"] == 2
    assert [t["label"] for t in result.ranked(3)] == ["c", "b", "d"]
    assert result.binding() == ""


def test_the_search_space_proposes_valid_edits_of_every_kind():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds, directions = set(), set()
    for _ in range(200):
        trial = study.ask()
        config = suggest_edit(trial, 12)
        study.tell(trial, 0.0)
        kinds.add(config.kind)
        directions.add(config.directions)
        assert 0 <= config.layer < 12 and -2 <= config.coef <= 0
        if "probe" in config.directions:
            assert 1 <= config.probe_layer < 12
    assert kinds == {"ablate", "add"}
    assert {("r", "w_prime"), ("w_prime", "probe"), ("probe",)} <= directions
    fixed = optuna.trial.FixedTrial(wang_params(0.6))
    assert suggest_edit(fixed, 12) == EditConfig(directions=("w_prime",), lam=0.6)


def test_empty_validation_sets_are_a_clear_error(tiny_llama):
    some = prompts(3, 0, "harmless")
    empty = PromptSet((), "none")
    for sets in (
        ValidationSets({"b": empty}, {"h": some}, some),
        ValidationSets({"b": some}, {}, some),
        ValidationSets({"b": some}, {"h": some}, empty),
    ):
        with pytest.raises(RefusalLensError, match="empty"):
            Objective(tiny_llama, sets)


def test_a_budget_too_small_for_one_trial_is_a_clear_error():
    config = SearchSettings(seeds=3, budget=0.5, trials=24)
    with pytest.raises(RefusalLensError, match=r"Raise --search\.budget"):
        check_budget(10.0, time.monotonic() + 30, config)  # 4 searches need 67 s
    check_budget(10.0, time.monotonic() + 600, config)  # enough: no error
    check_budget(10.0, None, config)


def test_the_verdict_compares_at_equal_harmful_refusal():
    def sets(look_alike, harmful_refused):
        return {
            "sets": {
                "borderline": {"kind": "benign", "substring": look_alike},
                "XSTest-safe": {"kind": "benign", "substring": look_alike},
                "AdvBench": {"kind": "harmful", "substring": 1 - harmful_refused},
            }
        }

    heldout = {
        "no edit": sets(0.6, 0.95),
        "ablate w′ λ=1 (Wang)": sets(0.2, 0.6),
        "ablate w′ λ=0.6 (Wang)": sets(0.4, 0.9),
        "search: seed 0": sets(0.25, 0.8),  # Wang at 80% harmful: 0.2 + 0.2·(2/3) ≈ 0.333
        "search: seed 1": sets(0.5, 0.95),  # above Wang's range
    }
    v = verdict(heldout)
    seed0, seed1 = v["seeds"]
    assert seed0["wang_at_equal_harmful"] == pytest.approx(0.2 + 0.2 * (0.2 / 0.3))
    assert seed0["beats"] is True and seed1["beats"] is None
    assert "1 of 1 seeds" in v["text"]
    assert wang_at(0.5, [(0.2, 0.6), (0.4, 0.9)]) is None


def test_the_section_and_the_front_figure_read_the_saved_record(tmp_path):
    from refusal_lens.mitigation.views import write_front_figure
    from refusal_lens.pipeline.search import search_section
    from search_fixture import search_record

    record = search_record()
    section = search_section(record)
    heldout, front = section["tables"]
    assert [row[0] for row in heldout["rows"]] == list(record["heldout"])
    assert heldout["rows"][0][1] == "50% / 50%"  # look-alike borderline, both judges
    assert heldout["rows"][0][4] == "95% / 95%"  # XSTest-unsafe shown as refused, not ASR
    assert [row[:2] for row in front["rows"]] == [["seed 0", "0"], ["seed 0", "1"],
                                                   ["seed 1", "0"], ["seed 1", "1"]]  # fmt: skip
    assert any("Chosen (seed 0): ablate w′" in t for t in section["text"])
    write_front_figure(record, tmp_path / "front.png")
    assert (tmp_path / "front.png").stat().st_size > 10_000
