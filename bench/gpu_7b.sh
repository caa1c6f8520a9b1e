#!/usr/bin/env bash
# hf vs vLLM probe throughput on one GPU with a 7B model, the paper's probe settings, in one run.
#   MODEL=/path/to/Qwen2.5-7B (a local safetensors directory, or a hub id the machine can fetch)
#   bash bench/gpu_7b.sh                 # 500 EntityQuestions-style builtin test questions
#   QUESTIONS=2000 DATA=/path/to/entityquestions bash bench/gpu_7b.sh
# Needs a CUDA machine with `pip install -e ".[vllm]"` done (CUDA vllm 0.32, transformers<5.20).
# Writes bench/results/engines-7b.json; copy the ratio and its conditions into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODEL:?set MODEL to a 7B model directory or hub id}"
python - <<'PY'
import torch, vllm
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| vllm", vllm.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python bench/engines.py --model "$MODEL" --data "${DATA:-builtin}" --questions "${QUESTIONS:-500}" \
  --dtype bfloat16 --batch-size "${BATCH:-64}" --engine-set gpu_memory_utilization=0.85 \
  --engine-set max_model_len=2048 --out bench/results/engines-7b.json
