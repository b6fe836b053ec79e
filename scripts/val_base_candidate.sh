#!/usr/bin/env bash
# Issue 17: a candidate base model against the shipped one on DAVIS 2016 val, one after the other on the same
# (idle) machine, each with the base settings (full+c2) and the shipped default loop (the flow variant).
#   scripts/val_base_candidate.sh ~/data/DAVIS runs/ship-lite0/refiner.pt docs/results/accuracy/val-lite0
# writes OUT_PREFIX-shipped.{json,md} and OUT_PREFIX-candidate.{json,md}; resumable (--partial).
set -euo pipefail
davis=${1:?usage: scripts/val_base_candidate.sh DAVIS_ROOT CANDIDATE_WEIGHTS OUT_PREFIX}
weights=${2:?usage: scripts/val_base_candidate.sh DAVIS_ROOT CANDIDATE_WEIGHTS OUT_PREFIX}
out=${3:?usage: scripts/val_base_candidate.sh DAVIS_ROOT CANDIDATE_WEIGHTS OUT_PREFIX}
settings=full+c2,flow@0.75+g2+la+mf+c2
reusevos benchmark "$davis" --split val --settings "$settings" --threads 2 --no-flops \
    --json "$out-shipped.json" --markdown "$out-shipped.md" --partial "$out-shipped.partial.jsonl"
reusevos benchmark "$davis" --split val --weights "$weights" --settings "$settings" --threads 2 --no-flops \
    --json "$out-candidate.json" --markdown "$out-candidate.md" --partial "$out-candidate.partial.jsonl"
