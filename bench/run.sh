#!/usr/bin/env bash
# deployr's benchmark harness (issue 6): real OpenSSH sshd hosts on 127.0.0.1, deployr vs the
# OpenSSH client, results as markdown on stdout (BENCHMARKS.md records a full run).
#
#   bench/run.sh            the full set (about 6 minutes on this 2-core machine)
#   bench/run.sh --quick    every scenario once at N = 5 (for CI: keeps the harness working)
#   bench/run.sh --only output    one scenario alone (here issue 11's output benchmark)
#
# Any other flag goes to bench/run.py (see `python3 bench/run.py --help`). Set DEPLOYR_BIN to
# benchmark an already-built binary instead of running `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v git >/dev/null 2>&1 || need+=(git)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# One socket per host for deployr, one ssh process (and its sockets) per host for xargs, and
# sshd's per-connection processes: raise the open-file limit as far as allowed.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then ulimit -n 65536; else ulimit -n "$hard"; fi

# sshd refuses to start as root without its privilege-separation directory.
if [ ! -d /run/sshd ]; then
  if [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd; else sudo mkdir -p /run/sshd; fi
fi

if [ -z "${DEPLOYR_BIN:-}" ]; then
  cargo build --release --locked --quiet
  DEPLOYR_BIN=target/release/deployr
  if command -v git >/dev/null 2>&1 && git rev-parse --git-dir >/dev/null 2>&1; then
    DEPLOYR_COMMIT=$(git rev-parse --short HEAD)
    git diff --quiet HEAD -- src Cargo.toml Cargo.lock || DEPLOYR_COMMIT="$DEPLOYR_COMMIT + uncommitted changes"
    export DEPLOYR_COMMIT
  fi
fi

# run.py stops its sshd hosts, ControlMasters and proxy itself (and then empties the pid
# file); this trap is the safety net for a run.py that was killed: it stops exactly the
# processes run.py recorded as started.
pidfile=$(mktemp /tmp/deployr-bench-pids.XXXXXX)
cleanup() {
  while read -r pid; do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    case "$comm" in
      sshd | python3*)
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        ;;
    esac
  done <"$pidfile"
  rm -f "$pidfile"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pyinfra, for the fan-out comparison (issue 15): from PyPI into a venv of its own, pinned;
# left out (and said so) when it cannot be installed. BENCH_PYINFRA=path uses another one.
# Not needed when `--only` leaves the fan-out out (e.g. `--only output`).
fanout=yes
prev=""
for arg in "$@"; do
  case "$prev=$arg" in
    --only=*) case ",$arg," in *,fanout,*) ;; *) fanout=no ;; esac ;;
  esac
  case "$arg" in
    --only=*) case ",${arg#--only=}," in *,fanout,*) ;; *) fanout=no ;; esac ;;
  esac
  prev=$arg
done
if [ -z "${BENCH_PYINFRA:-}" ] && [ "$fanout" = yes ]; then
  venv="${TMPDIR:-/tmp}/deployr-bench-pyinfra"
  if [ -x "$venv/bin/pyinfra" ] ||
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "pyinfra==3.10.0"; } >&2; then
    BENCH_PYINFRA="$venv/bin/pyinfra"
  else
    echo "bench: pyinfra could not be installed from PyPI; the fan-out has no pyinfra column" >&2
  fi
fi

BENCH_PIDFILE="$pidfile" python3 bench/run.py --deployr "$DEPLOYR_BIN" \
  ${BENCH_PYINFRA:+--pyinfra "$BENCH_PYINFRA"} "$@"
