#!/usr/bin/env bash
# The GPU machine's side of opforge's result scripts, one call for several of them: unpack the bundles the CPU
# machine built (.gpu_carry/*.tar.xz, each holding one folder for .gpu_bundle/), run each phase named on the command
# line, and pack every result file into $OUT/results.tar.gz (plus one log per phase). No TVM is needed here.
#
#   bash scripts/gpu_run.sh conformance verify-model fuzz realworld data-dependent trt-lean bench-wide bench \
#       roialign-anatomy matmul-rule fuzz-tuned isolation roialign-dispatch
#
# Each phase is the `run` half of a two-phase script (scripts/<name>.py build ran on the CPU machine); a phase
# that fails is logged and the next one still runs; one that outlives PHASE_TIMEOUT seconds (default 540, inside
# the device call's 600) is stopped, so the results of the others are still packed. The exit code is the number of
# phases that failed.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/opforge-gpu-out}
res="$OUT/res"
mkdir -p .gpu_bundle "$res"
for t in .gpu_carry/*.tar.xz; do
    [ -e "$t" ] && tar -xJf "$t" -C .gpu_bundle
done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"

failed=0
for phase in "$@"; do
    start=$(date +%s)
    case "$phase" in
    conformance) cmd=(python3 scripts/conformance.py run .gpu_bundle/conformance "$res") ;;
    verify-model) cmd=(python3 scripts/verify_model.py run .gpu_bundle/verify_model "$res") ;;
    fuzz) cmd=(python3 scripts/fuzz.py run .gpu_bundle/fuzz "$res") ;;
    fuzz-tuned) cmd=(python3 scripts/fuzz.py run .gpu_bundle/fuzz-tuned "$res") ;;
    realworld) cmd=(python3 scripts/realworld.py run .gpu_bundle/realworld "$res") ;;
    data-dependent) cmd=(python3 scripts/check_data_dependent.py run .gpu_bundle/datadep "$res") ;;
    trt-lean)
        # TensorRT 11.4's lean runtime travels as wheels (the machine has no network).
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/trt-site .gpu_carry/tensorrt_lean*.whl
        cmd=(env PYTHONPATH="/tmp/trt-site:$PYTHONPATH" python3 scripts/trt_lean.py run .gpu_bundle/trt-lean "$res")
        ;;
    bench-wide)
        # torchvision (RoiAlign's contender) and Pillow, which it imports, travel as wheels where the call carries
        # them (the machine has torch but not torchvision); without them RoiAlign's contender row says why.
        site=""
        if compgen -G ".gpu_carry/torchvision-*.whl" >/dev/null; then
            python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tv-site \
                .gpu_carry/torchvision-*.whl .gpu_carry/pillow-*.whl && site="/tmp/tv-site:"
        fi
        cmd=(env PYTHONPATH="$site$PYTHONPATH" python3 scripts/bench_wide.py run .gpu_bundle/wide "$res"
            --part "${WIDE_PART:-0/1}" --only "${WIDE_ONLY:-}")
        ;;
    roialign-anatomy) cmd=(python3 scripts/roialign_anatomy.py run .gpu_bundle/anatomy "$res") ;;
    matmul-rule) cmd=(python3 scripts/check_matmul_rule.py run .gpu_bundle/matmul "$res") ;;
    isolation) cmd=(python3 scripts/check_isolation.py run .gpu_bundle/isolation "$res") ;;
    roialign-dispatch) cmd=(python3 scripts/roialign_dispatch.py run .gpu_bundle/dispatch "$res") ;;
    bench) cmd=(python3 scripts/bench.py run .gpu_bundle/bench "$res" --dtypes "${BENCH_DTYPES:-float32,float16}") ;;
    *)
        echo "unknown phase $phase" >&2
        failed=$((failed + 1))
        continue
        ;;
    esac
    echo "== $phase: ${cmd[*]}" | tee "$OUT/log-$phase.txt"
    if ! timeout "${PHASE_TIMEOUT:-540}" "${cmd[@]}" >>"$OUT/log-$phase.txt" 2>&1; then
        failed=$((failed + 1))
        echo "== $phase FAILED" | tee -a "$OUT/log-$phase.txt"
    fi
    echo "== $phase took $(($(date +%s) - start)) s" | tee -a "$OUT/log-$phase.txt"
    tail -n 3 "$OUT/log-$phase.txt"
done
tar -czf "$OUT/results.tar.gz" -C "$res" .
exit "$failed"
