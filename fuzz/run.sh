#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: libFuzzer (libfuzzer-sys)
# with SanitizerCoverage instrumentation passed to rustc by hand, so neither
# nightly nor cargo-fuzz is needed.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer args...]   one target
#   fuzz/run.sh all SECONDS [libFuzzer args...]      every target, SECONDS each (CI)
#   fuzz/run.sh --minimize TARGET|all                shrink the committed corpus
#   fuzz/run.sh --list                               the targets
#
# A run starts from the committed corpus fuzz/corpus/TARGET/, writes new inputs
# to a scratch directory and merges them into the corpus with -merge=1 (only
# inputs that add coverage are kept). Crashes go to fuzz/artifacts/TARGET/;
# the script then prints how to replay one with the stable binary and exits
# non-zero. Every run ends with one summary line (execs, libFuzzer's cov and
# ft counters, corpus files, crashes).
#
# Environment: CARGO_TARGET_DIR (default fuzz/target), CARGO_BUILD_JOBS
# (default 1), FUZZ_SKIP_BUILD=1 to reuse the binaries as built.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifest=$here/Cargo.toml
triple=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
bin_dir=$CARGO_TARGET_DIR/$triple/release

# `--cfg fuzzing` pulls in libfuzzer-sys and its entry points; the sancov
# options are what `cargo fuzz` passes on nightly, available on stable as
# codegen and LLVM options. The explicit --target keeps these flags off build
# scripts and proc-macros.
fuzz_rustflags=(
    --cfg fuzzing
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cdebug-assertions
    -Coverflow-checks
)

# libFuzzer defaults; arguments given on the command line come later and win.
default_args=(-timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1)

usage() {
    sed -n '6,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

targets() {
    awk '/^\[\[bin\]\]/ { bin = 1; next }
         bin && /^name *=/ { gsub(/^name *= *"|"$/, ""); print; bin = 0 }' "$manifest"
}

build() {
    [[ ${FUZZ_SKIP_BUILD:-0} == 1 ]] && return
    echo "building instrumented targets (release, $triple)..." >&2
    RUSTFLAGS="${fuzz_rustflags[*]}" cargo build --release --locked --quiet \
        --target "$triple" --manifest-path "$manifest" --bins
}

count_files() {
    find "$1" -maxdepth 1 -type f | wc -l
}

# The value after `key:` in the last libFuzzer status line of a log.
stat_of() {
    grep -o "$1: *[0-9]*" "$2" | tail -n 1 | grep -o '[0-9]*$' || echo '?'
}

summaries=()
failed=0

fuzz_one() {
    local target=$1 seconds=$2
    shift 2
    local bin=$bin_dir/$target corpus=$here/corpus/$target artifacts=$here/artifacts/$target
    [[ -x $bin ]] || { echo "no such target: $target (see --list)" >&2; exit 2; }
    mkdir -p "$corpus" "$artifacts"
    if [[ $(count_files "$corpus") == 0 ]]; then
        echo "$target: empty corpus, writing the seeds first" >&2
        cargo run --quiet --locked --manifest-path "$manifest" --bin "$target" -- --write-seeds >&2
    fi
    local scratch log
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$target.XXXXXX")
    log=$scratch/libfuzzer.log
    mkdir "$scratch/new"

    echo "== $target: ${seconds}s from $(count_files "$corpus") corpus files" >&2
    local rc=0
    "$bin" "${default_args[@]}" -max_total_time="$seconds" -artifact_prefix="$artifacts/" \
        "$@" "$scratch/new" "$corpus" >"$log" 2>&1 || rc=$?

    local execs cov ft crashes=0
    execs=$(stat_of 'stat::number_of_executed_units' "$log")
    cov=$(stat_of 'cov' "$log")
    ft=$(stat_of 'ft' "$log")
    if [[ $rc != 0 ]]; then
        crashes=1
        failed=1
        tail -n 40 "$log" >&2
        local unit
        unit=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        cp "$log" "$artifacts/libfuzzer-$(date +%Y%m%d-%H%M%S).log"
        echo "!! $target failed (libFuzzer exit $rc). Reproduce with the stable replay binary:" >&2
        echo "   cargo run --manifest-path fuzz/Cargo.toml --bin $target -- ${unit#"$(dirname "$here")/"}" >&2
    fi

    # Keep only what adds coverage to the committed corpus.
    if [[ $(count_files "$scratch/new") != 0 ]]; then
        "$bin" -merge=1 "${default_args[@]}" "$corpus" "$scratch/new" >"$scratch/merge.log" 2>&1 ||
            { echo "$target: merge failed, see $scratch/merge.log" >&2; failed=1; return; }
    fi
    rm -rf "$scratch"
    summaries+=("$(printf '%-16s %5ss  execs %-10s cov %-6s ft %-7s corpus %-5s crashes %s' \
        "$target" "$seconds" "$execs" "$cov" "$ft" "$(count_files "$corpus")" "$crashes")")
}

minimize_one() {
    local target=$1 bin=$bin_dir/$1 corpus=$here/corpus/$1 fresh before
    [[ -x $bin ]] || { echo "no such target: $target" >&2; exit 2; }
    [[ -d $corpus ]] || return 0
    before=$(count_files "$corpus")
    fresh=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-min-$target.XXXXXX")
    "$bin" -merge=1 "${default_args[@]}" "$fresh" "$corpus" >"$fresh.log" 2>&1 ||
        { echo "$target: merge failed, see $fresh.log" >&2; exit 1; }
    find "$corpus" -maxdepth 1 -type f -delete
    mv "$fresh"/* "$corpus"/ 2>/dev/null || true
    rm -rf "$fresh" "$fresh.log"
    summaries+=("$(printf '%-16s corpus %s -> %s files' "$target" "$before" "$(count_files "$corpus")")")
}

[[ $# -ge 1 ]] || usage
case $1 in
--list)
    targets
    exit 0
    ;;
--minimize)
    [[ $# == 2 ]] || usage
    build
    if [[ $2 == all ]]; then
        for t in $(targets); do minimize_one "$t"; done
    else
        minimize_one "$2"
    fi
    ;;
-*) usage ;;
*)
    [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage
    which=$1 seconds=$2
    shift 2
    build
    if [[ $which == all ]]; then
        for t in $(targets); do fuzz_one "$t" "$seconds" "$@"; done
    else
        fuzz_one "$which" "$seconds" "$@"
    fi
    ;;
esac

printf '%s\n' "${summaries[@]}"
exit "$failed"
