"""Can bf16 run the greedy decode and the fit check and still give float32's answers? The gap it must certify.

bf16 with a float32 fallback is exact when every row whose bf16 top-two logit margin is below 2·δ is recomputed,
δ being the largest |logit_fp32 − logit_bf16| over the vocabulary (a margin m ≥ 2δ cannot flip). This measures
δ on the builtin model over the positions the two checks read: the answer positions of `prompt + gold answer`
(the fit check, teacher-forced) and of `prompt + float32 greedy answer` (the greedy decode), under bf16 autocast
(what `fit_bf16` runs) and with a bf16 copy of the weights; then the share of rows a bound of 2·max δ sends back to
float32 (stops taken as one token), the rows whose argmax actually flips somewhere, and the forward time of each precision.

    python bench/bf16_margin.py --questions 300      # ~3 min on 2 threads
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "bf16_margin.json"


def result_margin(logits, stops):
    """Per position, the top logit minus the best logit that would change the result: the runner-up, or where
    the top token is a clean stop, the best token that is not one (stops are interchangeable in both checks)."""
    import torch

    top = logits.argmax(-1)
    rest = logits.clone()
    rest[torch.arange(len(top)), top] = -torch.inf
    rest[torch.isin(top, stops).nonzero().unsqueeze(-1), stops] = -torch.inf
    return logits.max(-1).values - rest.max(-1).values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin", help="any model spec knowtune loads (bf16 gaps are model-specific)")
    p.add_argument("--questions", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import numpy as np
    import torch

    from knowtune.data import load_qa, select_examples
    from knowtune.data.formats import qa_prompt
    from knowtune.evaluate.qa import greedy_answers
    from knowtune.models import load_model
    from knowtune.train.fit import clean_stop_ids, encode_pair

    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    stops = torch.tensor(sorted(clean_stop_ids(lm.tokenizer)))
    examples = select_examples(load_qa("builtin"), "train", None, args.questions)
    greedy = greedy_answers(lm.model, lm.tokenizer, [e.question for e in examples])
    rows = {"fit (prompt + gold answer)": [(qa_prompt(e.question), f" {e.answers[0]}\n") for e in examples],
            "greedy decode (prompt + float32 greedy answer)": [(qa_prompt(e.question), f" {g}\n") for e, g in zip(examples, greedy)]}
    bf16_weights = copy.deepcopy(lm.model).to(torch.bfloat16)
    variants = {"float32": (lm.model, False), "bf16 autocast": (lm.model, True), "bf16 weights": (bf16_weights, False)}

    result: dict = {"command": f"python bench/bf16_margin.py --model {args.model} --questions {args.questions}", "threads": args.threads, "checks": {}}
    for check, pairs in rows.items():
        encoded = [encode_pair(lm.tokenizer, prompt, target) for prompt, target in pairs]
        logits, seconds = {}, {}
        with torch.inference_mode():
            for name, (model, autocast) in variants.items():
                start, logits[name] = time.perf_counter(), []
                for ids, split in encoded:  # one row at a time: no padding in the comparison
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                        out = model(input_ids=torch.tensor([ids])).logits[0, split - 1 : len(ids) - 1].float()
                    logits[name].append(out)
                seconds[name] = round(time.perf_counter() - start, 2)
        entry = {"rows": len(encoded), "forward_s": seconds}
        for name in ("bf16 autocast", "bf16 weights"):
            gaps = np.array([(a - b).abs().max().item() for a, b in zip(logits["float32"], logits[name])])
            margins = np.array([result_margin(b, stops).min().item() for b in logits[name]])
            flips = sum(bool((a.argmax(-1) != b.argmax(-1)).any()) for a, b in zip(logits["float32"], logits[name]))
            bound = 2 * gaps.max()
            entry[name] = {"max_gap": round(float(gaps.max()), 3), "p99_gap": round(float(np.percentile(gaps, 99)), 3),
                           "median_gap": round(float(np.median(gaps)), 3), "bound_2x_max_gap": round(float(bound), 3),
                           "rows_recomputed_at_bound": round(float((margins < bound).mean()), 3),
                           "rows_recomputed_at_1.0": round(float((margins < 1.0).mean()), 3),
                           "rows_with_an_argmax_flip": flips}
        result["checks"][check] = entry
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
