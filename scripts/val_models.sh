#!/usr/bin/env bash
# The base models on DAVIS 2016 val, one after the other on the same machine, then side by side with the paper's
# Table 1 (issue 18): G-FRTM (the default weights) and G-TTVOS (the shipped ttvos.pt), each with the paper's
# settings (tau 1 and 0.7, copy, the oracle) and ours (windows, the longest gap +g1, flow). Resumable (--partial).
#   scripts/val_models.sh ~/data/DAVIS docs/results/ttvos/val-models-$(git rev-parse --short HEAD)
set -euo pipefail
davis=${1:?usage: scripts/val_models.sh DAVIS_ROOT OUT_PREFIX}
out=${2:?usage: scripts/val_models.sh DAVIS_ROOT OUT_PREFIX}
reusevos benchmark "$davis" --split val --model frtm --threads 2 \
    --settings full,reuse@0.7,copy@0.7,oracle@0.7,full+c2,reuse@0.7+w2+c2,reuse@0.7+w2+g1+c2,copy@0.7+c2,flow@0.75+g2+la+mf+c2 \
    --json "$out-frtm.json" --markdown "$out-frtm.md" --partial "$out-frtm.partial.jsonl"
reusevos benchmark "$davis" --split val --model ttvos --threads 2 \
    --settings full,reuse@0.7,copy@0.7,oracle@0.7,full+c2,reuse@0.8+w2+c2,reuse@0.7+w2+c2,reuse@0.7+w2+g1+c2,reuse@0.5+w2+c2,copy@0.7+c2,oracle@0.7+w2+c2,flow@0.75+g2+la+c2 \
    --json "$out-ttvos.json" --markdown "$out-ttvos.md" --partial "$out-ttvos.partial.jsonl"
python "$(dirname "$0")/model_comparison.py" "$out-frtm.json" "$out-ttvos.json" --markdown "$out.md" --figure "$out.png"
