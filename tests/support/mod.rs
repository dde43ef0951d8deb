//! The shared test harness: real OpenSSH `sshd` processes on 127.0.0.1, each with a random
//! port, a throwaway host key, an authorized throwaway client key and its own `deploy_to`.
//! There is no fake SSH server: when `sshd` is missing the tests fail, they never skip.
//! Sessions log in as this machine's root, or (`Fleet::with_login_shells`) with a login shell
//! and an empty home of their own, so that tests can give a host hostile start-up files.

use std::ffi::CString;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const SSHD_CANDIDATES: &[&str] = &["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"];

pub fn sshd_path() -> PathBuf {
    SSHD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "sshd not found in {SSHD_CANDIDATES:?}: the integration tests need OpenSSH's server \
                 (Debian package openssh-server); `bash .ci/run` installs it"
            )
        })
}

/// The path of the shell `name` (a path already, or a program in /usr/bin or /bin).
fn login_shell(name: &str) -> PathBuf {
    if name.starts_with('/') {
        return PathBuf::from(name);
    }
    ["/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "the shell {name} is not installed: the tests need zsh, fish, dash and tcsh \
                 (Debian packages of those names); `bash scripts/test.sh` installs them"
            )
        })
}

/// A copy of this machine's password database in which root's home is `dir/home` (made,
/// empty) and its login shell is `shell`.
fn private_passwd(dir: &Path, shell: &Path) -> PathBuf {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let real = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let root = format!("root:x:0:0:root:{}:{}", home.display(), shell.display());
    let mut text: String = real
        .lines()
        .filter(|line| !line.starts_with("root:"))
        .map(|line| format!("{line}\n"))
        .collect();
    text.insert_str(0, &format!("{root}\n"));
    let path = dir.join("passwd");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_ok(command: &mut Command) {
    let output = command.output().expect("spawn helper command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "deployr-test", "-f"])
            .arg(path),
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

pub fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

pub struct SshHost {
    pub name: String,
    pub port: u16,
    /// This host's `deploy_to`.
    pub deploy_to: PathBuf,
    pub dir: PathBuf,
    /// The `[127.0.0.1]:port key` line for known_hosts.
    pub known_hosts_line: String,
    /// The password database this host's sshd reads instead of /etc/passwd, when the host has
    /// a login shell and home of its own ([`Fleet::with_login_shells`]).
    passwd: Option<PathBuf>,
    child: Option<Child>,
}

impl SshHost {
    fn start(
        root: &Path,
        name: &str,
        authorized_keys: &Path,
        extra: &str,
        login_shell: Option<&Path>,
    ) -> SshHost {
        let dir = root.join("hosts").join(name);
        let deploy_to = dir.join("srv");
        std::fs::create_dir_all(&deploy_to).unwrap();
        let passwd = login_shell.map(|shell| private_passwd(&dir, shell));
        let host_key = dir.join("host_ed25519");
        keygen(&host_key);
        let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let mut fields = public.split_whitespace();
        let key = format!("{} {}", fields.next().unwrap(), fields.next().unwrap());
        let mut host = SshHost {
            name: name.to_string(),
            port: 0,
            deploy_to,
            known_hosts_line: String::new(),
            dir,
            passwd,
            child: None,
        };
        host.spawn(&host_key, authorized_keys, extra);
        host.known_hosts_line = format!("[127.0.0.1]:{} {key}", host.port);
        host
    }

    /// `extra` sshd_config lines come first, so they win over the defaults (for sshd, the first
    /// value of a keyword counts).
    fn spawn(&mut self, host_key: &Path, authorized_keys: &Path, extra: &str) {
        // sshd refuses to start as root without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        for _attempt in 0..5 {
            let port = free_port();
            let config = self.dir.join("sshd_config");
            // OpenSSH's sftp-server behind a tap that keeps every byte the client sends, so
            // tests can count what an upload cost; a test may bring its own subsystem.
            let sftp = if extra.contains("Subsystem") {
                String::new()
            } else {
                let tap = self.dir.join("sftp-server");
                std::fs::write(
                    &tap,
                    format!(
                        "#!/bin/sh\ntee -a {} | /usr/lib/openssh/sftp-server \"$@\"\n",
                        self.dir.join("sftp-received").display()
                    ),
                )
                .unwrap();
                std::fs::set_permissions(&tap, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .unwrap();
                format!("Subsystem sftp {}\n", tap.display())
            };
            std::fs::write(
                &config,
                format!(
                    "{extra}\nPort {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                     AuthorizedKeysFile {}\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
                     StrictModes no\nPermitRootLogin yes\nLogLevel VERBOSE\nMaxStartups 200\n\
                     MaxSessions 20\n{sftp}",
                    host_key.display(),
                    self.dir.join("sshd.pid").display(),
                    authorized_keys.display(),
                ),
            )
            .unwrap();
            let log = std::fs::File::create(self.dir.join("sshd.log")).unwrap();
            let mut child = self.sshd_command(log).spawn().expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "sshd for {} did not start; its log:\n{}",
            self.name,
            std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
        );
    }

    /// This host's sshd with its `sshd_config`, logging to `log`. A host with a login shell of
    /// its own gets a mount namespace of its own in which its private password database is
    /// bind-mounted over /etc/passwd: sshd takes root's shell and home from there for every
    /// session, and the machine's /etc/passwd and /root are never touched.
    fn sshd_command(&self, log: std::fs::File) -> Command {
        let mut command = Command::new(sshd_path());
        command
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(passwd) = &self.passwd {
            let source = CString::new(passwd.as_os_str().as_bytes()).unwrap();
            // SAFETY: between fork and exec the closure makes only system calls (unshare,
            // mount) on memory allocated before the fork.
            unsafe {
                command.pre_exec(move || {
                    let check = |result: libc::c_int| {
                        if result == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error())
                        }
                    };
                    check(libc::unshare(libc::CLONE_NEWNS))?;
                    // Private propagation first, or the bind mount would show on the machine.
                    check(libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ))?;
                    check(libc::mount(
                        source.as_ptr(),
                        c"/etc/passwd".as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))
                });
            }
        }
        command
    }

    /// The home directory of this host's sessions (`$HOME`, where their shell's start-up files
    /// are read), for hosts made by [`Fleet::with_login_shells`].
    pub fn home(&self) -> PathBuf {
        assert!(
            self.passwd.is_some(),
            "{} logs in as this machine's root: make it with Fleet::with_login_shells",
            self.name
        );
        self.dir.join("home")
    }

    /// Writes `text` to `relative` (e.g. ".bashrc", ".config/fish/config.fish") in this host's
    /// home, making the directories it needs.
    pub fn write_startup_file(&self, relative: &str, text: &str) {
        let path = self.home().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Every byte that clients sent to this host over SFTP (protocol included).
    pub fn sftp_bytes_received(&self) -> u64 {
        std::fs::metadata(self.dir.join("sftp-received")).map_or(0, |m| m.len())
    }

    /// Stops this host's sshd and the sessions it spawned (as a crash or power loss would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts this host's sshd again after [`SshHost::kill`], on the same port with the same
    /// config and host key: a host coming back after a crash.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "{}'s sshd is still running",
            self.name
        );
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("sshd.log"))
            .unwrap();
        let mut child = self.sshd_command(log).spawn().expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                panic!(
                    "sshd for {} did not start again:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to this host's sshd and every process under it.
    pub fn signal_all(&self, signal: &str) {
        let root = self.child.as_ref().expect("running sshd").id();
        let mut pids = vec![root];
        let mut i = 0;
        while i < pids.len() {
            let output = Command::new("pgrep")
                .args(["-P", &pids[i].to_string()])
                .output()
                .expect("pgrep");
            pids.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
            i += 1;
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// A file in this host's `deploy_to`, read as text ("" when absent).
    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.deploy_to.join(relative)).unwrap_or_default()
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal_all("CONT");
        }
        self.kill();
    }
}

/// N real sshd hosts plus everything a client needs: a key, a known_hosts file and a HOME.
pub struct Fleet {
    pub dir: TempDir,
    pub hosts: Vec<SshHost>,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub home: PathBuf,
    pub user: String,
}

impl Fleet {
    /// Hosts named `web1`, `web2`, ... all known and authorized.
    pub fn start(count: usize) -> Fleet {
        let names: Vec<String> = (1..=count).map(|i| format!("web{i}")).collect();
        Fleet::with_names(&names.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn with_names(names: &[&str]) -> Fleet {
        Fleet::with_config(names, "")
    }

    /// Hosts whose sshd_config starts with `extra` (e.g. a LogLevel for one test).
    pub fn with_config(names: &[&str], extra: &str) -> Fleet {
        Fleet::with_config_for(names, |_, _| extra.to_string())
    }

    /// Hosts whose sshd_config starts with what `extra` gives for each host's name and
    /// directory (its `deploy_to` is `srv` in there).
    pub fn with_config_for(names: &[&str], extra: impl Fn(&str, &Path) -> String) -> Fleet {
        let hosts: Vec<(&str, Option<PathBuf>)> = names.iter().map(|n| (*n, None)).collect();
        Fleet::build(&hosts, extra)
    }

    /// Hosts, each given with its login shell (`"zsh"`, `"fish"`, `"/bin/bash"`...) and an
    /// empty home of its own (`home` in its directory): its sessions start that shell, which
    /// reads its start-up files from there ([`SshHost::write_startup_file`]).
    pub fn with_login_shells(hosts: &[(&str, &str)]) -> Fleet {
        let hosts: Vec<(&str, Option<PathBuf>)> = hosts
            .iter()
            .map(|(name, shell)| (*name, Some(login_shell(shell))))
            .collect();
        Fleet::build(&hosts, |_, _| String::new())
    }

    fn build(hosts: &[(&str, Option<PathBuf>)], extra: impl Fn(&str, &Path) -> String) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("deployr-test-")
            .tempdir()
            .unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let client_key = dir.path().join("client_ed25519");
        keygen(&client_key);
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized_keys).unwrap();
        let hosts: Vec<SshHost> = hosts
            .iter()
            .map(|(name, shell)| {
                let host_dir = dir.path().join("hosts").join(name);
                std::fs::create_dir_all(&host_dir).unwrap();
                let extra = extra(name, &host_dir);
                SshHost::start(dir.path(), name, &authorized_keys, &extra, shell.as_deref())
            })
            .collect();
        let known_hosts = dir.path().join("known_hosts");
        let lines: Vec<&str> = hosts.iter().map(|h| h.known_hosts_line.as_str()).collect();
        std::fs::write(&known_hosts, lines.join("\n") + "\n").unwrap();
        Fleet {
            home,
            client_key,
            known_hosts,
            user: current_user(),
            hosts,
            dir,
        }
    }

    pub fn host(&self, name: &str) -> &SshHost {
        self.hosts.iter().find(|h| h.name == name).expect("host")
    }

    /// `[ssh]` settings that reach the fleet with the throwaway key and known_hosts.
    pub fn ssh_section(&self) -> String {
        format!(
            "[ssh]\nuser = \"{}\"\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\nconnect_timeout = \"30s\"\n",
            self.user,
            self.client_key.display(),
            self.known_hosts.display()
        )
    }

    /// `[hosts.NAME]` tables; `roles` gives each host's roles in order (missing: none).
    pub fn hosts_section(&self, roles: &[&[&str]]) -> String {
        let mut text = String::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let roles = roles.get(i).copied().unwrap_or(&[]);
            let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
            text.push_str(&format!(
                "\n[hosts.{}]\naddress = \"127.0.0.1\"\nport = {}\ndeploy_to = \"{}\"\nroles = [{}]\n",
                host.name,
                host.port,
                // A TOML basic string: a test may give a host a `deploy_to` with `"` or `\`.
                host.deploy_to
                    .display()
                    .to_string()
                    .replace('\\', "\\\\")
                    .replace('"', "\\\""),
                roles.join(", ")
            ));
        }
        text
    }

    /// A complete deployfile: `[app]`, `[ssh]`, every host, then `body`.
    pub fn deployfile(&self, roles: &[&[&str]], body: &str) -> PathBuf {
        self.deployfile_with_app("", roles, body)
    }

    /// The same, with more `[app]` keys (`keep_releases = 2`, say).
    pub fn deployfile_with_app(&self, app: &str, roles: &[&[&str]], body: &str) -> PathBuf {
        let text = format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"/nonexistent\"\n{app}\n\n{}{}\n{}",
            self.ssh_section(),
            self.hosts_section(roles),
            body
        );
        self.write("deployfile.toml", &text)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs deployr with this fleet's HOME and no ssh-agent, from the fleet's directory.
    pub fn deployr(&self, args: &[&str]) -> Run {
        let mut command = self.command(args);
        Run::from(command.output().expect("run deployr"))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_deployr"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", &self.home)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DEPLOYR_FILE")
            .env_remove("DEPLOYR_STAGE")
            .stdin(Stdio::null());
        command
    }
}

/// A finished deployr run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs deployr outside any fleet (for deployfile errors and local hosts).
pub fn deployr_in(dir: &Path, args: &[&str]) -> Run {
    Command::new(env!("CARGO_BIN_EXE_deployr"))
        .args(args)
        .current_dir(dir)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DEPLOYR_FILE")
        .env_remove("DEPLOYR_STAGE")
        .stdin(Stdio::null())
        .output()
        .expect("run deployr")
        .into()
}

/// A git repository to deploy from, on this machine's filesystem (which the fake hosts share).
pub struct SourceRepo {
    pub path: PathBuf,
}

impl SourceRepo {
    /// A repository on branch `main` with one commit whose VERSION is `1`.
    pub fn create(parent: &Path) -> SourceRepo {
        let repo = SourceRepo {
            path: parent.join("source"),
        };
        std::fs::create_dir_all(&repo.path).unwrap();
        repo.git(&["init", "-q", "-b", "main"]);
        repo.commit("1");
        repo
    }

    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args([
                "-c",
                "user.name=deployr",
                "-c",
                "user.email=deployr@example.invalid",
            ])
            .arg("-C")
            .arg(&self.path)
            .args(args)
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// Commits VERSION = `version` on the current branch and returns the commit.
    pub fn commit(&self, version: &str) -> String {
        std::fs::write(self.path.join("VERSION"), format!("{version}\n")).unwrap();
        self.git(&["add", "VERSION"]);
        self.git(&["commit", "-q", "-m", &format!("version {version}")]);
        self.git(&["rev-parse", "HEAD"])
    }
}

pub struct Deploy {
    pub fleet: Fleet,
    pub repo: SourceRepo,
    pub file: PathBuf,
}

/// Three hosts (web1 has `db`), a source repo, and a deployfile with a prepare step, a `once`
/// migrate, the switch and a reload.
pub fn setup(app: &str, extra: &str) -> Deploy {
    setup_on(Fleet::start(3), app, extra)
}

/// The same deploy on a fleet of three made otherwise (with its own sshd_config, say).
pub fn setup_on(fleet: Fleet, app: &str, extra: &str) -> Deploy {
    let repo = SourceRepo::create(fleet.dir.path());
    let body = format!(
        "[source]\nrepo = \"{}\"\nref = \"main\"\n\n\
         [[prepare]]\nname = \"build\"\nrun = \"cat VERSION > built\"\n\n\
         [[activate]]\nname = \"migrate\"\nrun = \"echo {{{{release}}}} >> {{{{shared_path}}}}/migrations\"\nroles = [\"db\"]\nonce = true\n\n\
         [[activate]]\nswitch = true\n\n\
         [[activate]]\nname = \"reload\"\nrun = \"echo {{{{release}}}} >> {{{{shared_path}}}}/reloads\"\n\n{extra}",
        repo.path.display()
    );
    let file = fleet.deployfile_with_app(app, &[&["web", "db"], &["web"], &["web"]], &body);
    Deploy { fleet, repo, file }
}

impl Deploy {
    pub fn deployr(&self, args: &[&str]) -> Run {
        let mut all = vec!["-f", self.file.to_str().unwrap()];
        all.extend_from_slice(args);
        self.fleet.deployr(&all)
    }

    /// Each host's `current` release id ("" when there is none).
    pub fn currents(&self) -> Vec<String> {
        self.fleet
            .hosts
            .iter()
            .map(|h| {
                std::fs::read_link(h.deploy_to.join("current"))
                    .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    pub fn served_versions(&self) -> Vec<String> {
        self.fleet
            .hosts
            .iter()
            .map(|h| h.read("current/VERSION").trim().to_string())
            .collect()
    }

    pub fn releases(&self, host: usize) -> Vec<String> {
        let mut ids: Vec<String> =
            std::fs::read_dir(self.fleet.hosts[host].deploy_to.join("releases"))
                .map(|dir| {
                    dir.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
        ids.sort();
        ids
    }

    pub fn prepared(&self, host: usize) -> String {
        self.fleet.hosts[host].read(".deployr/prepared")
    }

    pub fn migrations(&self) -> usize {
        self.fleet
            .hosts
            .iter()
            .map(|h| h.read("shared/migrations").lines().count())
            .sum()
    }
}

pub fn release_of(prepared: &str) -> String {
    prepared
        .lines()
        .find_map(|l| l.strip_prefix("release="))
        .unwrap_or_default()
        .to_string()
}

/// Waits until `path` exists (a step reached its marker); panics after 60 s.
pub fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a background deployr; panics (after killing it) if it runs longer than `limit`,
/// which would mean a hang rather than a bounded failure.
pub fn finish(mut child: std::process::Child, limit: Duration) -> Run {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return Run::from(child.wait_with_output().expect("output"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().expect("output"));
            panic!("deployr still running after {limit:?}:\n{}", run.all());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Deploy {
    /// deployr in the background, with its output captured.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let mut all = vec!["-f", self.file.to_str().unwrap()];
        all.extend_from_slice(args);
        self.fleet
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deployr")
    }

    /// Hosts that have anything at `.deployr/lock` (the lock is a symlink to its owner line).
    pub fn locked(&self) -> Vec<String> {
        self.fleet
            .hosts
            .iter()
            .filter(|h| h.deploy_to.join(".deployr/lock").symlink_metadata().is_ok())
            .map(|h| h.name.clone())
            .collect()
    }
}

/// An sshd_config line that gives a host's sessions every program of this machine but those
/// whose names start with one of `missing`, and no shell start-up files.
pub fn sessions_without(dir: &Path, missing: &[&str]) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir("/usr/bin").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !missing.iter().any(|prefix| name.starts_with(prefix)) {
            std::os::unix::fs::symlink(&path, bin.join(&name)).unwrap();
        }
    }
    format!("SetEnv PATH={} HOME={}\n", bin.display(), dir.display())
}

/// An sshd_config line that puts `programs` (each a name and a `sh` script), made in `dir`,
/// first on the PATH of a host's sessions, with no shell start-up files: a stand-in for one
/// program (a `perl` that stalls, say) on that host alone.
pub fn sessions_with_programs(dir: &Path, programs: &[(&str, &str)]) -> String {
    let bin = dir.join("programs");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, script) in programs {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    format!(
        "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME={}\n",
        bin.display(),
        dir.display()
    )
}

/// Replaces `from` with `to` in the deploy's deployfile (to tune `[ssh]`, say).
pub fn edit_deployfile(d: &Deploy, from: &str, to: &str) {
    let text = std::fs::read_to_string(&d.file).unwrap();
    assert!(text.contains(from), "{from} is not in the deployfile");
    std::fs::write(&d.file, text.replacen(from, to, 1)).unwrap();
}

/// A step that, on hosts with a `slow` file in deploy_to, touches `in-NAME` and then waits
/// (at most a minute) until the file is removed.
pub fn slow_step(section: &str, name: &str) -> String {
    format!(
        "[[{section}]]\nname = \"{name}\"\nrun = \"\"\"\nif [ -e {{{{deploy_to}}}}/slow ]; then\n  touch {{{{deploy_to}}}}/in-{name}\n  i=0; while [ -e {{{{deploy_to}}}}/slow ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done\nfi\n\"\"\"\n",
    )
}

/// Makes `slow_step`s wait on this host.
pub fn slow_on(d: &Deploy, host: usize) {
    std::fs::write(d.fleet.hosts[host].deploy_to.join("slow"), "").unwrap();
}

/// Lets every waiting `slow_step` go on.
pub fn fast_again(d: &Deploy) {
    for host in &d.fleet.hosts {
        let _ = std::fs::remove_file(host.deploy_to.join("slow"));
    }
}

/// Sends `signal` ("INT", "TERM", "HUP", "KILL") to a background deployr.
pub fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Ctrl-C, as a terminal sends it.
pub fn interrupt(child: &std::process::Child) {
    signal(child, "INT");
}

impl Deploy {
    /// Hosts that have an activation journal (`.deployr/activating`).
    pub fn journaled(&self) -> Vec<String> {
        self.fleet
            .hosts
            .iter()
            .filter(|h| h.deploy_to.join(".deployr/activating").exists())
            .map(|h| h.name.clone())
            .collect()
    }

    /// Each host's history records, parsed (one JSON object per line).
    pub fn records(&self, host: usize) -> Vec<serde_json::Value> {
        self.history(host)
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect()
    }

    /// `(command, result)` of a host's last history record.
    pub fn last_record(&self, host: usize) -> (String, String) {
        let last = self.records(host).pop().unwrap_or_default();
        let field = |name: &str| last[name].as_str().unwrap_or_default().to_string();
        (field("command"), field("result"))
    }

    /// Each host's history lines.
    pub fn history(&self, host: usize) -> Vec<String> {
        self.fleet.hosts[host]
            .read(".deployr/history")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A finished deployr whose output was too large to keep whole.
pub struct Measured {
    pub code: i32,
    /// How many bytes it wrote to stdout.
    pub stdout_bytes: u64,
    /// The last 1 MiB of its stdout and of its stderr.
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// Its peak resident set size in bytes, as GNU time reports it (`ru_maxrss` of deployr
    /// alone).
    pub peak_rss: u64,
}

/// GNU time (Debian package `time`): it forks the measured program from its own small
/// process. A program spawned straight from this test process would inherit the test
/// process's peak RSS as its own `ru_maxrss` (posix_spawn shares the parent's memory until
/// exec, and exec keeps the old high-water mark).
const GNU_TIME: &str = "/usr/bin/time";

/// Runs `command` (a deployr) under GNU time, reading its output as it comes but keeping only
/// the ends of it, and measures its peak memory; panics (after killing it) if it runs longer
/// than `limit`.
pub fn measure(command: Command, limit: Duration) -> Measured {
    assert!(
        Path::new(GNU_TIME).exists(),
        "{GNU_TIME} is missing (Debian package time); `bash scripts/test.sh` installs it"
    );
    let rss = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new(GNU_TIME);
    timed
        .args(["-q", "-f", "%M", "-o"])
        .arg(rss.path())
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(name, value),
            None => timed.env_remove(name),
        };
    }
    let mut child = timed.spawn().expect("spawn deployr under GNU time");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            const KEEP: usize = 1 << 20;
            let mut total = 0u64;
            let mut tail: Vec<u8> = Vec::with_capacity(2 * KEEP);
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let n = match pipe.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                total += n as u64;
                tail.extend_from_slice(&buffer[..n]);
                if tail.len() > 2 * KEEP {
                    tail.drain(..tail.len() - KEEP);
                }
            }
            let start = tail.len().saturating_sub(KEEP);
            (total, String::from_utf8_lossy(&tail[start..]).into_owned())
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            // GNU time and deployr both: deployr would keep the pipes open.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string()])
                .status();
            let _ = child.kill();
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout_bytes, stdout_tail) = stdout.join().unwrap();
    let (_, stderr_tail) = stderr.join().unwrap();
    assert!(
        !timed_out,
        "deployr still running after {limit:?}:\n{stdout_tail}\n{stderr_tail}"
    );
    let kib: u64 = std::fs::read_to_string(rss.path())
        .unwrap()
        .trim()
        .parse()
        .expect("GNU time's %M");
    Measured {
        code: status.code().unwrap_or(-1),
        stdout_bytes,
        stdout_tail,
        stderr_tail,
        peak_rss: kib * 1024,
    }
}
