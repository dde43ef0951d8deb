#!/usr/bin/env bash
# What resolving OpenSSH's configuration costs deployr at N hosts (default 480): a deployfile
# whose hosts are ~/.ssh/config aliases, loaded by `deployr --dry-run run t` (which resolves
# every host and prints, connecting nowhere), against the same deployfile with plain addresses
# and no ~/.ssh/config. The difference is the resolution. Usage:
#   bench/resolve.sh [N] [RUNS]      (DEPLOYR_BIN=path to use an already-built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-480}
runs=${2:-7}
bin=${DEPLOYR_BIN:-target/release/deployr}
[ -x "$bin" ] || cargo build --release --locked >&2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/aliases/.ssh/conf.d" "$dir/plain"
config="$dir/aliases/.ssh/config"
# A fleet's config as operators write it: defaults, one block per host (a tenth of them in
# Included files), a Match, a bastion, and Host * at the end.
{
  echo "Include conf.d/*.conf"
  echo "Match host 10.1.* user deploy"
  echo "  ServerAliveInterval 15"
  echo "Host bastion"
  echo "  HostName 192.0.2.1"
  echo "  User ops"
} > "$config"
for i in $(seq 1 "$n"); do
  block="Host web$i\n  HostName 10.1.$((i / 250)).$((i % 250 + 1))\n  User deploy\n  IdentityFile ~/.ssh/fleet_%%r\n  UserKnownHostsFile ~/.ssh/known_hosts_%%h\n"
  if [ $((i % 10)) -eq 0 ]; then
    printf "$block" >> "$dir/aliases/.ssh/conf.d/$((i % 7)).conf"
  else
    printf "$block" >> "$config"
  fi
done
printf 'Host *\n  Port 22\n  ConnectTimeout 10\n' >> "$config"
for kind in aliases plain; do
  file="$dir/$kind/deployfile.toml"
  printf '[app]\nname = "shop"\ndeploy_to = "/srv/shop"\n\n[tasks.t]\nrun = "true"\n' > "$file"
  for i in $(seq 1 "$n"); do
    if [ "$kind" = aliases ]; then address="web$i"; else address="10.1.$((i / 250)).$((i % 250 + 1))"; fi
    printf '\n[hosts.web%d]\naddress = "%s"\n' "$i" "$address" >> "$file"
  done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for kind in aliases plain; do
  for _ in $(seq 1 "$runs"); do
    start=$(date +%s.%N)
    HOME="$dir/$kind" "$bin" -f "$dir/$kind/deployfile.toml" -q --dry-run run t >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
  done | median > "$dir/$kind.median"
done
lines=$(cat "$config" "$dir"/aliases/.ssh/conf.d/*.conf | wc -l)
echo "N = $n hosts, ~/.ssh/config of $lines lines (+ /etc/ssh/ssh_config), $runs runs, binary $bin"
echo "aliases: $(cat "$dir/aliases.median") s   plain addresses, no config: $(cat "$dir/plain.median") s"
