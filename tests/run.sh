#!/usr/bin/env bash
# The test command of README.md: installs what the tests need and this checkout as a package (editable, with its
# console scripts; one pip command, so the pinned torch is what resolves), then runs the tests (CPU, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt -e .
# Debian's Chromium for the browser tests; Debian's Python with numpy runs sandboxed benchmark code as another user
# (a Python under root's home is not readable by it; MBPP+'s tests import numpy)
if ! command -v chromium >/dev/null 2>&1 || ! /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  (apt-get update -q && apt-get install -y -q chromium python3-numpy) >/dev/null
fi
# vLLM lives in its own environment (its torch / transformers pins differ from ours): created once, ~2 min, 3.5 GB
tflow-vllm --setup-only
ruff check .  # the style gate (configuration in pyproject.toml)
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
python -m pytest -q "$@"
