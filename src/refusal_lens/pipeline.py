"""``run_pipeline``: the method section of refusal-lens, one call per stage.

Later stages (directions, attribution, geometry, RASS, alignment) join here as they land; each
writes its own sub-folder of the run folder ``runs/<model>/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from refusal_lens.artifacts import atomic_path, write_json
from refusal_lens.configs import StageConfig, check_positive
from refusal_lens.errors import RefusalLensError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig(StageConfig):
    """Settings of ``refusal-lens run``; saved as ``config.json`` in the run folder."""

    model: str = "smollm2-135m"
    n_prompts: int = 32
    sets: tuple[str, ...] = ("harmful", "harmless", "borderline")
    judges: tuple[str, ...] = ("score", "substring")
    max_new_tokens: int = 48
    batch_size: int = 16
    seed: int = 0
    device: str | None = None
    dtype: str = "float32"
    system: str | None = None  # system prompt of every chat (default: what the template does)

    def validate(self) -> None:
        for name in ("n_prompts", "max_new_tokens", "batch_size"):
            check_positive(name, getattr(self, name))
        if not self.sets or not self.judges:
            raise RefusalLensError("sets and judges must each name at least one.")


def run_pipeline(config: RunConfig, out: Path | None = None) -> Path:
    """Run every stage available so far and write the results under ``out``."""
    from refusal_lens.activations import CollectConfig, collect_residuals
    from refusal_lens.evaluation import rates_table, report_json
    from refusal_lens.models import load_model
    from refusal_lens.prompts import load_prompts
    from refusal_lens.scoring import refusal_rates

    # 1. model
    model = load_model(
        config.model, device=config.device, dtype=config.dtype, system_prompt=config.system
    )
    out = Path(out) if out is not None else Path("runs") / model.model_id
    write_json(out / "config.json", config)
    write_json(out / "model.json", model.describe())

    # 2. prompts: a seeded sample of each shipped set
    prompt_sets = {
        name: load_prompts(name).sample(config.n_prompts, config.seed) for name in config.sets
    }

    # 3. residual streams at the post-instruction positions, every layer
    for name, prompts in prompt_sets.items():
        collect_residuals(
            model,
            prompts,
            CollectConfig(batch_size=config.batch_size),
            out=out / "residuals" / name,
        )

    # 4. refusal rates under both judges
    reports = refusal_rates(
        model, prompt_sets, config.judges, config.max_new_tokens, config.batch_size, True
    )
    rates: dict[str, dict[str, float]] = {}
    for name, by_judge in reports.items():
        for judge, report in by_judge.items():
            json_out = report_json(model, prompt_sets[name], report)
            write_json(out / "refusal" / f"{name}.{judge}.json", json_out)
            rates.setdefault(name, {})[judge] = report.rate
    write_json(out / "refusal" / "rates.json", rates)
    table = rates_table(rates, {k: len(v) for k, v in prompt_sets.items()})
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(f"# refusal-lens run: {config.model}\n\n{table}\n")
    log.info("\n%s", table)
    return out
