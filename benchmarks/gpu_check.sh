#!/usr/bin/env bash
# Record a real rollout on this machine's GPUs (or the Ray cluster RAY_ADDRESS names) and its fidelity report.
#
#   pip install -e '.[gpu,ray]'                     # official vLLM + Ray
#   bash benchmarks/gpu_check.sh [MODEL] [TP]       # MODEL: an HF folder or smollm2 (default); TP: GPUs per engine
#
# Environment: INSTANCES (default: GPUs / TP, on this node or the whole cluster), TRACE (a trace to replay;
# default the bundled GSM8K/SmolLM2 recording), LIMIT (prompts, default 64), OUT (default out/gpu_check).
# It runs verl and context on the same length replay, one engine actor per TP group, on the wall clock, then
# `seer fidelity` on each run and `seer figures` over both. Everything lands under $OUT; the summary is
# $OUT/gpu_check.json.
set -euo pipefail

MODEL=${1:-smollm2}
TP=${2:-1}
TRACE=${TRACE:-seer/data/gsm8k_smollm2.parquet}
LIMIT=${LIMIT:-64}
OUT=${OUT:-out/gpu_check}
SEER=${SEER:-seer}

gpus=$(python - <<'EOF'
import os
if os.environ.get("RAY_ADDRESS"):
    import ray
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    print(int(ray.cluster_resources().get("GPU", 0)))
else:
    try:
        import torch
        print(torch.cuda.device_count())
    except ImportError:
        print(0)
EOF
)
if [ "$gpus" -lt "$TP" ]; then
    echo "gpu_check: needs at least $TP GPU(s) (found $gpus); set RAY_ADDRESS for a cluster" >&2
    exit 2
fi
INSTANCES=${INSTANCES:-$((gpus / TP))}
mkdir -p "$OUT"
echo "gpu_check: $MODEL, $INSTANCES instance(s) x TP$TP on $gpus GPU(s), replaying $TRACE (first $LIMIT prompts)"

for policy in verl context; do
    $SEER run --model "$MODEL" --replay "$TRACE" --limit "$LIMIT" --policy "$policy" \
        --launch ray --clock wall --instances "$INSTANCES" --gpus-per-instance "$TP" \
        --max-num-seqs 256 --max-model-len 4096 --out "$OUT/$policy" --json > "$OUT/$policy.summary.json"
    $SEER fidelity "$OUT/$policy" --json > "$OUT/$policy.fidelity.json"
done
$SEER figures --out "$OUT/figures" --run "$OUT/verl" --run "$OUT/context"

python - "$OUT" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
report = {}
for policy in ("verl", "context"):
    s = json.loads((out / f"{policy}.summary.json").read_text())
    f = json.loads((out / f"{policy}.fidelity.json").read_text())
    report[policy] = {
        "makespan_s": s["makespan_s"], "throughput_tok_s": s["throughput_tok_s"], "engine_nodes": s["engine_nodes"],
        "engine_startup_s": s["engine_startup_s"], "sim_makespan_s": f["sim_makespan_s"],
        "makespan_error": f["makespan_error"], "step_time_mape": f["step_time_mape"],
        "finish_time_mape": f["finish_time_mape"],
    }
report["context_over_verl"] = report["verl"]["makespan_s"] / report["context"]["makespan_s"]
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
EOF
