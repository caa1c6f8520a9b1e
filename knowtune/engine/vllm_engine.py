"""`VLLMEngine`: the probe's `Engine` on vLLM, for large models and many GPUs (optional extra `knowtune[vllm]`).

Per prompt it sends two requests: one greedy (temperature 0) and one with `n = n_samples` at the
probe's temperature and top-k; vLLM's prefix caching shares the few-shot prefix's KV blocks across all
of them, as the hf engine's prefix cache does. Prompts go in as the same token ids the hf engine builds
(the tokenizer is vLLM's, loaded from the same directory), and answers stop at the same tokens
(every vocab id whose text holds a newline, plus EOS), so greedy answers match the hf engine's.
Samples are i.i.d. draws from the same distribution, not the same draws: vLLM samples each of the n
sequences itself, while the hf engine draws counts down a tree. With a per-request seed (GPU) a rerun
gives the same samples on the same hardware and version; on CPU vLLM refuses per-request seeds
("CPU Generator does not use offset"), so only the engine seed is set and `info.reproducible` is False.
"""

from __future__ import annotations

from knowtune.engine.base import (
    Completion,
    EngineInfo,
    EngineStats,
    SamplingParams,
    answer_text,
    newline_stop_ids,
)
from knowtune.engine.options import VLLMEngineOptions


class VLLMEngine:
    """Greedy + n samples per prompt through `vllm.LLM.generate`, prefix caching on."""

    def __init__(self, model_dir: str, options: VLLMEngineOptions | None = None, seed: int = 0,
                 trust_remote_code: bool = False):
        import vllm
        from vllm.platforms import current_platform

        options = options or VLLMEngineOptions()
        cpu = current_platform.is_cpu()
        # On CPU, graph compilation takes minutes for a few seconds' gain on short answers: eager by default.
        eager = cpu if options.enforce_eager is None else options.enforce_eager
        # vLLM reserves this share of all memory up front; on CPU that is RAM the rest of the machine needs too
        memory = options.gpu_memory_utilization or (0.2 if cpu else 0.9)
        self.llm = vllm.LLM(
            model=model_dir, tokenizer=model_dir, dtype=options.dtype, seed=seed, enforce_eager=eager,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=memory, max_model_len=options.max_model_len,
            enable_prefix_caching=True, trust_remote_code=trust_remote_code,
            generation_config="vllm",  # the probe's settings alone, not the model's generation_config.json defaults
        )
        self.tok = self.llm.get_tokenizer()
        self.stop_ids = sorted(newline_stop_ids(self.tok))
        self.per_request_seeds = not cpu
        self.stats = EngineStats()
        self.info = EngineInfo("vllm", vllm.__version__, reproducible=self.per_request_seeds,
                               options={**options.model_dump(), "enforce_eager": eager, "gpu_memory_utilization": memory,
                                        "platform": current_platform.device_type})

    def _params(self, n: int, temperature: float, top_k: int, max_tokens: int, seed: int | None):
        from vllm import SamplingParams as VLLMSamplingParams

        return VLLMSamplingParams(
            n=n, temperature=temperature, top_k=top_k if top_k else 0, max_tokens=max_tokens,
            stop_token_ids=self.stop_ids, seed=seed, detokenize=False,  # answers are decoded as the hf engine does
        )

    def complete(
        self, prefix: str, suffixes: list[str], seeds: list[int], params: SamplingParams
    ) -> list[Completion]:
        """Greedy + n_samples answers for each prompt `prefix + suffix`, seeded per prompt where vLLM allows."""
        return self.complete_prompts([(prefix, s) for s in suffixes], seeds, params)

    def complete_prompts(
        self, prompts: list[tuple[str, str]], seeds: list[int], params: SamplingParams
    ) -> list[Completion]:
        """Greedy + n_samples answers for each prompt (prefix, suffix); prefix caching shares each prefix."""
        greedy = self._params(1, 0.0, 0, params.max_new_tokens, None)
        requests, sampling = [], []
        for (prefix, suffix), seed in zip(prompts, seeds):
            prompt = {"prompt_token_ids": self.tok(prefix + suffix)["input_ids"]}
            requests.append(prompt)
            sampling.append(greedy)
            if params.n_samples:
                requests.append(prompt)
                sampling.append(self._params(params.n_samples, params.temperature, params.top_k, params.max_new_tokens,
                                             seed if self.per_request_seeds else None))
        outputs = iter(self.llm.generate(requests, sampling, use_tqdm=False))
        results = []
        for _ in prompts:
            out = next(outputs)
            self._count(out)
            samples: dict[str, int] = {}
            if params.n_samples:
                drawn = next(outputs)
                self._count(drawn)
                for seq in drawn.outputs:
                    text = answer_text(self.tok, list(seq.token_ids))
                    samples[text] = samples.get(text, 0) + 1
            results.append(Completion(answer_text(self.tok, list(out.outputs[0].token_ids)), samples))
        self.stats.prompts += len(prompts)
        return results

    def close(self) -> None:
        """Stop vLLM's engine processes: a spawned process that made the engine cannot exit while they run
        (multiprocessing joins its children before vLLM's exit hooks would stop them)."""
        self.llm.llm_engine.engine_core.shutdown()

    def _count(self, out) -> None:
        """Prefill and decode work of one request (vLLM runs every sequence's tokens: no tree sharing)."""
        self.stats.prefill_tokens += len(out.prompt_token_ids) - (out.num_cached_tokens or 0)
        generated = sum(len(seq.token_ids) for seq in out.outputs)
        self.stats.tree_forwards += generated
        self.stats.sample_tokens += generated
