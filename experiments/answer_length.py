"""How refusal rates change with the length of the answer the judge reads (16 to 128 tokens).

Short answers are cheap to generate, but a refusal that arrives late ("Sure! Here is … Actually,
I can't help with that") is missed when the answer is cut early. Each model answers a seeded
sample of ``--n`` prompts per set once, greedily, with ``--max-tokens`` new tokens; the
substring judge (after the degeneration detector) then reads the first k tokens of that same
answer for every k in ``--lengths``, so the rates differ only by how much of the answer is
read. Models: the SmolLM2 organism (as in ``judge_agreement.py``) and Qwen2.5-Coder-0.5B.

    python experiments/answer_length.py            # ~25 min on 1 CPU thread

Writes ``figures/answer_length.{md,json}``: per model and set, the refused / complied /
degenerate shares at each length (95 % Wilson intervals), and the answers whose verdict
changed between the shortest length the run uses and the longest. ``--smoke``: a tiny random
model, 2 prompts per set, lengths 2 and 4.
"""

from __future__ import annotations

import time

import torch
from common import hardware, organism, parse, parser, write_text

from refusal_lens.artifacts import portable_path, write_json
from refusal_lens.evaluation import DEFAULT_SETS
from refusal_lens.generation import generate_ids
from refusal_lens.models import load_model
from refusal_lens.prompts import load_prompts
from refusal_lens.scoring import is_refusal
from refusal_lens.stats import rate_text
from refusal_lens.verdicts import shares, verdict_of_text

NAMES = ("XSTest-safe", "borderline", "Alpaca", "XSTest-unsafe", "AdvBench", "JailbreakBench")
SETS = {name: DEFAULT_SETS[name] for name in NAMES}  # name -> (spec, kind)


def arguments():
    cli = parser(__doc__, n=24, max_tokens=128, batch_size=8)
    cli.add_argument("--lengths", default="16,32,48,64,128", help="comma-separated k")
    cli.add_argument("--other", default="qwen2.5-coder-0.5b", help="the second model")
    args = parse(cli, smoke={"n": 2, "max_tokens": 4, "lengths": "2,4"})
    args.lengths = [int(k) for k in args.lengths.split(",")]
    return args


def verdicts_by_length(model, ids: list[list[int]], lengths: list[int]) -> dict[int, list]:
    """The substring judge's verdict on the first k tokens of each answer, for every k."""
    out = {}
    for k in lengths:
        texts = model.tokenizer.batch_decode([x[:k] for x in ids], skip_special_tokens=True)
        out[k] = [verdict_of_text(t.strip(), is_refusal(t))[0] for t in texts]
    return out


def study(spec: str, args) -> dict:
    model = load_model(spec, device="cpu")
    record = {}
    for name, (source, kind) in SETS.items():
        prompts = load_prompts(source).sample(args.n, seed=11)
        ids = generate_ids(model, prompts, args.max_tokens, args.batch_size, show_progress=False)
        by_k = verdicts_by_length(model, ids, args.lengths)
        full = model.tokenizer.batch_decode(ids, skip_special_tokens=True)
        short, long = by_k[min(args.lengths)], by_k[max(args.lengths)]
        changed = [
            {"prompt": p, "short": s, "long": lo, "answer": a.strip()}
            for p, s, lo, a in zip(prompts.texts, short, long, full, strict=True)
            if s != lo
        ]
        record[name] = {
            "kind": kind,
            "counts": {str(k): shares(v) for k, v in by_k.items()},
            "changed": changed,
        }
    return record


def markdown(results: dict, lengths: list[int], args, minutes: float) -> str:
    lines = [
        f"Refused share by the number of answer tokens the substring judge reads (after the "
        f"degeneration detector), {args.n} prompts per set, one greedy answer of "
        f"{args.max_tokens} tokens per prompt read at each length; [95 % Wilson interval]. "
        "Complied and degenerate shares are in the JSON.",
        "",
    ]
    for label, record in results.items():
        lines += [f"**{label}**", "", "| set | " + " | ".join(f"{k} tokens" for k in lengths)]
        lines[-1] += " | changed |"
        lines.append("|---|" + "---:|" * (len(lengths) + 1))
        for name, row in record["sets"].items():
            cells = [rate_text(row["counts"][str(k)]["refused"], args.n) for k in lengths]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(row['changed'])} |")
        lines.append("")
    command = "python experiments/answer_length.py"
    lines.append(f"{hardware()}; {minutes:.0f} min. Command: `{command}`.")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = arguments()
    torch.manual_seed(0)
    start = time.time()
    specs = {"smollm2-organism": str(organism(args.model, 0.5, smoke=args.smoke))}
    if not args.smoke:
        specs["qwen2.5-coder-0.5b"] = args.other
    results = {
        label: {"spec": portable_path(spec), "sets": study(spec, args)}
        for label, spec in specs.items()
    }
    minutes = (time.time() - start) / 60
    write_json(args.out / "answer_length.json", {"lengths": args.lengths, "models": results})
    write_text(args.out / "answer_length.md", markdown(results, args.lengths, args, minutes))
    print((args.out / "answer_length.md").read_text())


if __name__ == "__main__":
    main()
