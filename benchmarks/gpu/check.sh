#!/usr/bin/env bash
# docqa's one-GPU check: golden answers on CUDA (float32, bf16, float16), the engine's
# windows/s in bf16 at token budgets 8k-256k against the raw forward, the share of the
# GPU's bf16 peak, host vs device time per window, pad buckets and torch.compile, and an
# end-to-end `docqa run` on SQLite. One table, in under 8 minutes; see check.py --help.
#
#   benchmarks/gpu/check.sh                      # on the GPU machine, from any folder
#   benchmarks/gpu/check.sh --device cpu         # the dry run on a CPU (a few minutes)
#   PYTHON=/opt/conda/bin/python benchmarks/gpu/check.sh --out /tmp/gpu-check
#
# Needs PyTorch (a CUDA build), transformers and tokenizers; docqa's own other
# dependencies are optional (the check says which parts need them and how to bring
# their wheels to a machine without internet). No Redis, PostgreSQL or network is used.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -c "import torch" 2>/dev/null; then
    PY="$REPO/.venv/bin/python"
else
    PY="$(command -v python3 || command -v python)"
fi
cd "$REPO"
exec "$PY" "$HERE/check.py" "$@"
