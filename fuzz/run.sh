#!/usr/bin/env bash
# Runs fuzz targets built by fuzz/fuzz.mk. usage: fuzz/run.sh ci|long|coverage TARGET...
#   ci        FUZZ_RUNS runs (default 1000000) with seed FUZZ_SEED (default 1), from the seed
#             corpus and an empty scratch directory: the same work every time.
#   long      FUZZ_SECONDS (default 600) per target; new inputs are kept in $FUZZ_OUT/corpus/TARGET.
#   coverage  the seeds alone through the coverage build ($FUZZ_OUT/cov/): llvm-cov's report for
#             csrc/nvme_ebs.c in $FUZZ_OUT/cov/TARGET.txt.
# FUZZ_FLAGS adds libFuzzer flags (e.g. -jobs=2 -workers=2). Logs: $FUZZ_OUT/log/TARGET.MODE.log.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:?usage: fuzz/run.sh ci|long|coverage TARGET...}
shift
out=${FUZZ_OUT:-build/fuzz}
# The ASan runtime must come first in the process: a test run's LD_PRELOAD would stop it.
unset LD_PRELOAD
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && command -v llvm-symbolizer-14 >/dev/null; then
    ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer-14)
    export ASAN_SYMBOLIZER_PATH
fi

for target in "$@"; do
    seeds=()
    case $target in
    stats) opts=(-dict=fuzz/stats.dict -max_len=8192) seeds=(fuzz/corpus/stats) ;;
    identify) opts=(-max_len=8192) seeds=(fuzz/corpus/identify) ;;
    stats_struct) opts=(-dict=fuzz/stats.dict -max_len=512) ;;
    render) opts=(-max_len=1024) seeds=(fuzz/corpus/render) ;;
    *) echo "unknown fuzz target: $target" >&2; exit 2 ;;
    esac
    case $mode in
    coverage)
        empty=$out/cov/empty
        rm -rf "$empty" "$out/cov/$target.profraw"
        mkdir -p "$empty"
        LLVM_PROFILE_FILE=$out/cov/$target.profraw "$out/cov/fuzz_$target" -runs=0 "${opts[@]}" "$empty" "${seeds[@]}" \
            >"$out/cov/$target.log" 2>&1 || { tail -n 40 "$out/cov/$target.log" >&2; exit 1; }
        llvm-profdata-14 merge -o "$out/cov/$target.profdata" "$out/cov/$target.profraw"
        llvm-cov-14 report -show-functions -instr-profile="$out/cov/$target.profdata" "$out/cov/fuzz_$target" \
            csrc/nvme_ebs.c >"$out/cov/$target.txt"
        echo "seeds of $target through csrc/nvme_ebs.c:"
        sed 's/^/    /' "$out/cov/$target.txt"
        continue
        ;;
    ci)
        work=$out/work-ci/$target
        rm -rf "$work"
        limits=(-runs="${FUZZ_RUNS:-1000000}" -seed="${FUZZ_SEED:-1}")
        ;;
    long)
        work=$out/corpus/$target
        limits=(-max_total_time="${FUZZ_SECONDS:-600}")
        ;;
    *) echo "unknown mode: $mode" >&2; exit 2 ;;
    esac
    mkdir -p "$work" "$out/artifacts" "$out/log"
    log=$out/log/$target.$mode.log
    # libFuzzer writes new inputs into the first directory only: the committed seeds stay as they are.
    # shellcheck disable=SC2086
    if ! "$out/fuzz_$target" "${limits[@]}" "${opts[@]}" ${FUZZ_FLAGS:-} -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$target-" "$work" "${seeds[@]}" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz_$target: FAILED (log: $log, reproducer under $out/artifacts/)" >&2
        exit 1
    fi
    if grep -qE 'ERROR: AddressSanitizer|runtime error:|FUZZ INVARIANT FAILED' "$log"; then
        grep -E -A20 'ERROR: AddressSanitizer|runtime error:|FUZZ INVARIANT FAILED' "$log" >&2
        echo "fuzz_$target: sanitizer report (log: $log)" >&2
        exit 1
    fi
    echo "fuzz_$target ($mode):"
    grep -E 'INITED|DONE|^Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | sed 's/^/    /'
done
