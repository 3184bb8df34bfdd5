"""Layer-wise boundary geometry: margins, views and boundary lines against their definitions,
the full pass on a tiny model against direct computations, the artifact, figures, bad input and
config."""

from __future__ import annotations

import json

import pytest
import torch

from refusal_lens.activations import CollectConfig, Residuals, collect_residuals
from refusal_lens.boundary import rows as geometry_rows
from refusal_lens.boundary.geometry import (
    META_NAME,
    TENSORS_NAME,
    Geometry,
    GeometryConfig,
    auroc,
    boundary_geometry,
    fit_layer,
    fit_rows,
    layer_boundary,
)
from refusal_lens.boundary.rows import Rows
from refusal_lens.boundary.views import (
    COLORS,
    plot_boundary_grid,
    plot_margins,
    plot_probe_accuracy,
    write_geometry_figures,
)
from refusal_lens.directions import Direction
from refusal_lens.errors import RefusalLensError
from refusal_lens.probes import fit_probe, fit_probe_chunks
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import refusal_scores

LAYER_1 = CollectConfig(layers=(1,), positions=(-1,))  # the last token before block 1


def synthetic(n: int = 40, d: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    harmful = torch.randn(n, d, generator=gen) + torch.tensor([3.0] + [0.0] * (d - 1))
    harmless = torch.randn(n, d, generator=gen) - torch.tensor([3.0] + [0.0] * (d - 1))
    return harmful, harmless


def test_margin_is_the_scaled_signed_distance_to_the_hyperplane():
    harmful, harmless = synthetic()
    b = fit_layer(harmful, harmless, torch.cat([harmful, harmless]), 3, None, GeometryConfig())
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1)) * 4
    w = b.probe.direction()
    d = b.distance(x)
    # stepping back by the distance along the unit normal lands on the hyperplane
    on_plane = x - d[:, None] * (w / w.norm())[None]
    assert torch.allclose(b.probe.logits(on_plane), torch.zeros(5), atol=1e-3)
    assert torch.allclose(b.margin(x), d / b.scale)
    # the scale puts the two classes' mean margins about 2 apart, on either side
    gap = b.margin(harmful).mean() - b.margin(harmless).mean()
    assert gap == pytest.approx(2.0, rel=0.35)
    assert b.margin(harmful).mean() > 0 > b.margin(harmless).mean()
    assert b.accuracy > 0.95


def test_view_axes_and_boundary_line_follow_their_definitions():
    harmful, harmless = synthetic(d=8)
    everything = torch.cat([harmful, harmless])
    r = torch.randn(8, generator=torch.Generator().manual_seed(2))
    b = fit_layer(harmful, harmless, everything, 0, r, GeometryConfig())
    assert torch.allclose(b.direction, r / r.norm())
    assert abs(float(b.pc @ b.direction)) < 1e-5 and float(b.pc.norm()) == pytest.approx(1.0)
    v = b.view(harmful)
    assert torch.allclose(v[:, 0], (harmful - everything.mean(0)) @ b.direction, atol=1e-5)
    assert torch.allclose(v[:, 1], (harmful - everything.mean(0)) @ b.pc, atol=1e-4)
    a, bb, c = b.line()
    for u in (-2.0, 0.0, 3.0):  # points of the line, mapped back into the model's space
        w = -(a * u + c) / bb
        point = b.origin + u * b.direction + w * b.pc
        assert float(b.probe.logits(point[None])[0]) == pytest.approx(0.0, abs=1e-3)


def test_a_fit_read_from_files_a_chunk_at_a_time_matches_the_fit_in_memory(tmp_path, monkeypatch):
    """Memory stays flat in the number of prompts because each layer's rows are read from disk a
    chunk at a time; the boundary is the in-memory one, and its view axis is the rest's first
    principal component (an SVD of the rows)."""
    harmful, harmless = synthetic(n=60, d=8)
    everything = torch.cat([harmful, harmless])
    b = fit_layer(harmful, harmless, everything, 2, None, GeometryConfig())  # one chunk
    files = []
    for name, x in (("harmful", harmful), ("harmless", harmless)):
        x.numpy().tofile(tmp_path / name)
        files.append(Rows(len(x), x.shape[1], path=tmp_path / name))
    monkeypatch.setattr(geometry_rows, "CHUNK", 7)
    c = fit_rows(files[0], files[1], files, 2, None, GeometryConfig())
    assert c.accuracy == pytest.approx(b.accuracy) and c.scale == pytest.approx(b.scale, rel=1e-4)
    for field in ("direction", "pc", "origin"):
        assert torch.allclose(getattr(c, field), getattr(b, field), atol=1e-5), field
    assert torch.allclose(c.probe.weight, b.probe.weight, atol=2e-3)  # L-BFGS's tolerance
    centered = everything - everything.mean(0)
    rest = centered - (centered @ b.direction)[:, None] * b.direction[None]
    pc = torch.linalg.svd(rest.double(), full_matrices=False)[2][0].float()
    assert torch.allclose(b.pc, pc * torch.sign(pc @ b.pc), atol=1e-5)
    # the probe fitted piece by piece is the probe fitted on every row at once
    y = torch.cat([torch.ones(60), torch.zeros(60)]).bool()
    whole = fit_probe(everything, y)
    pieces = fit_probe_chunks(
        lambda: ((everything[i : i + 25], y[i : i + 25]) for i in range(0, 120, 25))
    )
    assert torch.allclose(pieces.weight, whole.weight, atol=2e-3)  # L-BFGS's tolerance
    assert pieces.bias == pytest.approx(whole.bias, abs=2e-3)


def test_auroc_counts_pairs_and_ties():
    assert auroc(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.0])) == 1.0
    assert auroc(torch.tensor([1.0]), torch.tensor([1.0, 2.0])) == 0.25
    assert auroc(torch.tensor([]), torch.tensor([1.0])) is None


@pytest.fixture(scope="module")
def sets():
    return [load_prompts(name)[:14] for name in ("harmful", "harmless", "borderline")]


@pytest.fixture(scope="module")
def geo(tiny_llama, sets):
    return boundary_geometry(tiny_llama, *sets)


def test_geometry_on_a_tiny_model_matches_direct_computation(tiny_llama, sets, geo):
    assert geo.layers == list(range(1, tiny_llama.n_layers))
    n = len(sets[2])
    assert geo.margin["borderline"].shape == (n, len(geo.layers))
    assert geo.view["harmful"].shape == (14, len(geo.layers), 2)
    scores = refusal_scores(tiny_llama, sets[2], show_progress=False)
    assert torch.equal(geo.refused, scores > 0)
    acts = collect_residuals(tiny_llama, sets[2], LAYER_1, show_progress=False)
    x = torch.as_tensor(acts.acts[:, 0, 0])
    b = layer_boundary(tiny_llama, sets[0], sets[1], 1)
    assert torch.allclose(geo.margin["borderline"][:, 0], b.margin(x), atol=1e-4)
    assert torch.allclose(geo.projection["borderline"][:, 0], x @ b.direction, atol=1e-4)
    row = geo.summary()[0]
    share = float((geo.margin["borderline"][:, 0] > 0).float().mean())
    assert row["borderline_harmful_share"] == pytest.approx(share)
    assert row["probe_accuracy"] == pytest.approx(float(geo.accuracy[0]))


def test_geometry_read_in_chunks_is_the_same(tiny_llama, sets, geo, monkeypatch, tmp_path):
    """Many chunks per set (and the residuals kept in a folder) change nothing but rounding
    (the probe's loss is summed chunk by chunk: L-BFGS stops within its tolerance)."""
    monkeypatch.setattr(geometry_rows, "CHUNK", 5)
    again = boundary_geometry(tiny_llama, *sets, residuals_out=tmp_path / "residuals")
    for group, atol in (("projection", 1e-5), ("view", 1e-5), ("margin", 2e-3)):
        for name, tensor in getattr(geo, group).items():
            assert torch.allclose(getattr(again, group)[name], tensor, atol=atol), (group, name)
    assert torch.equal(again.accuracy, geo.accuracy)
    kept = Residuals.load(tmp_path / "residuals" / "borderline")
    assert kept.acts.shape == (len(sets[2]), len(geo.layers), 1, tiny_llama.d_model)


def test_given_direction_and_refusal_flags_are_used(tiny_llama, sets):
    v = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
    r = Direction(v, 1, -1, tiny_llama.model_id)
    flags = [i % 2 == 0 for i in range(len(sets[2]))]
    geo = boundary_geometry(tiny_llama, *sets, direction=r, refused=flags)
    acts = collect_residuals(tiny_llama, sets[0], LAYER_1, show_progress=False)
    expected = torch.as_tensor(acts.acts[:, 0, 0]) @ (v / v.norm())
    assert torch.allclose(geo.projection["harmful"][:, 0], expected, atol=1e-4)
    assert geo.refused.tolist() == flags and geo.direction["layer"] == 1


def assert_same_geometry(back: Geometry, geo: Geometry) -> None:
    """Every field of ``back`` equals ``geo``'s (tensors exactly, NaN = NaN)."""
    assert back.layers == geo.layers and back.texts == geo.texts
    for group in ("projection", "margin", "view"):
        assert getattr(back, group).keys() == getattr(geo, group).keys()
        for name, tensor in getattr(geo, group).items():
            assert torch.equal(getattr(back, group)[name], tensor), (group, name)
    for name in ("accuracy", "lines", "refused", "refusal_score"):
        a, b = getattr(back, name), getattr(geo, name)
        assert a.dtype == b.dtype and torch.allclose(a.float(), b.float(), equal_nan=True), name
    assert back.config == geo.config and back.model == geo.model
    assert back.direction == json.loads(json.dumps(geo.direction))
    assert back.summary() == geo.summary()


def test_save_load_round_trip_and_figures(geo, tmp_path):
    geo.save(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [META_NAME, TENSORS_NAME]
    meta = json.loads((tmp_path / "g" / META_NAME).read_text())
    assert meta["kind"] == "geometry" and meta["config"] == geo.config.to_dict()
    assert_same_geometry(Geometry.load(tmp_path / "g"), geo)

    fig = plot_boundary_grid(geo, layers=geo.layers)
    labels = fig.legends[0].get_texts()
    assert [t.get_text() for t in labels][:4] == list(COLORS)
    assert fig.axes[0].get_xlabel() == "projection on refusal direction"
    fig = plot_margins(geo)
    assert fig.axes[0].get_xlabel() == "layer" and fig.axes[0].get_legend() is not None
    fig = plot_probe_accuracy(geo)
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx(geo.accuracy.tolist())
    paths = write_geometry_figures(geo, tmp_path / "g")
    assert [p.name for p in paths] == ["grid.png", "margins.png", "probe_accuracy.png"]
    with pytest.raises(RefusalLensError, match="was not read"):
        plot_boundary_grid(geo, layers=[99])


def test_bad_input_is_refused_clearly(tiny_llama, sets):
    harmful, harmless, borderline = sets
    with pytest.raises(RefusalLensError, match="at least 8 training prompts per class"):
        boundary_geometry(tiny_llama, harmful[:6], harmless, borderline)
    with pytest.raises(RefusalLensError, match="borderline set is empty"):
        boundary_geometry(tiny_llama, harmful, harmless, borderline[:0])
    with pytest.raises(RefusalLensError, match="flags for"):
        boundary_geometry(tiny_llama, harmful, harmless, borderline, refused=[True])
    wrong = Direction(torch.ones(tiny_llama.d_model + 1), 1, -1, "other")
    with pytest.raises(RefusalLensError):
        boundary_geometry(tiny_llama, harmful, harmless, borderline, direction=wrong)
    with pytest.raises(RefusalLensError, match=r"geometry\.json is missing"):
        Geometry.load("/nonexistent")


def test_saving_keeps_other_files_and_load_checks_the_artifact(geo, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    geo.save(folder)
    geo.save(folder)  # saving again replaces only its own files
    assert (folder / "notes.txt").read_text() == "mine"
    assert_same_geometry(Geometry.load(folder), geo)
    (folder / TENSORS_NAME).unlink()
    with pytest.raises(RefusalLensError, match=r"not geometry\.safetensors"):
        Geometry.load(folder)
    (folder / META_NAME).write_text(json.dumps({"kind": "rass"}))
    with pytest.raises(RefusalLensError, match="holds a rass artifact"):
        Geometry.load(folder)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"val_frac": 1.0}, r"GeometryConfig\.val_frac must be in \(0, 1\)"),
        ({"val_frac": 0.0}, r"GeometryConfig\.val_frac must be"),
        ({"layers": ()}, r"GeometryConfig\.layers must be None"),
        ({"layers": (2, -1)}, r"GeometryConfig\.layers must be None"),
        ({"position": 0}, r"GeometryConfig\.position must be negative"),
        ({"hook": "resid"}, r"GeometryConfig\.hook must be one of"),
        ({"l2": -1.0}, r"GeometryConfig\.l2 must be a finite number >= 0"),
        ({"batch_size": 0}, r"GeometryConfig\.batch_size must be >= 1"),
    ],
)
def test_out_of_range_config_fields_are_refused(changes, message):
    with pytest.raises(RefusalLensError, match=message):
        GeometryConfig(**changes)
    data = GeometryConfig().to_dict() | changes
    with pytest.raises(RefusalLensError, match=message):  # also when read from an artifact
        GeometryConfig.from_dict(data)


def test_config_round_trips_through_json():
    config = GeometryConfig(layers=(1, 3), val_frac=0.5, seed=2)
    assert GeometryConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(Exception, match="cannot assign"):
        config.seed = 3  # frozen
