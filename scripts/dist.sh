#!/usr/bin/env bash
# A release build: one statically linked binary (glibc linked in, no shared libraries needed
# on the machine that runs it), printed path last.
#
#   bash scripts/dist.sh                 # release profile, target/dist/deployr
#   bash scripts/dist.sh --profile dev   # the same, unoptimised (what the test suite checks)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = "--profile" ]; then
  profile=${2:?--profile takes dev or release}
fi
target=x86_64-unknown-linux-gnu
dir=target/dist-build

RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --profile "$profile" --target "$target" --target-dir "$dir" --bin deployr

case "$profile" in dev) out=debug ;; *) out=$profile ;; esac
mkdir -p target/dist
cp "$dir/$target/$out/deployr" target/dist/deployr
# ldd says "statically linked" (or "not a dynamic executable") for a static binary, and lists
# the libraries otherwise.
linkage=$(ldd target/dist/deployr 2>&1 || true)
case "$linkage" in
  *"statically linked"*|*"not a dynamic executable"*) ;;
  *) echo "error: target/dist/deployr is dynamically linked:" >&2; echo "$linkage" >&2; exit 1 ;;
esac
target/dist/deployr --version >&2
echo target/dist/deployr
