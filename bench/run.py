#!/usr/bin/env python3
"""deployr's benchmark harness (issue 6). Called by bench/run.sh; Python 3 stdlib only.

Starts N real OpenSSH sshd processes on 127.0.0.1 the way tests/support/mod.rs does (random
ports, throwaway ed25519 host keys, one authorized client key, a private known_hosts, one
deploy_to per host), then runs each scenario REPS times, alternating deployr with its OpenSSH
baseline, and prints markdown: per variant the median wall time, min-max, the ratio
deployr/variant of the medians, whole-machine CPU seconds and processes created (/proc/stat
deltas), and the client's own CPU (wait4) and peak RSS (GNU time).

Scenarios: fanout, deploy, skew, latency, memory (the issue's 1-5), upload, output (issue 11:
200 MB printed by one step, deployr vs ssh over ControlMaster) and profile (perf and strace
evidence for what dominates; skipped with --quick).

    python3 bench/run.py [--quick] [--only fanout,deploy,...] [--json PATH] [--help]
    bench/run.sh --only output    (the output benchmark alone)
    python3 bench/run.py proxy --delay-ms 10 LISTEN:TARGET ...   (the latency proxy, internal)
"""

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SSHD_CANDIDATES = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
RTT = 0.020  # the latency proxy delays every chunk by RTT/2 each way


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def out(text=""):
    print(text, flush=True)


# ----------------------------------------------------------------------------- measuring


def machine_stat():
    """Whole-machine busy CPU seconds (user+nice+system+irq+softirq from /proc/stat, in
    USER_HZ ticks) and the number of processes created since boot (`processes`)."""
    cpu, forks = 0.0, 0
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                fields = line.split()
                user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
                cpu = (user + nice + system + irq + softirq) / USER_HZ
            elif line.startswith("processes "):
                forks = int(line.split()[1])
    return cpu, forks


class Measured:
    def __init__(self, wall, cpu, own_cpu, maxrss_kb, code, output, forks=0):
        self.wall = wall
        self.cpu = cpu
        self.own_cpu = own_cpu
        self.maxrss_kb = maxrss_kb
        self.code = code
        self.output = output
        self.forks = forks

    def as_dict(self):
        return {
            "wall": self.wall,
            "cpu": self.cpu,
            "own_cpu": self.own_cpu,
            "maxrss_kb": self.maxrss_kb,
            "forks": self.forks,
        }


TIME = shutil.which("time", path="/usr/bin:/bin")


def measure(argv, env, cwd, label, check=True):
    """Runs argv to completion: wall time, the whole machine's CPU delta (/proc/stat), and the
    process tree's own CPU from wait4 (children that were waited for included). Peak RSS comes
    from GNU time's %M when /usr/bin/time exists: a child forked from this Python starts with
    Python's RSS as its high-water mark, so wait4's ru_maxrss would never read below ~25 MiB;
    without GNU time, VmHWM is polled from /proc/PID/status instead."""
    with tempfile.TemporaryFile() as output, tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [TIME, "-q", "-f", "%M", "-o", rss.name] + list(argv) if TIME else argv
        cpu0, forks0 = machine_stat()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT,
        )
        hwm = 0
        if not TIME:
            hwm = poll_hwm(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        t1 = time.perf_counter()
        cpu1, forks1 = machine_stat()
        proc.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode(errors="replace")
        if TIME:
            try:
                hwm = int(rss.read().split()[-1])
            except (ValueError, IndexError):
                hwm = 0
    result = Measured(
        t1 - t0, cpu1 - cpu0, usage.ru_utime + usage.ru_stime, hwm, proc.returncode, text,
        forks1 - forks0,
    )
    if check and result.code != 0:
        raise SystemExit(
            f"bench: {label} failed with exit {result.code}\n$ {' '.join(map(str, argv))}\n"
            + text[-4000:]
        )
    return result


def poll_hwm(pid):
    """The largest VmHWM seen in /proc/PID/status until the process exits (a zombie has none)."""
    hwm = 0
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
                        break
                else:
                    return hwm
        except OSError:
            return hwm
        time.sleep(0.005)


def median(values):
    return statistics.median(values) if values else float("nan")


def fmt_s(value):
    return f"{value:.3f}"


def spread(values, unit=fmt_s):
    return f"{unit(min(values))}–{unit(max(values))}" if values else "-"


# ----------------------------------------------------------------------------- the fleet


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployr-bench", "-f", str(path)],
        check=True, stdout=subprocess.DEVNULL,
    )


def sshd_path():
    for candidate in SSHD_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    raise SystemExit(f"bench: sshd not found in {SSHD_CANDIDATES} (Debian: openssh-server)")


class Host:
    # False: sessions get an empty HOME of their own (sshd `SetEnv HOME=`), so that the login
    # user's ~/.bashrc, which bash sources for every command sshd runs, is not part of every
    # figure (on the machine this harness was written on, root's runs `pyenv init`: ~0.14 s of
    # CPU per remote command). --real-home keeps the account's real HOME.
    real_home = False

    def __init__(self, root, index, authorized_keys):
        self.name = f"web{index}"
        self.dir = root / "hosts" / self.name
        self.deploy_to = self.dir / "srv"
        self.base_to = self.dir / "base"  # the baseline deploy's own deploy_to
        self.deploy_to.mkdir(parents=True)
        (self.dir / "home").mkdir()
        (self.base_to / "releases").mkdir(parents=True)
        host_key = self.dir / "host_ed25519"
        keygen(host_key)
        public = (self.dir / "host_ed25519.pub").read_text().split()
        self.key = f"{public[0]} {public[1]}"
        self.port = 0
        self.proc = None
        self.start(host_key, authorized_keys)

    def start(self, host_key, authorized_keys):
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            port = free_port()
            config = self.dir / "sshd_config"
            config.write_text(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile {authorized_keys}\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n"
                "LogLevel VERBOSE\nMaxStartups 500\nMaxSessions 20\n"
                "Subsystem sftp internal-sftp\n"
                + ("" if Host.real_home else f"SetEnv HOME={self.dir / 'home'}\n")
            )
            with open(self.dir / "sshd.log", "wb") as logfile:
                proc = subprocess.Popen(
                    [sshd_path(), "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
                )
            Fleet.started(proc.pid)
            deadline = time.time() + 10
            while time.time() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    self.port = port
                    self.proc = proc
                    return
                except OSError:
                    time.sleep(0.01)
            proc.kill()
            proc.wait()
        raise SystemExit(
            f"bench: sshd for {self.name} did not start:\n"
            + (self.dir / "sshd.log").read_text(errors="replace")
        )

    def stop(self):
        if self.proc is None:
            return
        # The listener and the per-connection sshd processes it forked (ControlMaster
        # connections keep theirs alive): children first, by parent pid.
        subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)], check=False)
        self.proc.kill()
        self.proc.wait()
        self.proc = None


class Fleet:
    pidfile = None

    @classmethod
    def started(cls, pid):
        """Records an sshd pid so that bench/run.sh's trap can stop it if Python dies."""
        if cls.pidfile:
            with open(cls.pidfile, "a") as f:
                f.write(f"{pid}\n")

    def __init__(self, count, deployr):
        self.dir = Path(tempfile.mkdtemp(prefix="deployr-bench-"))
        self.deployr = deployr
        self.home = self.dir / "home"
        (self.home / ".ssh").mkdir(parents=True)
        self.key = self.dir / "client_ed25519"
        keygen(self.key)
        authorized = self.dir / "authorized_keys"
        shutil.copy(self.dir / "client_ed25519.pub", authorized)
        self.user = subprocess.run(["id", "-un"], capture_output=True, text=True,
                                   check=True).stdout.strip()
        # Short: unix socket paths are limited to 108 bytes.
        self.control_dir = Path(tempfile.mkdtemp(prefix="dcm-", dir="/tmp"))
        self.control_ports = set()
        self.proxies = []
        self.hosts = []
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            self.hosts = list(pool.map(lambda i: Host(self.dir, i, authorized),
                                       range(1, count + 1)))
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(
            "".join(f"[127.0.0.1]:{h.port} {h.key}\n" for h in self.hosts))
        self.source = self.make_source()
        self.env = dict(os.environ)
        self.env["HOME"] = str(self.home)
        for name in ("SSH_AUTH_SOCK", "DEPLOYR_FILE", "SSH_AGENT_PID"):
            self.env.pop(name, None)

    def make_source(self):
        """A small app to deploy: a git repo on branch main (the hosts share this filesystem)."""
        source = self.dir / "source"
        (source / "app").mkdir(parents=True)
        for i in range(20):
            (source / "app" / f"module{i}.py").write_text(
                "".join(f"def f{j}():\n    return {j}\n" for j in range(50)))
        (source / "VERSION").write_text("1\n")
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
               "-C", str(source)]
        subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
        subprocess.run(git + ["add", "."], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "bench app"], check=True)
        return source

    # --- deployfiles

    def ssh_section(self, concurrency, known_hosts=None):
        return (
            f'[ssh]\nuser = "{self.user}"\nidentity_file = "{self.key}"\n'
            f'known_hosts_file = "{known_hosts or self.known_hosts}"\n'
            f'connect_timeout = "60s"\nconcurrency = {concurrency}\n'
        )

    def deployfile(self, name, count, body, ports=None, known_hosts=None):
        hosts = self.hosts[:count]
        ports = ports or [h.port for h in hosts]
        text = f'[app]\nname = "bench"\ndeploy_to = "/nonexistent"\n\n'
        text += self.ssh_section(count, known_hosts)
        for host, port in zip(hosts, ports):
            text += (f'\n[hosts.{host.name}]\naddress = "127.0.0.1"\nport = {port}\n'
                     f'deploy_to = "{host.deploy_to}"\n')
        text += "\n" + body
        path = self.dir / name
        path.write_text(text)
        return path

    def fanout_file(self, count, ports=None, known_hosts=None, tag=""):
        return self.deployfile(f"fanout{tag}-{count}.toml", count,
                               '[tasks.t]\nrun = "true"\n', ports, known_hosts)

    def deploy_file(self, count, ports=None, known_hosts=None, tag=""):
        body = f'[source]\nrepo = "{self.source}"\nref = "main"\n\n'
        for i in range(1, 6):
            body += f'[[prepare]]\nname = "prep{i}"\nrun = "true"\n\n'
        body += '[[activate]]\nname = "migrate"\nrun = "true"\nonce = true\n\n'
        body += '[[activate]]\nswitch = true\n\n'
        for i in range(1, 3):
            body += f'[[activate]]\nname = "after{i}"\nrun = "true"\n\n'
        return self.deployfile(f"deploy{tag}-{count}.toml", count, body, ports, known_hosts)

    def deployr_argv(self, file, *args, quiet=True):
        return [str(self.deployr)] + (["-q"] if quiet else []) + ["-f", str(file)] + list(args)

    # --- pyinfra (issue 15): installed from PyPI by bench/run.sh when it can be

    pyinfra = None

    def pyinfra_argv(self, count):
        """`pyinfra -y --parallel N INVENTORY exec -- true`, strict host keys as for ssh."""
        inventory = self.dir / f"pyinfra-{count}.py"
        lines = ["hosts = ["]
        for host in self.hosts[:count]:
            data = {"ssh_hostname": "127.0.0.1", "ssh_port": host.port, "ssh_user": self.user,
                    "ssh_key": str(self.key), "ssh_known_hosts_file": str(self.known_hosts),
                    "ssh_strict_host_key_checking": "yes"}
            lines.append(f"    ({host.name!r}, {data!r}),")
        lines.append("]")
        inventory.write_text("\n".join(lines) + "\n")
        return [str(self.pyinfra), "-y", "--parallel", str(count), str(inventory),
                "exec", "--", "true"]

    # --- OpenSSH baselines

    def ssh_base(self, port, known_hosts=None, control=False):
        argv = ["ssh", "-o", "KexAlgorithms=curve25519-sha256", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
                "-i", str(self.key)]
        if control:
            argv += ["-o", f"ControlPath={self.control_dir}/%p", "-o", "ControlMaster=auto",
                     "-o", "ControlPersist=60"]
        return argv + ["-p", str(port), f"{self.user}@127.0.0.1"]

    def xargs_argv(self, ports, known_hosts=None, control=False):
        """`printf PORTS | xargs -P N ssh ... -p PORT user@127.0.0.1 true` as one bash process."""
        ssh = self.ssh_base("{}", known_hosts, control)
        quoted = " ".join(shquote(a) for a in ssh)
        return ["bash", "-c",
                f"printf '%s\\n' {' '.join(map(str, ports))} | "
                f"xargs -P {len(ports)} -I{{}} {quoted} true"]

    def open_masters(self, ports, known_hosts=None):
        """Opens (or reuses) one ControlMaster per port, before any timing."""
        argv = self.xargs_argv(ports, known_hosts, control=True)
        measure(argv, self.env, self.dir, "opening ControlMaster connections")
        self.control_ports.update(ports)

    def close_masters(self):
        for port in sorted(self.control_ports):
            subprocess.run(
                ["ssh", "-o", f"ControlPath={self.control_dir}/%p", "-O", "exit",
                 "-p", str(port), f"{self.user}@127.0.0.1"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            )
        self.control_ports.clear()

    def next_release(self):
        """The baseline's release names sort in the order they were made (for its pruning)."""
        self.releases = getattr(self, "releases", 0) + 1
        return f"r{self.releases:06d}"

    def baseline_deploy_script(self, count, release, ports=None, known_hosts=None):
        """The deploy's commands as sequential ssh calls per host over ControlMaster, hosts in
        parallel: release dir + git archive | tar, 5 prepare steps, migrate (first host only),
        ln -s + mv -T, 2 after-switch steps (the last one also prunes to 5 releases)."""
        hosts = self.hosts[:count]
        ports = ports or [h.port for h in hosts]
        lines = ["#!/bin/bash", "pids=()"]
        for index, (host, port) in enumerate(zip(hosts, ports)):
            ssh = " ".join(shquote(a) for a in self.ssh_base(port, known_hosts, control=True))
            base = host.base_to
            rel = f"{base}/releases/{release}"
            cmds = [f"mkdir -p {rel} && git -C {self.source} archive --format=tar main "
                    f"| tar -x -C {rel}"]
            cmds += [f"cd {rel} && true"] * 5
            if index == 0:
                cmds.append(f"cd {rel} && true")  # migrate, once
            cmds.append(f"cd {base} && ln -s {rel} releases/.current.tmp && "
                        f"mv -T releases/.current.tmp current")
            cmds.append(f"cd {base}/current && true")
            cmds.append(f"cd {base}/current && true && cd {base}/releases && "
                        f"ls | grep '^r' | sort | head -n -5 | xargs -r rm -rf")
            chain = " && ".join(f"{ssh} {shquote(c)}" for c in cmds)
            lines.append(f"( {chain} ) & pids+=($!)")
        lines.append("fail=0; for p in \"${pids[@]}\"; do wait $p || fail=1; done; exit $fail")
        path = self.dir / f"baseline-deploy-{count}{'-proxy' if known_hosts else ''}.sh"
        path.write_text("\n".join(lines) + "\n")
        return ["bash", str(path)]

    # --- latency proxy

    def start_proxy(self, count, delay_ms):
        """One listener per host, each chunk delayed delay_ms each way. Returns (ports,
        known_hosts file) to reach the first `count` hosts through it."""
        hosts = self.hosts[:count]
        ports = [free_port() for _ in hosts]
        pairs = [f"{p}:{h.port}" for p, h in zip(ports, hosts)]
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "proxy", "--delay-ms",
             str(delay_ms)] + pairs,
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        Fleet.started(proc.pid)
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("bench: the latency proxy did not start")
        self.proxies.append(proc)
        known = self.dir / f"known_hosts_proxy_{delay_ms}"
        known.write_text("".join(f"[127.0.0.1]:{p} {h.key}\n" for p, h in zip(ports, hosts)))
        return proc, ports, known

    def stop_proxy(self, proc):
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.proxies.remove(proc)

    def stop(self, keep=False):
        self.close_masters()
        for proc in list(self.proxies):
            self.stop_proxy(proc)
        for host in self.hosts:
            host.stop()
        if Fleet.pidfile:
            # Everything recorded is stopped: run.sh's trap must not touch these pids again
            # (they may be reused by then).
            open(Fleet.pidfile, "w").close()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.control_dir, ignore_errors=True)


def shquote(text):
    text = str(text)
    if re.fullmatch(r"[A-Za-z0-9_./:=@%{}+-]+", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


# ----------------------------------------------------------------------------- deployr output


STARTED = re.compile(r"^\S+ (\S+) (\S+) - started$")
ACTIVATED = re.compile(
    r"live on (\d+) hosts?: activation window ([\d.]+)s, switch skew ([\d.]+)ms")


def remote_commands(output):
    """Per step name: how many hosts it started on, in order of first appearance, from
    deployr's normal-verbosity output (one `started` line per remote command)."""
    steps = {}
    hosts = set()
    for line in output.splitlines():
        m = STARTED.match(line)
        if m:
            hosts.add(m.group(1))
            steps[m.group(2)] = steps.get(m.group(2), 0) + 1
    return steps, len(hosts)


def step_table(output):
    """The final table of step durations per host: {step: [seconds per host]}."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("host "):
            header = line.split()
            durations = {step: [] for step in header[1:]}
            for row in lines[i + 1:]:
                cells = row.split()
                if len(cells) != len(header) or not cells[0].startswith("web"):
                    break
                for step, cell in zip(header[1:], cells[1:]):
                    if cell.endswith("s"):
                        durations[step].append(float(cell[:-1]))
            return durations
    return {}


# ----------------------------------------------------------------------------- scenarios


class Bench:
    watch_pause = 0.0
    # pyinfra (one Python process, gevent) is slow enough that N = 1,000 would take minutes.
    pyinfra_max = 200
    # A ControlMaster per host holds an ssh and two sshd processes: at N = 1,000 that is
    # gigabytes of memory on a shared machine, for a variant issue 15 does not ask for.
    control_max = 200

    def __init__(self, fleet, reps, results):
        self.fleet = fleet
        self.reps = reps
        self.results = results

    def alternate(self, key, variants):
        """variants: [(label, argv-or-callable)], run in turn `reps` times; returns
        {label: [Measured]} and stores the numbers under results[key]."""
        runs = {label: [] for label, _ in variants}
        for rep in range(self.reps):
            for label, argv in variants:
                if callable(argv):
                    argv = argv(rep)
                runs[label].append(measure(argv, self.fleet.env, self.fleet.dir,
                                           f"{key} {label} (run {rep + 1})"))
        self.results[key] = {label: [m.as_dict() for m in ms] for label, ms in runs.items()}
        return runs

    def table(self, title, runs, per_host):
        out(f"\n#### {title}\n")
        out("| variant | median s | min–max s | deployr/variant | machine CPU s "
            "| machine CPU ms/host | client CPU s | processes created/host "
            "| client peak RSS MiB |")
        out("|---|---|---|---|---|---|---|---|---|")
        deployr = median([m.wall for m in runs["deployr"]])
        for label, ms in runs.items():
            walls = [m.wall for m in ms]
            ratio = "–" if label == "deployr" else f"{deployr / median(walls):.2f}"
            cpu = median([m.cpu for m in ms])
            out(f"| {label} | {fmt_s(median(walls))} | {spread(walls)} | {ratio} | {cpu:.2f} | "
                f"{1000 * cpu / per_host:.1f} | {median([m.own_cpu for m in ms]):.2f} | "
                f"{median([m.forks for m in ms]) / per_host:.1f} | "
                f"{max(m.maxrss_kb for m in ms) / 1024:.1f} |")

    # 1. fan-out

    def fanout(self, sizes):
        out("\n### 1. fan-out: `deployr run t` (`true`) vs `xargs -P N ssh ... true`\n")
        for count in sizes:
            fleet = self.fleet
            hosts = fleet.hosts[:count]
            ports = [h.port for h in hosts]
            file = fleet.fanout_file(count)
            variants = [
                ("deployr", fleet.deployr_argv(file, "run", "t")),
                ("ssh fresh", fleet.xargs_argv(ports)),
            ]
            if count <= self.control_max:
                fleet.open_masters(ports)
                variants.append(("ssh ControlMaster", fleet.xargs_argv(ports, control=True)))
            if fleet.pyinfra and count <= self.pyinfra_max:
                variants.append(("pyinfra", fleet.pyinfra_argv(count)))
            runs = self.alternate(f"fanout-{count}", variants)
            self.table(f"N = {count}", runs, per_host=count)
            d = median([m.wall for m in runs["deployr"]])
            f = median([m.wall for m in runs["ssh fresh"]])
            target = "met" if d <= 0.6 * f else "MISSED"
            # Both clients make the servers do the same work; on a CPU-bound machine wall time
            # follows CPU, so no client can go below (server-side CPU / ssh-fresh CPU).
            fresh_cpu = median([m.cpu for m in runs["ssh fresh"]])
            server = fresh_cpu - median([m.own_cpu for m in runs["ssh fresh"]])
            out(f"\nserver-side CPU (ssh fresh machine CPU − its clients' CPU) = "
                f"{1000 * server / count:.1f} ms/host, i.e. {server / fresh_cpu:.2f} of the "
                "baseline's CPU: the floor of the ratio for any client while the machine is "
                "CPU-bound")
            out(f"ratio deployr/ssh-fresh = {d / f:.2f} (target ≤ 0.60 at every N: {target}); "
                f"deployr CPU {1000 * median([m.own_cpu for m in runs['deployr']]) / count:.1f} "
                f"ms/host, ssh clients {1000 * median([m.own_cpu for m in runs['ssh fresh']]) / count:.1f}"
                " ms/host")

    # 2. deploy

    def deploy(self, count):
        fleet = self.fleet
        out(f"\n### 2. deploy, N = {count}: `deployr deploy` (10 steps) vs sequential ssh "
            "calls per host over ControlMaster, hosts in parallel\n")
        file = fleet.deploy_file(count)
        ports = [h.port for h in fleet.hosts[:count]]
        fleet.open_masters(ports)
        # Warm up: the first deploy clones every host's mirror; every timed one only fetches.
        measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir, "warm-up deploy")
        trace = measure(fleet.deployr_argv(file, "deploy", quiet=False), fleet.env, fleet.dir,
                        "traced deploy")
        runs = self.alternate(f"deploy-{count}", [
            ("deployr", fleet.deployr_argv(file, "deploy")),
            ("ssh ControlMaster", lambda rep: fleet.baseline_deploy_script(
                count, fleet.next_release(), ports)),
        ])
        self.table(f"N = {count}", runs, per_host=count)
        d = median([m.wall for m in runs["deployr"]])
        b = median([m.wall for m in runs["ssh ControlMaster"]])
        out(f"\nratio deployr/baseline = {d / b:.2f} (target ≤ 0.60: "
            f"{'met' if d <= 0.6 * b else 'MISSED'})")
        self.explain_deploy(trace.output, count, f"deploy-{count}")

    def explain_deploy(self, output, count, key):
        steps, hosts = remote_commands(output)
        durations = step_table(output)
        own = ["lock", "check", "resolve", "code", "prepared", "state", "switch", "finish",
               "unlock"]
        out(f"\nRemote commands in one traced `deployr deploy` (normal verbosity), {hosts} hosts;"
            " each is one script sent to the host's shell, and every step waits for all hosts (barrier):\n")
        out("| step | hosts | kind | slowest host s | median host s |")
        out("|---|---|---|---|---|")
        total_slowest = 0.0
        for step, n in steps.items():
            ds = durations.get(step, [])
            slowest = max(ds) if ds else float("nan")
            total_slowest += slowest if ds else 0
            kind = "deployr bookkeeping" if step in own else "deployfile step"
            out(f"| {step} | {n} | {kind} | {fmt_s(slowest)} | {fmt_s(median(ds))} |")
        per_host = sum(steps.values()) / max(hosts, 1)
        own_per_host = sum(n for s, n in steps.items() if s in own) / max(hosts, 1)
        own_time = sum(max(durations.get(st, [0]) or [0]) for st in steps if st in own)
        out(f"\n{len(steps)} sequential steps; {per_host:.2f} remote commands per host, "
            f"{own_per_host:.2f} of them deployr's own; sum of slowest-host step times "
            f"{total_slowest:.2f} s, of which deployr's own steps {own_time:.2f} s and the "
            f"deployfile's steps {total_slowest - own_time:.2f} s")
        self.results[key + "-trace"] = {"steps": steps, "hosts": hosts,
                                        "durations": durations}

    # 3. switch skew

    def skew(self, sizes):
        fleet = self.fleet
        out("\n### 3. switch skew observed from outside: a thread polls readlink(current) "
            "of every host during `deployr activate`\n")
        out("| N | outside skew median ms | min–max ms | deployr's own figure median ms "
            "| activation window median s | watcher loop median/max ms "
            "| CPUs busy in the window (watcher excluded) | processes created in the window per host "
            "| target | met |")
        out("|---|---|---|---|---|---|---|---|---|---|")
        for count in sizes:
            file = fleet.deploy_file(count)
            measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir, "warm-up deploy")
            outside, reported, windows, loops, loop_max = [], [], [], [], []
            busy, spawned = [], []
            for rep in range(self.reps):
                measure(fleet.deployr_argv(file, "prepare"), fleet.env, fleet.dir, "prepare")
                watcher = Watcher([h.deploy_to / "current" for h in fleet.hosts[:count]],
                                  self.watch_pause)
                watcher.start()
                run = measure(fleet.deployr_argv(file, "activate", quiet=False), fleet.env,
                              fleet.dir, f"activate (run {rep + 1})")
                watcher.finish()
                if None in watcher.changed:
                    raise SystemExit("bench: the watcher missed a host's switch")
                window = max(watcher.changed) - min(watcher.changed)
                outside.append(1000 * window)
                if watcher.first_stat and watcher.last_stat and window > 0:
                    # CPUs busy with anything but the watcher itself
                    busy.append((watcher.last_stat[0] - watcher.first_stat[0]
                                 - (watcher.last_stat[2] - watcher.first_stat[2])) / window)
                    spawned.append((watcher.last_stat[1] - watcher.first_stat[1]) / count)
                loops.append(1000 * watcher.loop_median())
                loop_max.append(1000 * watcher.max_gap)
                m = ACTIVATED.search(run.output)
                if not m:
                    raise SystemExit("bench: deployr printed no activation summary:\n"
                                     + run.output[-2000:])
                windows.append(float(m.group(2)))
                reported.append(float(m.group(3)))
            target = 5 if count <= 100 else 20
            met = "met" if median(outside) <= target else "MISSED"
            out(f"| {count} | {median(outside):.1f} | {min(outside):.1f}–{max(outside):.1f} | "
                f"{median(reported):.1f} | {median(windows):.2f} | {median(loops):.2f}/"
                f"{max(loop_max):.2f} | {median(busy):.1f} | {median(spawned):.1f} | "
                f"≤ {target} ms | {met} |")
            self.results[f"skew-{count}"] = {"outside_ms": outside, "deployr_ms": reported,
                                            "window_s": windows, "loop_ms": loops,
                                            "cpus_busy": busy, "processes_per_host": spawned}

    # 4. latency

    def latency(self, fanout_sizes, deploy_sizes):
        fleet = self.fleet
        out(f"\n### 4. latency: through a TCP proxy that delays every chunk "
            f"{1000 * RTT / 2:.0f} ms each way (RTT {1000 * RTT:.0f} ms)\n")
        out("Round trips on the critical path = (median through the 10 ms proxy − median "
            "through a 0 ms proxy) / RTT. Both proxies are the same Python process, so its own "
            "cost cancels out; at N = 1 the count is exact, at larger N waiting for the CPU "
            "hides part of the latency. Direct = no proxy (scenarios 1 and 2).\n")
        out("| scenario | variant | direct median s | 0 ms proxy median s | 20 ms RTT median s "
            "| min–max s (20 ms) | deployr/variant (20 ms) | round trips |")
        out("|---|---|---|---|---|---|---|---|")
        largest = max(fanout_sizes + deploy_sizes)
        proxies = {d: fleet.start_proxy(largest, d) for d in (0, 10)}

        def split(runs):
            """{"label@delay": runs} -> {delay: {label: runs}}"""
            by_delay = {d: {} for d in proxies}
            for key, ms in runs.items():
                label, delay = key.rsplit("@", 1)
                by_delay[int(delay)][label] = ms
            return by_delay

        try:
            for count in fanout_sizes:
                variants = {}
                for delay, (_, ports, known) in proxies.items():
                    file = fleet.fanout_file(count, ports[:count], known, tag=f"-proxy{delay}")
                    fleet.open_masters(ports[:count], known)
                    variants[delay] = [
                        ("deployr", fleet.deployr_argv(file, "run", "t")),
                        ("ssh fresh", fleet.xargs_argv(ports[:count], known)),
                        ("ssh ControlMaster", fleet.xargs_argv(ports[:count], known,
                                                               control=True)),
                    ]
                # Each variant through both proxies back to back, so that the difference
                # (the latency's share) is not swamped by the machine's load drifting.
                order = [(f"{label}@{delay}", argv) for i in range(3)
                         for delay in proxies for label, argv in [variants[delay][i]]]
                runs = self.alternate(f"latency-fanout-{count}", order)
                self.latency_rows(f"fan-out N={count}", split(runs), f"fanout-{count}")
            for count in deploy_sizes:
                variants = {}
                for delay, (_, ports, known) in proxies.items():
                    file = fleet.deploy_file(count, ports[:count], known, tag=f"-proxy{delay}")
                    fleet.open_masters(ports[:count], known)
                    measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir,
                            "warm-up deploy")
                    variants[delay] = [
                        ("deployr", fleet.deployr_argv(file, "deploy")),
                        ("ssh ControlMaster",
                         lambda rep, ports=ports, known=known, count=count:
                            fleet.baseline_deploy_script(
                                count, fleet.next_release(), ports[:count], known)),
                    ]
                order = [(f"{label}@{delay}", argv) for i in range(2)
                         for delay in proxies for label, argv in [variants[delay][i]]]
                runs = self.alternate(f"latency-deploy-{count}", order)
                self.latency_rows(f"deploy N={count}", split(runs), f"deploy-{count}")
        finally:
            fleet.close_masters()
            for proc, _, _ in proxies.values():
                fleet.stop_proxy(proc)
        for count in deploy_sizes:
            self.latency_target(count)

    def latency_rows(self, scenario, variants, direct_key):
        direct = self.results.get(direct_key, {})
        deployr20 = median([m.wall for m in variants[10]["deployr"]])
        rts = {}
        for label in variants[10]:
            w0 = median([m.wall for m in variants[0][label]])
            w10 = [m.wall for m in variants[10][label]]
            rt = (median(w10) - w0) / RTT
            rts[label] = rt
            d = direct.get(label)
            dmed = fmt_s(median([m["wall"] for m in d])) if d else "–"
            ratio = "–" if label == "deployr" else f"{deployr20 / median(w10):.2f}"
            out(f"| {scenario} | {label} | {dmed} | {fmt_s(w0)} | {fmt_s(median(w10))} | "
                f"{spread(w10)} | {ratio} | {rt:.1f} |")
        self.results[f"latency-{scenario}-round-trips"] = rts

    # What the protocol requires for the deploy, every host in parallel, connections opened
    # once: TCP 1, version + KEXINIT 1, ECDH + NEWKEYS 1, service request 1, publickey auth with
    # the signature sent at once 1 = 5 to be connected; the first channel open 1 (later ones
    # opened ahead of time, pipelined); one exec-to-exit per dependent step: code, 5 prepare,
    # migrate, switch, 2 after-switch = 10; deployr's bookkeeping batched into 2 more (lock+state
    # at the start, finish+unlock at the end; the prepared marker rides on the last prepare
    # step). Total 18.
    REQUIRED_DEPLOY_ROUND_TRIPS = 5 + 1 + 10 + 2

    def latency_target(self, count):
        rts = self.results.get(f"latency-deploy N={count}-round-trips", {})
        zero = self.results.get(f"latency-deploy-{count}", {}).get("deployr@0")
        ten = self.results.get(f"latency-deploy-{count}", {}).get("deployr@10")
        if not (rts and zero and ten):
            return
        required = self.REQUIRED_DEPLOY_ROUND_TRIPS
        w0 = median([m["wall"] for m in zero])
        w10 = median([m["wall"] for m in ten])
        bound = 1.1 * (required * RTT + w0)
        out(f"\ndeploy N = {count} with 20 ms RTT: deployr {w10:.3f} s; target 1.1 × ({required} "
            f"round trips × {RTT * 1000:.0f} ms + {w0:.3f} s at 0 ms) = {bound:.3f} s: "
            f"{'met' if w10 <= bound else 'MISSED'}; deployr left "
            f"{rts.get('deployr', float('nan')):.1f} round trips on the critical path")

    # 5. memory

    def memory(self, sizes, deploy_reps):
        fleet = self.fleet
        out("\n### 5. memory and CPU per host: deployr's peak RSS (GNU time %M, i.e. ru_maxrss; "
            f"VmHWM polling without it) at N = {', '.join(map(str, sizes))}\n")
        out("| command | N | runs | peak RSS MiB (max) | wall median s | deployr CPU s median "
            "| deployr CPU ms/host | machine CPU ms/host | target | met |")
        out("|---|---|---|---|---|---|---|---|---|---|")
        for count in sizes:
            rows = []
            fan = self.results.get(f"fanout-{count}", {}).get("deployr")
            if not fan:
                file = fleet.fanout_file(count)
                fan = [measure(fleet.deployr_argv(file, "run", "t"), fleet.env, fleet.dir,
                               f"run t N={count}").as_dict() for _ in range(self.reps)]
                self.results[f"memory-run-{count}"] = fan
            rows.append(("run t", fan))
            file = fleet.deploy_file(count)
            measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir, "warm-up deploy")
            dep = [measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir,
                           f"deploy N={count}").as_dict() for _ in range(deploy_reps)]
            rows.append(("deploy", dep))
            self.results[f"memory-deploy-{count}"] = dep
            # Issue 6: 64 MiB at N = 200; issue 15: 96 MiB at N = 1,000.
            limit = 96 if count > 200 else 64
            for name, ms in rows:
                rss = max(m["maxrss_kb"] for m in ms) / 1024
                own = median([m["own_cpu"] for m in ms])
                out(f"| {name} | {count} | {len(ms)} | {rss:.1f} | "
                    f"{median([m['wall'] for m in ms]):.3f} | {own:.2f} | "
                    f"{1000 * own / count:.1f} | "
                    f"{1000 * median([m['cpu'] for m in ms]) / count:.1f} | "
                    f"{'≤ %d MiB' % limit if count >= 200 else '–'} | "
                    f"{('met' if rss <= limit else 'MISSED') if count >= 200 else '–'} |")
        # CPU per host across N: the fan-out runs and the deploys at each N measured.
        out("\nCPU per host across N (medians; deployr's own CPU from wait4, machine CPU from "
            "/proc/stat):\n")
        out("| command | N | deployr CPU ms/host | machine CPU ms/host |")
        out("|---|---|---|---|")
        for key in sorted(self.results, key=natural):
            m = re.fullmatch(r"(fanout|deploy|memory-run|memory-deploy)-(\d+)", key)
            if not m:
                continue
            data = self.results[key]
            ms = data if isinstance(data, list) else data.get("deployr", [])
            if not ms:
                continue
            n = int(m.group(2))
            name = {"fanout": "run t", "memory-run": "run t", "deploy": "deploy (scenario 2)",
                    "memory-deploy": "deploy (scenario 5)"}[m.group(1)]
            out(f"| {name} | {n} | {1000 * median([x['own_cpu'] for x in ms]) / n:.1f} | "
                f"{1000 * median([x['cpu'] for x in ms]) / n:.1f} |")


    # uploads (issue 7): one artifact to N hosts over SFTP

    def upload(self, count, mib):
        fleet = self.fleet
        hosts = fleet.hosts[:count]
        out(f"\n### Uploads: `deployr prepare` of a {mib} MiB artifact to N = {count} hosts vs "
            "`xargs -P N scp` of the same file\n")
        blob = fleet.dir / "blob"
        with open(blob, "wb") as f:
            f.write(os.urandom(mib << 20))
        body = (f'[source]\nrepo = "{fleet.source}"\nref = "main"\nstrategy = "upload"\n'
                f'build = "mkdir dist && cp {blob} dist/blob"\nartifact = "dist"\n')
        file = fleet.deployfile(f"upload-{count}.toml", count, body)
        # Build and pack once; every timed run then finds the build cached here, and no
        # host holding the artifact or a prepared release, so it sends the whole file to all.
        measure(fleet.deployr_argv(file, "prepare"), fleet.env, fleet.dir, "warm-up upload")
        artifact = next((fleet.home / ".cache" / "deployr" / "bench" / "artifacts").glob("*.tar.gz"))
        reset = " ".join(
            f"{shquote(str(h.deploy_to))}/.deployr/artifacts {shquote(str(h.deploy_to))}/.deployr/prepared "
            f"{shquote(str(h.deploy_to))}/releases {shquote(str(h.dir))}/scp-copy" for h in hosts)
        deployr = " ".join(shquote(a) for a in fleet.deployr_argv(file, "--no-progress", "prepare",
                                                                   quiet=False))
        scp = " ".join(shquote(a) for a in [
            "scp", "-q", "-o", "KexAlgorithms=curve25519-sha256", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={fleet.known_hosts}", "-i", str(fleet.key)])
        pairs = " ".join(f"{h.port} {shquote(str(h.dir))}/scp-copy" for h in hosts)
        runs = self.alternate(f"upload-{count}", [
            ("deployr", ["bash", "-c", f"rm -rf {reset}; exec {deployr}"]),
            ("scp fresh", ["bash", "-c",
                           f"rm -rf {reset}; printf '%s %s\\n' {pairs} | xargs -P {count} -n 2 "
                           f"sh -c '{scp} -P \"$0\" {shquote(str(artifact))} "
                           f"{fleet.user}@127.0.0.1:\"$1\"'"]),
        ])
        self.table(f"N = {count}, {mib} MiB (packed {artifact.stat().st_size / 2**20:.1f} MiB)",
                   runs, per_host=count)
        rates = []
        for m in runs["deployr"]:
            rates += [float(x) for x in re.findall(r" upload \| sent [\d.]+ MiB in [\d.]+s \(([\d.]+) MiB/s\)",
                                                   m.output)]
        size = artifact.stat().st_size * count / 2**20
        d = median([m.wall for m in runs["deployr"]])
        b = median([m.wall for m in runs["scp fresh"]])
        out(f"\naggregate: deployr {size / d:.0f} MiB/s over the whole prepare, scp {size / b:.0f} MiB/s; "
            f"per host upload step median {median(rates) if rates else 0:.1f} MiB/s "
            f"(min {min(rates) if rates else 0:.1f}, max {max(rates) if rates else 0:.1f}); "
            f"ratio deployr/scp = {d / b:.2f}")
        self.results[f"upload-{count}-rates"] = rates

    # output (issue 11): one step printing a lot to stdout on one host

    def output(self, megabytes):
        """`deployr --no-progress run big` (a step printing MEGABYTES MB of ordinary lines) vs
        `ssh host 'the same command'` over a ControlMaster opened before any timing, both with
        stdout to /dev/null: throughput (bytes the step printed / wall time) and deployr's
        peak RSS (issue 11's targets: ≥ 0.5 × OpenSSH's throughput, ≤ 64 MiB)."""
        fleet = self.fleet
        host = fleet.hosts[0]
        size = megabytes * 1000 * 1000
        command = ("yes 'an ordinary line of output, sixty-odd bytes long, again and again' "
                   f"| head -c {size}")
        out(f"\n### Output: a step printing {megabytes} MB of lines on one host, "
            "`deployr --no-progress run big` vs `ssh host 'the same command'` over "
            "ControlMaster, stdout to /dev/null\n")
        file = fleet.deployfile("output.toml", 1, f'[tasks.big]\nrun = "{command}"\n')
        deployr = " ".join(shquote(a) for a in fleet.deployr_argv(
            file, "--no-progress", "run", "big", quiet=False))
        ssh = " ".join(shquote(a) for a in fleet.ssh_base(host.port, control=True))
        fleet.open_masters([host.port])
        runs = self.alternate(f"output-{megabytes}", [
            ("deployr", ["bash", "-c", f"exec {deployr} >/dev/null"]),
            ("ssh ControlMaster", ["bash", "-c", f"exec {ssh} {shquote(command)} >/dev/null"]),
        ])
        self.table(f"{megabytes} MB", runs, per_host=1)
        d = median([m.wall for m in runs["deployr"]])
        b = median([m.wall for m in runs["ssh ControlMaster"]])
        rss = max(m.maxrss_kb for m in runs["deployr"]) / 1024
        ratio = b / d
        out(f"\nthroughput: deployr {size / d / 1e6:.0f} MB/s, ssh ControlMaster "
            f"{size / b / 1e6:.0f} MB/s (medians of {self.reps}); ratio deployr/ssh = "
            f"{ratio:.2f} (target ≥ 0.50: {'met' if ratio >= 0.5 else 'MISSED'}); deployr peak "
            f"RSS {rss:.1f} MiB, the largest of the runs (target ≤ 64 MiB: "
            f"{'met' if rss <= 64 else 'MISSED'})")
        self.results[f"output-{megabytes}-summary"] = {
            "deployr_mb_s": size / d / 1e6, "ssh_mb_s": size / b / 1e6, "ratio": ratio,
            "deployr_peak_rss_mib": rss,
        }

    # profiles (not one of the scenarios; evidence for "what dominates")

    def profile(self, deploy_count, fanout_count):
        fleet = self.fleet
        perf = shutil.which("perf")
        out("\n### Profiles (perf)\n")
        if not perf:
            out("perf is not installed; skipped (Debian: linux-perf).")
            return
        data = fleet.dir / "perf.data"

        def report(argv, sort, lines, extra=()):
            text = subprocess.run(
                [perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort,
                 "-q", *extra], capture_output=True, text=True, cwd=fleet.dir).stdout
            rows = [r for r in text.splitlines() if r.strip()][:lines]
            out("```")
            out("\n".join(r.rstrip() for r in rows))
            out("```")

        file = fleet.deploy_file(deploy_count)
        ports = [h.port for h in fleet.hosts[:deploy_count]]
        fleet.open_masters(ports)
        measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir, "warm-up deploy")
        for label, argv in [
            ("`deployr deploy`", fleet.deployr_argv(file, "deploy")),
            ("the ssh ControlMaster deploy baseline",
             fleet.baseline_deploy_script(deploy_count, fleet.next_release(), ports)),
        ]:
            m = measure([perf, "record", "-a", "-q", "-F", "999", "-o", str(data), "--"]
                        + argv, fleet.env, fleet.dir, f"perf record {label}", check=False)
            if m.code != 0:
                out(f"`perf record -a` failed (exit {m.code}); profiles skipped:\n")
                out("```\n" + m.output[-1000:].strip() + "\n```")
                return
            out(f"Whole machine during one {label} at N = {deploy_count} (perf record -a; "
                f"{m.wall:.2f} s under perf), samples by command name "
                "(deployr's threads are `tokio-runtime-w`; anything else running on the "
                "machine shows up too):\n")
            report(argv, "comm", 16)
            out("")
        self.profile_switch(perf, data, report, self.skew_profile_size)
        file = fleet.fanout_file(fanout_count)
        m = measure([perf, "record", "-q", "-F", "4999", "-o", str(data), "--"]
                    + fleet.deployr_argv(file, "run", "t"), fleet.env, fleet.dir,
                    "perf record deployr")
        out(f"deployr's own CPU in `deployr run t` at N = {fanout_count} (perf record of the "
            f"deployr process only, {m.own_cpu:.2f} s CPU), top symbols:\n")
        report(None, "dso,sym", 25)
        self.trace_processes(deploy_count)

    skew_profile_size = 100

    def profile_switch(self, perf, data, report, count):
        """perf record -a (timestamps on CLOCK_MONOTONIC, the watcher's clock) during one
        `deployr activate`, reported for the switch window only: what the machine does
        between the first and the last host's `current` changing."""
        fleet = self.fleet
        file = fleet.deploy_file(count)
        measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir, "warm-up deploy")
        measure(fleet.deployr_argv(file, "prepare"), fleet.env, fleet.dir, "prepare")
        watcher = Watcher([h.deploy_to / "current" for h in fleet.hosts[:count]],
                          self.watch_pause)
        watcher.start()
        measure([perf, "record", "-a", "-q", "-k", "CLOCK_MONOTONIC", "-F", "4999", "-o",
                 str(data), "--"] + fleet.deployr_argv(file, "activate"), fleet.env, fleet.dir,
                "perf record activate", check=False)
        watcher.finish()
        if None in watcher.changed:
            out("(the watcher missed a switch; no switch-window profile)")
            return
        start, end = min(watcher.changed), max(watcher.changed)
        out(f"Whole machine during the switch window of one `deployr activate` at N = {count} "
            f"(perf record -a at 4999 Hz, samples between the first and the last host's "
            f"`current` changing, {1000 * (end - start):.1f} ms here), by command name "
            "(`python3` is the watcher):\n")
        report(None, "comm", 12, ("--time", f"{start:.6f},{end:.6f}"))
        out("")

    def trace_processes(self, count):
        """strace -f of the first host's sshd during one `deployr deploy`: the programs each
        remote command starts, by step (every step is a fresh session: sshd forks, runs the
        login shell with -c SCRIPT, and the script starts its own programs)."""
        fleet = self.fleet
        strace = shutil.which("strace")
        out(f"\nProcesses started on one host (web1, `strace -f` of its sshd) during one "
            f"`deployr deploy` at N = {count}:\n")
        if not strace:
            out("strace is not installed; skipped.")
            return
        host = fleet.hosts[0]
        log_path = fleet.dir / "strace.txt"
        tracer = subprocess.Popen(
            [strace, "-f", "-qq", "-s", "65536", "-e", "trace=execve,clone,clone3,fork,vfork",
             "-e", "signal=none", "-o", str(log_path), "-p", str(host.proc.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        file = fleet.deploy_file(count)
        measure(fleet.deployr_argv(file, "deploy"), fleet.env, fleet.dir, "traced deploy")
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(10)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
        sessions = parse_strace(log_path.read_text(errors="replace"))
        out("| # | remote command (step) | programs exec'd | processes forked | programs |")
        out("|---|---|---|---|---|")
        total_exec = total_fork = 0
        for i, (step, execs, forks) in enumerate(sessions, 1):
            names = sorted(set(execs))
            out(f"| {i} | {step} | {len(execs)} | {forks} | {' '.join(names)} |")
            total_exec += len(execs)
            total_fork += forks
        out(f"\n{len(sessions)} remote commands on web1, {total_exec} programs exec'd and "
            f"{total_fork} processes forked in them (plus sshd's own per-session fork; a "
            "`true` step costs the login shell alone).")


STEP_MARKERS = [
    ("lock", ".deployr/lock 2>/dev/null; then printf"),
    ("resolve", "rev-parse --verify --quiet"),
    ("code", "archive --format=tar"),
    ("prepared", "prepared.tmp"),
    ("switch", "releases/current current"),
    ("finish", ">> .deployr/history"),
    ("unlock", "rm -rf .deployr/lock"),
    ("state", "if [ -L current ]; then echo"),
    ("deployfile step", "export DEPLOYR_"),
]


def parse_strace(text):
    """Sessions in order: (step, [programs exec'd below the session's shell], forks)."""
    clone = re.compile(r"^(\d+)\s+(clone3?|fork|vfork)\((.*?)(?:<unfinished \.\.\.>|\)\s+=\s+(\d+))")
    resumed = re.compile(r"^(\d+)\s+<\.\.\. (?:clone3?|fork|vfork) resumed>.*=\s+(\d+)")
    execve = re.compile(r'^(\d+)\s+execve\("([^"]*)", \[(.*)')
    parent = {}
    pending = {}
    session_of = {}
    sessions = []

    def forked(pid, child, args):
        if "CLONE_THREAD" not in args:
            parent[child] = pid
            if pid in session_of:
                session_of[child] = session_of[pid]
                sessions[session_of[pid]][2] += 1

    for line in text.splitlines():
        m = clone.match(line)
        if m:
            pid, _, args, child = m.groups()
            if child is None:
                pending[pid] = args
                continue
            forked(pid, child, args)
            continue
        m = resumed.match(line)
        if m:
            pid, child = m.groups()
            forked(pid, child, pending.pop(pid, ""))
            continue
        m = execve.match(line)
        if m and "= -1" not in line:
            pid, path, argv = m.groups()
            args = re.findall(r'"((?:[^"\\]|\\.)*)"', argv)
            if len(args) >= 3 and args[1] == "-c" and pid not in session_of:
                script = args[2].encode().decode("unicode_escape", errors="replace")
                step = next((name for name, marker in STEP_MARKERS if marker in script),
                            "other")
                session_of[pid] = len(sessions)
                sessions.append([step, [], 0])
            elif pid in session_of:
                sessions[session_of[pid]][1].append(os.path.basename(path))
    return [tuple(s) for s in sessions]


def natural(key):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


class Watcher(threading.Thread):
    """Polls readlink() of every host's `current` in a tight loop and records when each one
    first differs from what it was when the watcher started."""

    def __init__(self, paths, pause=0.0):
        super().__init__(daemon=True)
        # Seconds to sleep between passes. 0 is a tight loop, which keeps one of this
        # machine's 2 CPUs busy and so slows the very switches it watches.
        self.pause = pause
        self.paths = [str(p) for p in paths]
        self.initial = [self.read(p) for p in self.paths]
        self.changed = [None] * len(self.paths)
        self.stopping = False
        # Machine CPU and process counters when the first and the last switch were seen: what
        # the machine did during the skew window.
        self.first_stat = None
        self.last_stat = None
        self.gaps = []
        self.max_gap = 0.0

    @staticmethod
    def read(path):
        try:
            return os.readlink(path)
        except OSError:
            return None

    def run(self):
        if os.geteuid() == 0:
            # Nice -15 for this thread only, so that 2 cores busy with sshd sessions do not
            # leave the watcher waiting for a CPU (which would widen the observed skew).
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -15)
            except OSError:
                pass
        remaining = list(range(len(self.paths)))
        last = time.perf_counter()
        while remaining and not self.stopping:
            still = []
            for i in remaining:
                try:
                    value = os.readlink(self.paths[i])
                except OSError:
                    value = None
                if value != self.initial[i]:
                    self.changed[i] = time.perf_counter()
                    if self.first_stat is None:
                        self.first_stat = machine_stat() + (time.thread_time(),)
                else:
                    still.append(i)
            if not still and remaining:
                self.last_stat = machine_stat() + (time.thread_time(),)
            remaining = still
            if self.pause:
                time.sleep(self.pause)
            now = time.perf_counter()
            gap = now - last
            last = now
            if len(self.gaps) < 1_000_000:
                self.gaps.append(gap)
            if gap > self.max_gap and self.changed.count(None) < len(self.paths):
                # only gaps once the switch began matter for the skew's resolution
                self.max_gap = gap

    def finish(self):
        self.stopping = True
        self.join()

    def loop_median(self):
        return median(self.gaps)


# ----------------------------------------------------------------------------- latency proxy


async def proxy_main(delay, pairs):
    async def pipe(reader, writer):
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()

        async def pump():
            while True:
                data = await reader.read(1 << 18)
                queue.put_nowait((loop.time() + delay, data))
                if not data:
                    return

        async def deliver():
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        await asyncio.gather(pump(), deliver())

    def nodelay(writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handler(target):
        async def handle(reader, writer):
            w2 = None
            try:
                r2, w2 = await asyncio.open_connection("127.0.0.1", target)
                nodelay(writer)
                nodelay(w2)
                tasks = [asyncio.ensure_future(pipe(reader, w2)),
                         asyncio.ensure_future(pipe(r2, writer))]
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                if any(not t.cancelled() and t.exception() for t in done):
                    for task in pending:
                        task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                for w in (writer, w2):
                    if w is not None:
                        w.close()
        return handle

    servers = []
    for pair in pairs:
        listen, target = (int(x) for x in pair.split(":"))
        servers.append(await asyncio.start_server(handler(target), "127.0.0.1", listen,
                                                  backlog=1024))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


# ----------------------------------------------------------------------------- main


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "proxy":
        parser = argparse.ArgumentParser(prog="run.py proxy")
        parser.add_argument("--delay-ms", type=float, required=True)
        parser.add_argument("pairs", nargs="+")
        args = parser.parse_args(sys.argv[2:])
        asyncio.run(proxy_main(args.delay_ms / 1000, args.pairs))
        return

    parser = argparse.ArgumentParser(description="deployr benchmarks (issue 6)")
    parser.add_argument("--quick", action="store_true",
                        help="every scenario once at N = 5 (CI keeps the harness working)")
    parser.add_argument("--only",
                        default="fanout,deploy,skew,latency,memory,upload,output,profile",
                        help="comma-separated scenarios (e.g. `--only output` alone)")
    parser.add_argument("--output-mb", type=int, default=200,
                        help="MB the output scenario's step prints (quick: 20)")
    parser.add_argument("--reps", type=int, help="runs per variant (default 5, quick 1)")
    parser.add_argument("--fanout-sizes", default="20,200,500,1000")
    parser.add_argument("--deploy-size", type=int, default=20)
    parser.add_argument("--skew-sizes", default="100,500")
    parser.add_argument("--latency-fanout-sizes", default="1,20")
    parser.add_argument("--latency-deploy-sizes", default="1,20")
    parser.add_argument("--memory-sizes", default="20,200,1000")
    parser.add_argument("--pyinfra", help="a pyinfra executable to compare in the fan-out")
    parser.add_argument("--pyinfra-max", type=int, default=200,
                        help="largest N the pyinfra fan-out runs at")
    parser.add_argument("--control-max", type=int, default=200,
                        help="largest N the ControlMaster fan-out runs at")
    parser.add_argument("--memory-deploy-reps", type=int, default=5)
    parser.add_argument("--deployr", default=str(ROOT / "target" / "release" / "deployr"))
    parser.add_argument("--watch-pause-us", type=float, default=0,
                        help="skew watcher: sleep between polling passes (0: tight loop)")
    parser.add_argument("--json", help="write every measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the fleet's temp dir")
    parser.add_argument("--real-home", action="store_true",
                        help="remote sessions keep the login user's HOME (and its ~/.bashrc)")
    args = parser.parse_args()

    if args.quick:
        fanout_sizes, deploy_size, skew_sizes = [5], 5, [5]
        latency_sizes, latency_deploy, memory_sizes, reps, memory_reps = [1, 5], [1, 5], [5], 1, 1
    else:
        fanout_sizes = [int(x) for x in args.fanout_sizes.split(",") if x]
        deploy_size = args.deploy_size
        skew_sizes = [int(x) for x in args.skew_sizes.split(",") if x]
        latency_sizes = [int(x) for x in args.latency_fanout_sizes.split(",") if x]
        latency_deploy = [int(x) for x in args.latency_deploy_sizes.split(",") if x]
        memory_sizes = [int(x) for x in args.memory_sizes.split(",") if x]
        reps, memory_reps = 5, args.memory_deploy_reps
    reps = args.reps or reps
    only = set(args.only.split(","))
    if args.quick and args.only == parser.get_default("only"):
        only.discard("profile")  # not one of the scenarios; CI need not have perf
    deployr = Path(args.deployr).resolve()
    if not deployr.exists():
        raise SystemExit(f"bench: {deployr} is missing; run `cargo build --release` first")

    needed = 0
    if "fanout" in only:
        needed = max(needed, *fanout_sizes)
    if "deploy" in only:
        needed = max(needed, deploy_size)
    if "skew" in only:
        needed = max(needed, *skew_sizes)
    if "latency" in only:
        needed = max(needed, *latency_deploy, *latency_sizes)
    if "memory" in only or "profile" in only:
        needed = max(needed, *memory_sizes)
    upload_size, upload_mib = (3, 5) if args.quick else (10, 50)
    if "upload" in only:
        needed = max(needed, upload_size)
    output_mb = 20 if args.quick else args.output_mb
    if "output" in only:
        needed = max(needed, 1)

    # One socket per host for deployr, an ssh process per host for xargs, a listener per
    # sshd: raise the open-file limit as far as allowed (bench/run.sh does it too).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if needed + 100 > 2 * min(want, 65536) // 5:
        log(f"bench: warning: {needed} hosts with an open-file limit of {want} may run out")
    Fleet.pidfile = os.environ.get("BENCH_PIDFILE")
    Fleet.pyinfra = args.pyinfra
    Bench.pyinfra_max = args.pyinfra_max
    Bench.control_max = args.control_max
    Host.real_home = args.real_home
    started = time.time()
    log(f"bench: starting {needed} sshd hosts")
    fleet = Fleet(needed, deployr)
    stopping = []

    def on_signal(signum, _frame):
        if not stopping:
            stopping.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    results = {}
    try:
        log(f"bench: {needed} hosts up in {time.time() - started:.1f}s ({fleet.dir})")
        out("## Results\n")
        out(f"- command: `bench/run.sh{' --quick' if args.quick else ''}`")
        out(f"- date: {subprocess.run(['date', '-u'], capture_output=True, text=True).stdout.strip()}")
        version = subprocess.run([str(deployr), "--version"], capture_output=True,
                                 text=True).stdout.strip()
        commit = os.environ.get("DEPLOYR_COMMIT")
        out(f"- nproc: {os.cpu_count()}; runs per variant: {reps}; deployr: `{version}` "
            f"({deployr}{', commit ' + commit if commit else ''})")
        out(f"- OpenSSH: {subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}")
        out(f"- load average at start: {open('/proc/loadavg').read().split()[:3]}")
        bench = Bench(fleet, reps, results)
        bench.watch_pause = args.watch_pause_us / 1e6
        sections = [
            ("fanout", lambda: bench.fanout(fanout_sizes)),
            ("deploy", lambda: bench.deploy(deploy_size)),
            ("skew", lambda: bench.skew(skew_sizes)),
            ("latency", lambda: bench.latency(latency_sizes, latency_deploy)),
            ("memory", lambda: bench.memory(memory_sizes, memory_reps)),
            ("upload", lambda: bench.upload(upload_size, upload_mib)),
            ("output", lambda: bench.output(output_mb)),
            ("profile", lambda: bench.profile(deploy_size, max(memory_sizes))),
        ]
        for name, section in sections:
            if name in only:
                t0 = time.time()
                section()
                log(f"bench: {name} took {time.time() - t0:.0f}s")
        out(f"\nTotal harness time: {time.time() - started:.0f} s")
    finally:
        fleet.stop(keep=args.keep)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
