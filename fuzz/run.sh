#!/usr/bin/env bash
# Builds and runs Skald's fuzz targets, one after the other, each for
# FUZZ_SECONDS (default 60) or for FUZZ_RUNS inputs. Not part of CI (CI stays
# on stable).
#
#   fuzz/run.sh                       # every target, 60 s each
#   FUZZ_SECONDS=300 fuzz/run.sh jwt_forged client_frame
#   FUZZ_RUNS=10000000 nice -n 19 fuzz/run.sh    # 10M inputs each, no time limit
#
# FUZZ_RUNS=N passes libFuzzer `-runs=N`: each target stops after N inputs
# (the replay of its corpus included). With FUZZ_RUNS set, FUZZ_SECONDS is a
# time limit only if it is given too (whichever comes first); without it,
# there is none.
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Each target reads the tracked seeds in fuzz/seeds/<target>/ and writes what
# it discovers to fuzz/corpus/<target>/ (git-ignored; kept between runs, so
# later runs start from there). A crash is saved in fuzz/artifacts/<target>/
# and makes this script exit non-zero, after the other targets have run.
# Extra libFuzzer flags can be given in FUZZ_ARGS (e.g. FUZZ_ARGS=-jobs=2).
# FUZZ_SANITIZER picks cargo-fuzz's sanitizer (default `address`); `none`
# runs several times faster and still catches every panic, overflow and
# debug assertion, which is what a fuzzer finds in safe Rust (the long runs
# of docs/fuzzing.md say which they used).
set -euo pipefail

cd "$(dirname "$0")"

runs="${FUZZ_RUNS:-}"
if [ -n "$runs" ]; then
    if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
        echo "run.sh: FUZZ_RUNS must be a positive number of inputs, not '$runs'" >&2
        exit 2
    fi
    seconds="${FUZZ_SECONDS:-}"
else
    seconds="${FUZZ_SECONDS:-60}"
fi
limit=()
what=""
if [ -n "$runs" ]; then
    limit+=("-runs=$runs")
    what="$runs inputs"
fi
if [ -n "$seconds" ]; then
    limit+=("-max_total_time=$seconds")
    what="${what:+$what or }${seconds}s"
fi
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
san="${FUZZ_SANITIZER:-address}"
# Each sanitizer builds in its own directory: a rebuild never replaces the
# binary of a run still going with another.
sanitizer=(--sanitizer "$san" --target-dir "target/$san")
read -r -a extra <<<"${FUZZ_ARGS:-}"

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "run.sh: needs cargo-fuzz on the $toolchain toolchain:" >&2
    echo "  rustup toolchain install $toolchain && cargo install cargo-fuzz" >&2
    exit 2
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

# The default cargo-fuzz build: optimized, with debug assertions and overflow
# checks, and AddressSanitizer. (`-O` would turn the assertions off.)
if [ "$#" -gt 0 ]; then
    for target in "${targets[@]}"; do cargo "+$toolchain" fuzz build "${sanitizer[@]}" "$target"; done
else
    cargo "+$toolchain" fuzz build "${sanitizer[@]}"
fi

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    dirs=("corpus/$target")
    [ -d "seeds/$target" ] && dirs+=("seeds/$target")
    args=(
        "${limit[@]}"
        "-timeout=10"
        "-rss_limit_mb=2048"
        "-max_len=8192"
        "-print_final_stats=1"
        "-artifact_prefix=artifacts/$target/"
    )
    [ -f "dict/$target.dict" ] && args+=("-dict=dict/$target.dict")
    echo "=== $target: $what, corpus ${dirs[*]}"
    if cargo "+$toolchain" fuzz run "${sanitizer[@]}" "$target" "${dirs[@]}" -- "${args[@]}" "${extra[@]}"; then
        echo "=== $target: no crash"
    else
        echo "=== $target: FAILED (see artifacts/$target/)"
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "run.sh: ${#targets[@]} target(s), no crash"
