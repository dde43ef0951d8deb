#!/usr/bin/env bash
# The whole test suite: installs what the tests need (OpenSSH's server, git, GNU time and
# the login shells zsh, fish, dash and tcsh), then checks formatting and lints and runs
# every test. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# ssh (the oracle of tests/ssh_config.rs), ssh-keygen, ssh-agent and ssh-add.
{ command -v ssh && command -v ssh-keygen && command -v ssh-agent; } >/dev/null 2>&1 || need+=(openssh-client)
command -v git >/dev/null 2>&1 || need+=(git)
# GNU time: tests/remote.rs measures deployr's peak memory with it.
[ -x /usr/bin/time ] || need+=(time)
# Login shells of the hosts in tests/remote.rs.
for shell in zsh fish dash tcsh; do
  command -v "$shell" >/dev/null 2>&1 || need+=("$shell")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The release build first: the test suite checks the static binary too.
bash scripts/dist.sh --profile dev
cargo test --locked
