#!/usr/bin/env bash
# Runs opsbot's benchmarks for one or more git revisions, back to back on this machine, so
# before/after figures come from the same hardware and the same load generators:
#
#   benches/compare.sh                 # the working tree only
#   benches/compare.sh 88d26af HEAD    # two commits, each built in its own worktree
#
# Each revision is built in release into target-bench/<rev> (a cold build takes several
# minutes). A load tool an older revision lacks (benches/console.rs) is copied in from the
# working tree. Output: target-bench/<rev>.txt, and the figures on
# stdout. Knobs: BENCHES (default "console slack_ack alert_load pipeline"), plus each
# bench's own (see the top of benches/*.rs). Run it on a quiet machine: other builds on
# the same cores move every tail figure.
set -euo pipefail

root=$(git rev-parse --show-toplevel)
benches=${BENCHES:-console slack_ack alert_load pipeline}
revs=("$@")
[ ${#revs[@]} -eq 0 ] && revs=(working-tree)
mkdir -p "$root/target-bench"

for rev in "${revs[@]}"; do
    if [ "$rev" = working-tree ]; then
        tree=$root
    else
        tree=$root/target-bench/tree-$rev
        [ -d "$tree" ] || git -C "$root" worktree add --detach "$tree" "$rev" >/dev/null
        # A load tool the revision does not have yet is taken from the working tree (the
        # revision's own are kept: they build against its API).
        for f in "$root"/benches/*.rs; do
            [ -e "$tree/benches/${f##*/}" ] || cp "$f" "$tree/benches/"
        done
        for b in $benches; do
            grep -q "name = \"$b\"" "$tree/Cargo.toml" ||
                printf '\n[[bench]]\nname = "%s"\nharness = false\n' "$b" >>"$tree/Cargo.toml"
        done
    fi
    out=$root/target-bench/$rev.txt
    : >"$out"
    for b in $benches; do
        echo "== $rev: $b" | tee -a "$out"
        (cd "$tree" && CARGO_TARGET_DIR=$root/target-bench/$rev cargo bench --bench "$b" 2>&1) |
            grep -vE '^\s*(Compiling|Finished|Running|Benchmarking|Warming|Collecting|Analyzing)' |
            tee -a "$out"
    done
done
