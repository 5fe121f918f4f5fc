#!/usr/bin/env bash
# Hostile-client and hostile-upstream attacks against the release binary, with numbers: RSS, open
# fds, the latency of a well-behaved request, what the attacker got.
#
#     bash benches/hostile.sh [OLD_BINARY]
#
# Builds this tree's release binary and runs benches/hostile.py against it;
# given an older binary (e.g. one built from an earlier commit), runs the same
# attacks against it first, for a before/after comparison. The simulator is
# always this tree's. ATTACKS=connections,burst,oversize,heavy,jobs,disconnect,
# tenants,logs,sigterm picks some. Loopback only; everything it starts is
# stopped at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ulimit -n 65536 2>/dev/null || ulimit -n 20000 2>/dev/null || true
cargo build --release --locked --bin cph-gateway 2>&1 | tail -n 1 >&2
NEW="$ROOT/target/release/cph-gateway"
if [ $# -ge 1 ]; then
    echo "== before: $1"
    python3 benches/hostile.py "$1" "$NEW"
fi
echo "== after: $NEW"
python3 benches/hostile.py "$NEW" "$NEW"
