//! SSH connections with russh: one per host for the whole command, reused for every step.
//!
//! A connection goes directly, through bastions (each reached by its own route and shared by
//! every host behind it) or over a `ProxyCommand`'s stdin and stdout. The host key is checked
//! against known_hosts (see [`crate::known_hosts`]) before any authentication (see
//! [`crate::auth`]); an unknown key is refused under `strict`, learnt under `accept-new`, and a
//! changed or revoked key is always refused.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::{ChannelMsg, Disconnect};
use tokio::sync::{OwnedMappedMutexGuard, OwnedMutexGuard, Semaphore};

use crate::connect_error::ConnectError;
use crate::inventory::{AddressFamily, Route, SshSettings};
use crate::lines::LineSplitter;
use crate::remote::command::Interpreter;
use crate::remote::frame::{self, Marker};
use crate::remote::gate::Gate;
use crate::transport::{Cancel, Outcome, Sink, Stream, interrupted};

/// Uploads at once on one connection: with the host's shell and the channel opened ahead,
/// below OpenSSH's `MaxSessions` default of 10 channels per connection.
const CHANNELS_PER_CONNECTION: usize = 8;

/// What the handler learnt about the server's key, kept as an error so that `connect` can say
/// exactly why the key was refused.
#[derive(Debug)]
enum HandlerError {
    Ssh(russh::Error),
    Refused(ConnectError),
}

impl From<russh::Error> for HandlerError {
    fn from(error: russh::Error) -> Self {
        HandlerError::Ssh(error)
    }
}

struct Client {
    /// The host being connected to, for its known_hosts files, name and agent.
    settings: SshSettings,
}

impl client::Handler for Client {
    type Error = HandlerError;

    /// With `forward_agent = true` (or `ForwardAgent yes`), the host's requests to the agent
    /// (a `git fetch` of a private repo, say) are relayed to the local agent; otherwise they
    /// are refused.
    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let (true, Some(socket)) = (self.settings.forward_agent, self.settings.agent.clone())
        else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            if let Ok(mut agent) = tokio::net::UnixStream::connect(socket).await {
                let mut stream = channel.into_stream();
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut agent).await;
            }
        });
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        crate::known_hosts::check(&self.settings, key)
            .map(|()| true)
            .map_err(HandlerError::Refused)
    }
}

/// What a connection's transport needs kept alive: the bastion it runs through, or the
/// `ProxyCommand` process it speaks over (killed when dropped).
enum Carrier {
    Direct,
    Bastion {
        _link: Arc<Link>,
    },
    Command {
        _process: Box<tokio::process::Child>,
    },
}

/// An authenticated connection and what carries it.
struct Link {
    handle: Handle<Client>,
    _carrier: Carrier,
}

pub struct Session {
    handle: Arc<Handle<Client>>,
    forward_agent: bool,
    channels: Arc<Semaphore>,
    /// A session channel being opened ahead of need, so that the next command costs one round
    /// trip (exec and its answer) rather than two (open, then exec).
    spare: std::sync::Mutex<Option<Opening>>,
    /// The host's shell that runs every step of this command, started on first use.
    host_shell: Arc<tokio::sync::Mutex<Option<HostShell>>>,
    /// Set once the host missed a deadline that deployr could not recover from (a step that
    /// would not stop, a channel that would not open): nothing more is sent to it, so no later
    /// step can wait on it.
    cut: Arc<Cut>,
    /// Bounds opening a channel and starting the host's shell: work of the same kind as
    /// connecting.
    connect_timeout: Duration,
    /// What the login shell's start-up files printed before deployr's shell was ready: no
    /// step's output, shown with `-v`.
    pub start_up: Vec<String>,
    /// The bastion or ProxyCommand this connection runs through, kept as long as it is.
    _carrier: Carrier,
}

/// Why a host was cut off, once it has been.
#[derive(Default)]
struct Cut(std::sync::OnceLock<String>);

impl Cut {
    fn set(&self, reason: String) {
        let _ = self.0.set(reason);
    }

    fn outcome(&self) -> Option<Outcome> {
        self.0
            .get()
            .map(|reason| Outcome::Lost(format!("cut off: {reason}")))
    }
}

/// How long a host may take to confirm that a stopped step's channel is closed, and to take a
/// line sent to an armed command; a host slower than that is cut off.
const GRACE: Duration = Duration::from_secs(5);

/// Far enough away to mean "no deadline" for a user step without `timeout` (keepalives still
/// end it if the host stops answering).
const NO_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Bastion connections of one run, opened once and shared by every host behind them.
#[derive(Default)]
pub struct Bastions(
    std::sync::Mutex<HashMap<SshSettings, Arc<tokio::sync::OnceCell<BastionResult>>>>,
);

/// An open bastion connection, or why it could not be opened (said once to every host behind it).
type BastionResult = Result<Arc<Link>, String>;

impl Bastions {
    /// The connection to `bastion`, opened by the first host that needs it; the others wait
    /// for it. A bastion behind another bastion is opened the same way.
    fn get<'a>(
        &'a self,
        bastion: &'a SshSettings,
    ) -> futures::future::BoxFuture<'a, Result<Arc<Link>, ConnectError>> {
        Box::pin(async move {
            let cell = self
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(bastion.clone())
                .or_default()
                .clone();
            cell.get_or_init(|| async {
                handshake(bastion, self)
                    .await
                    .map(|(handle, carrier)| {
                        Arc::new(Link {
                            handle,
                            _carrier: carrier,
                        })
                    })
                    .map_err(|error| error.to_string())
            })
            .await
            .clone()
            .map_err(|reason| ConnectError::Bastion {
                bastion: format!("{}@{}:{}", bastion.user, bastion.host_name, bastion.port),
                reason,
            })
        })
    }
}

pub async fn connect(settings: &SshSettings, bastions: &Bastions) -> Result<Session, ConnectError> {
    let (handle, carrier) = handshake(settings, bastions).await?;
    let mut session = Session {
        handle: Arc::new(handle),
        forward_agent: settings.forward_agent,
        channels: Arc::new(Semaphore::new(CHANNELS_PER_CONNECTION)),
        spare: std::sync::Mutex::new(None),
        host_shell: Arc::new(tokio::sync::Mutex::new(None)),
        cut: Arc::default(),
        connect_timeout: settings.connect_timeout,
        start_up: Vec::new(),
        _carrier: carrier,
    };
    session.open_spare();
    // The shell starts now, so that a host whose start-up files get in the way fails before
    // anything runs anywhere, like a host that cannot be reached.
    let (host_shell, printed) = session
        .start_host_shell()
        .await
        .map_err(ConnectError::Shell)?;
    *session.host_shell.lock().await = Some(host_shell);
    session.start_up = printed;
    Ok(session)
}

type Opening = tokio::task::JoinHandle<Result<russh::Channel<client::Msg>, russh::Error>>;

/// Connects by the host's route, checks the host key and authenticates, all within
/// `connect_timeout` (a bastion's own connection has its own).
async fn handshake(
    settings: &SshSettings,
    bastions: &Bastions,
) -> Result<(Handle<Client>, Carrier), ConnectError> {
    let via = match &settings.route {
        Route::Jump(bastion) => Some(bastions.get(bastion).await?),
        _ => None,
    };
    let address = settings.host_name.as_str();
    let target = format!("{address}:{}", settings.port);
    let (key, certificates) = crate::known_hosts::algorithms(settings);
    if key.is_empty() {
        return Err(ConnectError::Protocol(format!(
            "HostKeyAlgorithms for {target} leaves no algorithm deployr supports"
        )));
    }
    let config = Arc::new(client::Config {
        keepalive_interval: Some(settings.keepalive_interval),
        keepalive_max: settings.keepalive_max,
        nodelay: true,
        preferred: russh::Preferred {
            key: Cow::Owned(key),
            host_key_certificates: Cow::Owned(certificates),
            ..russh::Preferred::DEFAULT
        },
        ..Default::default()
    });
    let client = Client {
        settings: settings.clone(),
    };
    let refused = |error| match error {
        HandlerError::Refused(refused) => refused,
        HandlerError::Ssh(error) => ConnectError::Protocol(error.to_string()),
    };
    crate::auth::unlock(settings).await;
    let timeout = settings.connect_timeout;
    let connecting = async {
        let (mut handle, carrier) = match (&settings.route, via) {
            (_, Some(bastion)) => {
                let channel = bastion
                    .handle
                    .channel_open_direct_tcpip(address, settings.port as u32, "127.0.0.1", 0)
                    .await
                    .map_err(|error| ConnectError::Unreachable {
                        address: format!("{target} through the bastion"),
                        reason: error.to_string(),
                    })?;
                let handle = client::connect_stream(config, channel.into_stream(), client)
                    .await
                    .map_err(refused)?;
                (handle, Carrier::Bastion { _link: bastion })
            }
            (Route::Command(command), None) => {
                let (mut child, stream, stderr) = spawn_proxy(command)?;
                match client::connect_stream(config, stream, client).await {
                    Ok(handle) => (
                        handle,
                        Carrier::Command {
                            _process: Box::new(child),
                        },
                    ),
                    Err(error) => {
                        let error = refused(error);
                        let _ = child.start_kill();
                        let said = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        return Err(match error {
                            ConnectError::Protocol(reason) => ConnectError::ProxyCommand {
                                command: command.clone(),
                                reason: if said.trim().is_empty() {
                                    reason
                                } else {
                                    format!("{reason}; it said: {}", said.trim())
                                },
                            },
                            other => other,
                        });
                    }
                }
            }
            _ => {
                let socket = dial(&target, settings.address_family)
                    .await
                    .map_err(|error| ConnectError::Unreachable {
                        address: target.clone(),
                        reason: error.to_string(),
                    })?;
                socket.set_nodelay(true).ok();
                let handle = client::connect_stream(config, socket, client)
                    .await
                    .map_err(refused)?;
                (handle, Carrier::Direct)
            }
        };
        crate::auth::authenticate(&mut handle, settings).await?;
        Ok((handle, carrier))
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout {
            address: target.clone(),
            timeout,
        })?
}

/// A TCP connection to the first address of `target` that answers, among those of the
/// `AddressFamily` allowed.
async fn dial(target: &str, family: AddressFamily) -> std::io::Result<tokio::net::TcpStream> {
    if family == AddressFamily::Any {
        return tokio::net::TcpStream::connect(target).await;
    }
    let mut last = None;
    for address in tokio::net::lookup_host(target).await? {
        if address.is_ipv4() != (family == AddressFamily::Inet) {
            continue;
        }
        match tokio::net::TcpStream::connect(address).await {
            Ok(socket) => return Ok(socket),
            Err(error) => last = Some(error),
        }
    }
    let family = if family == AddressFamily::Inet {
        "inet"
    } else {
        "inet6"
    };
    Err(std::io::Error::other(match last {
        Some(error) => format!("{error} (AddressFamily {family})"),
        None => format!("it has no address allowed by AddressFamily {family}"),
    }))
}

type ProxyStream = tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>;

/// Starts a `ProxyCommand` as OpenSSH does (`exec` under `/bin/sh -c`); SSH then runs over its
/// stdout and stdin. What it says on stderr is kept for the error if the connection fails.
fn spawn_proxy(
    command: &str,
) -> Result<
    (
        tokio::process::Child,
        ProxyStream,
        Arc<std::sync::Mutex<String>>,
    ),
    ConnectError,
> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| ConnectError::ProxyCommand {
            command: command.to_string(),
            reason: error.to_string(),
        })?;
    let stdout = child.stdout.take().expect("piped");
    let stdin = child.stdin.take().expect("piped");
    let said = Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let said = said.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = tokio::io::AsyncReadExt::read(&mut stderr, &mut buffer).await {
                said.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
    }
    Ok((child, tokio::io::join(stdout, stdin), said))
}

/// deployr's own shell (`/bin/sh`), kept running on the host for the whole command. Each step
/// is sent to it wrapped by [`frame::Marker::wrap`]: a step then costs one round trip and one
/// fork, not a channel, an SSH session and a login shell (with its start-up files) of its own.
/// The script is quoted whole, so even one with a syntax error fails alone and leaves the shell
/// reading the next step.
pub struct HostShell {
    channel: russh::Channel<client::Msg>,
    /// Ends the step in progress; a new one for every step.
    marker: Marker,
    /// How many markers this shell has used.
    sequence: u64,
    /// False once the shell or its channel has gone (or a step had to be stopped): the next
    /// step starts a new one.
    alive: bool,
    /// The connection, to ask whether the host still answers after a step was stopped.
    handle: Arc<Handle<Client>>,
    /// The connection's cut-off flag: set when the host no longer answers.
    cut: Arc<Cut>,
    /// The step in progress: its output so far and whether each marker has come.
    stdout: LineSplitter,
    stderr: LineSplitter,
    status: Option<u32>,
    stderr_done: bool,
    /// Holds back a login shell's start-up output until its command begins.
    gate: Gate,
}

/// What a shell printed before it was ready (a login shell's start-up files): the last lines.
const START_UP_LINES: usize = 20;

impl HostShell {
    /// Starts deployr's shell on `channel` and waits, within `bound`, until it says it reads
    /// commands. Returns it and the last lines printed before that (start-up output, which is
    /// not any step's), or why it did not become ready.
    async fn start(
        channel: russh::Channel<client::Msg>,
        handle: Arc<Handle<Client>>,
        cut: Arc<Cut>,
        bound: Duration,
    ) -> Result<(HostShell, Vec<String>), String> {
        let mut host_shell = HostShell {
            channel,
            handle,
            marker: Marker::fresh(0),
            sequence: 0,
            alive: true,
            cut,
            stdout: LineSplitter::default(),
            stderr: LineSplitter::default(),
            status: None,
            stderr_done: false,
            gate: Gate::new(Interpreter::DeployrSh),
        };
        let deadline = Deadline::after(Some(bound));
        let request = host_shell.marker.ready_request();
        let mut printed = std::collections::VecDeque::new();
        let mut keep = |_: Stream, line: String| {
            if printed.len() == START_UP_LINES {
                printed.pop_front();
            }
            printed.push_back(line);
        };
        let sent =
            tokio::time::timeout_at(deadline.at, host_shell.channel.data(request.as_bytes()));
        let outcome = match sent.await {
            Ok(Ok(())) => {
                host_shell
                    .read(Read::Ready, deadline, Cancel::never(), &mut keep)
                    .await
            }
            Ok(Err(_)) => Some(Outcome::Lost("the channel closed".into())),
            Err(_) => Some(Outcome::TimedOut(bound)),
        };
        let printed: Vec<String> = printed.into();
        match outcome {
            None => Ok((host_shell, printed)),
            Some(Outcome::TimedOut(after)) => {
                // A timed-out read has stopped the shell already; a send that timed out has
                // not. Either way within GRACE, and a host that does not answer is cut off.
                if host_shell.alive {
                    host_shell.stop(Outcome::TimedOut(after)).await;
                }
                Err(frame::not_ready(
                    &format!(
                        "it was not ready within {}",
                        humantime::format_duration(after)
                    ),
                    &printed,
                ))
            }
            Some(outcome) => Err(frame::not_ready(&outcome.to_string(), &printed)),
        }
    }

    async fn run(
        &mut self,
        script: &str,
        interpreter: Interpreter,
        timeout: Option<Duration>,
        cancel: Cancel,
        on_line: &mut dyn Sink,
    ) -> Outcome {
        let deadline = Deadline::after(timeout);
        if let Err(outcome) = self.send(script, false, interpreter, deadline).await {
            return outcome;
        }
        self.read(Read::ToTheEnd, deadline, cancel, on_line)
            .await
            .unwrap_or_else(|| Outcome::Lost("stopped early".into()))
    }

    /// Starts a step. With `input`, the step reads the channel (an armed switch waiting for
    /// `go`); otherwise it reads /dev/null, so it cannot eat the steps that follow.
    async fn send(
        &mut self,
        script: &str,
        input: bool,
        interpreter: Interpreter,
        deadline: Deadline,
    ) -> Result<(), Outcome> {
        self.sequence += 1;
        self.marker = Marker::fresh(self.sequence);
        let Some(framed) = self.marker.wrap(script, input) else {
            return Err(Outcome::Lost("the script contains a NUL byte".into()));
        };
        self.gate = Gate::new(interpreter);
        self.stdout = LineSplitter::default();
        self.stderr = LineSplitter::default();
        self.status = None;
        self.stderr_done = false;
        // A host that stops reading fills the SSH window, and then sending waits too.
        match tokio::time::timeout_at(deadline.at, self.channel.data(framed.as_bytes())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.alive = false;
                Err(Outcome::Lost("the connection was lost".into()))
            }
            Err(_) => Err(self.stop(deadline.missed()).await),
        }
    }

    /// Reads the step's output until it ends (`Some`), or until it prints the line `until`
    /// (`None`; the step goes on), or until the deadline, when the step is stopped. A shell
    /// that ends before the step's marker has failed the step, whatever its exit status.
    async fn read(
        &mut self,
        read: Read<'_>,
        deadline: Deadline,
        mut cancel: Cancel,
        on_line: &mut dyn Sink,
    ) -> Option<Outcome> {
        let mut exit = None;
        let mut reached = false;
        let marker = self.marker.clone();
        // The ready line carries no status; a step's line on standard output does.
        let with_status = !matches!(read, Read::Ready);
        let until = match read {
            Read::Until(line) => Some(line),
            _ => None,
        };
        loop {
            let message = tokio::select! {
                message = async {
                    crate::lines::BACKLOG.room().await;
                    self.channel.wait().await
                } => message,
                _ = tokio::time::sleep_until(deadline.at) => {
                    return Some(self.stop(deadline.missed()).await);
                }
                _ = cancel.cancelled() => {
                    return Some(self.stop(interrupted()).await);
                }
            };
            let status = &mut self.status;
            let stderr_done = &mut self.stderr_done;
            let gate = &mut self.gate;
            match message {
                Some(ChannelMsg::Data { data }) => {
                    self.stdout
                        .push(&data, &mut |line| match marker.ends(&line, with_status) {
                            Some(ending) => {
                                if !ending.before.is_empty() {
                                    gate.pass(Stream::Stdout, ending.before.to_string(), on_line);
                                }
                                *status = Some(ending.status.unwrap_or(0));
                            }
                            None if until == Some(line.as_str()) => reached = true,
                            None => gate.pass(Stream::Stdout, line, on_line),
                        })
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    self.stderr
                        .push(&data, &mut |line| match marker.ends(&line, false) {
                            Some(ending) => {
                                if !ending.before.is_empty() {
                                    gate.pass(Stream::Stderr, ending.before.to_string(), on_line);
                                }
                                *stderr_done = true;
                            }
                            None => gate.pass(Stream::Stderr, line, on_line),
                        })
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
                Some(ChannelMsg::Eof) => {}
                Some(ChannelMsg::Close) | None => {
                    self.alive = false;
                    let gate = &mut self.gate;
                    self.stdout
                        .finish(&mut |line| gate.pass(Stream::Stdout, line, on_line));
                    self.stderr
                        .finish(&mut |line| gate.pass(Stream::Stderr, line, on_line));
                    gate.release(on_line);
                    let ended = match read {
                        Read::Ready => "the login shell exited",
                        _ => "the shell on the host ended before the step did",
                    };
                    return Some(Outcome::Lost(match exit {
                        Some(code) => format!("{ended} (exit status {code})"),
                        None => format!("{ended} (no exit status: the connection was lost)"),
                    }));
                }
                Some(_) => {}
            }
            // The lines of this chunk go on together.
            on_line.flush();
            if let (Some(code), true) = (self.status, self.stderr_done) {
                return match read {
                    Read::Ready => None,
                    _ => Some(self.gate.finish(Outcome::Exited(code), on_line)),
                };
            }
            if reached {
                return None;
            }
        }
    }

    /// Stops the step that is running: the shell and its channel go, and the next step gets a
    /// new shell. Then the host is asked for an answer (an SSH ping, which sshd answers itself,
    /// whatever the step's processes do): one that does not answer within [`GRACE`] is frozen,
    /// or its network is gone, and the connection is cut off, so that nothing else waits on
    /// it. Returns `outcome`, the reason for stopping.
    async fn stop(&mut self, outcome: Outcome) -> Outcome {
        self.alive = false;
        let channel = &mut self.channel;
        let handle = &self.handle;
        let answered = tokio::time::timeout(GRACE, async {
            let _ = channel.signal(russh::Sig::TERM).await;
            let _ = channel.close().await;
            handle.send_ping().await
        })
        .await;
        if !matches!(answered, Ok(Ok(()))) {
            self.cut.set(format!(
                "it did not answer within {} after the step was stopped ({outcome})",
                humantime::format_duration(GRACE)
            ));
        }
        outcome
    }
}

/// How far [`HostShell::read`] reads.
#[derive(Clone, Copy)]
enum Read<'a> {
    /// Until the shell has said it is ready (its start-up output is not a step's).
    Ready,
    /// Until the step prints this line, which is not passed on.
    Until(&'a str),
    /// Until the step's marker.
    ToTheEnd,
}

/// When a wait on a host ends, and what missing it means.
#[derive(Clone, Copy)]
struct Deadline {
    at: tokio::time::Instant,
    bound: Option<Duration>,
}

impl Deadline {
    fn after(bound: Option<Duration>) -> Deadline {
        Deadline {
            at: tokio::time::Instant::now() + bound.unwrap_or(NO_DEADLINE),
            bound,
        }
    }

    fn missed(&self) -> Outcome {
        Outcome::TimedOut(self.bound.unwrap_or(NO_DEADLINE))
    }
}

/// A command that is running in the host's shell and waiting for `go`: it holds the shell
/// until it ends, so nothing else is sent to it meanwhile. Every wait on it is bounded.
pub struct Armed {
    host_shell: OwnedMappedMutexGuard<Option<HostShell>, HostShell>,
    bound: Duration,
}

impl Armed {
    /// Sends it a line (`go`, `done`, `stop`); false if it could not be sent within [`GRACE`].
    pub async fn tell(&mut self, line: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(GRACE, self.host_shell.channel.data(line)).await,
            Ok(Ok(()))
        )
    }

    /// Reads it until it prints `until` (`None`), or to its end (`Some`), within its bound.
    pub async fn wait_for(&mut self, until: &str, on_line: &mut dyn Sink) -> Option<Outcome> {
        let deadline = Deadline::after(Some(self.bound));
        self.host_shell
            .read(Read::Until(until), deadline, Cancel::never(), on_line)
            .await
    }

    /// Reads it to its end (after `go`, or after being called off), within its bound.
    pub async fn finish(mut self, on_line: &mut dyn Sink) -> Outcome {
        let deadline = Deadline::after(Some(self.bound));
        self.host_shell
            .read(Read::ToTheEnd, deadline, Cancel::never(), on_line)
            .await
            .unwrap_or_else(|| Outcome::Lost("stopped early".into()))
    }
}

impl Session {
    /// Opens a channel ahead for the next command, unless one is already on its way: replacing
    /// it would drop a channel that may have opened, which russh does not close, and the
    /// server counts against `MaxSessions`.
    fn open_spare(&self) {
        let mut spare = self.spare.lock().expect("spare channel");
        if spare.is_none() {
            let handle = self.handle.clone();
            *spare = Some(tokio::spawn(
                async move { handle.channel_open_session().await },
            ));
        }
    }

    /// A session channel: the one opened ahead, if it opened, and another is opened ahead for
    /// the next command. A host that does not open one within `connect_timeout` is cut off.
    async fn channel(&self) -> Result<russh::Channel<client::Msg>, String> {
        let opening = self.spare.lock().expect("spare channel").take();
        let opened = tokio::time::timeout(self.connect_timeout, async {
            match opening {
                Some(opening) => match opening.await {
                    Ok(Ok(channel)) => Ok(channel),
                    _ => self.handle.channel_open_session().await,
                },
                None => self.handle.channel_open_session().await,
            }
        })
        .await;
        let opened = match opened {
            Ok(opened) => opened.map_err(|error| format!("cannot open a channel: {error}")),
            Err(_) => {
                let reason = format!(
                    "it did not open a channel within {}",
                    humantime::format_duration(self.connect_timeout)
                );
                self.cut.set(reason.clone());
                return Err(reason);
            }
        };
        self.open_spare();
        opened
    }

    /// The host's shell: started on first use, and again after one was stopped.
    async fn host_shell(
        &self,
    ) -> Result<OwnedMappedMutexGuard<Option<HostShell>, HostShell>, Outcome> {
        if let Some(cut) = self.cut.outcome() {
            return Err(cut);
        }
        let mut slot = self.host_shell.clone().lock_owned().await;
        if !slot.as_ref().is_some_and(|host_shell| host_shell.alive) {
            *slot = Some(self.start_host_shell().await.map_err(Outcome::Lost)?.0);
        }
        Ok(OwnedMutexGuard::map(slot, |slot| {
            slot.as_mut().expect("started above")
        }))
    }

    /// Starts deployr's shell on the host: the login shell (after its start-up files) starts
    /// it, and it then reads each step from the channel. Returns it and what the start-up files
    /// printed.
    async fn start_host_shell(&self) -> Result<(HostShell, Vec<String>), String> {
        let channel = self.channel().await?;
        let started = tokio::time::timeout(self.connect_timeout, async {
            if self.forward_agent {
                let _ = channel.agent_forward(false).await;
            }
            channel.exec(true, frame::START).await
        })
        .await;
        match started {
            Ok(Ok(())) => {
                HostShell::start(
                    channel,
                    self.handle.clone(),
                    self.cut.clone(),
                    self.connect_timeout,
                )
                .await
            }
            Ok(Err(error)) => Err(format!("cannot start the shell: {error}")),
            Err(_) => {
                let reason = format!(
                    "it did not start a shell within {}",
                    humantime::format_duration(self.connect_timeout)
                );
                self.cut.set(reason.clone());
                Err(reason)
            }
        }
    }

    /// Runs a script in the host's shell, within `timeout` if there is one.
    pub async fn exec(
        &self,
        script: &str,
        interpreter: Interpreter,
        timeout: Option<Duration>,
        cancel: Cancel,
        on_line: &mut dyn Sink,
    ) -> Outcome {
        match self.host_shell().await {
            Ok(mut host_shell) => {
                host_shell
                    .run(script, interpreter, timeout, cancel, on_line)
                    .await
            }
            Err(outcome) => outcome,
        }
    }

    /// Starts `script` in the host's shell, with the channel as its input, and reads it until
    /// it prints `until`. Every later wait on the armed command is bounded by `bound` too.
    pub async fn arm(
        &self,
        script: &str,
        until: &str,
        bound: Duration,
        cancel: Cancel,
        on_line: &mut dyn Sink,
    ) -> Result<Armed, Outcome> {
        let mut host_shell = self.host_shell().await?;
        let deadline = Deadline::after(Some(bound));
        host_shell
            .send(script, true, Interpreter::DeployrSh, deadline)
            .await?;
        match host_shell
            .read(Read::Until(until), deadline, cancel, on_line)
            .await
        {
            None => Ok(Armed { host_shell, bound }),
            Some(outcome) => Err(outcome),
        }
    }

    /// Why this host was cut off, if it was.
    pub fn cut_off(&self) -> Option<Outcome> {
        self.cut.outcome()
    }

    /// Ends the connection, waiting at most [`GRACE`] for a host that no longer answers.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(
            GRACE,
            self.handle
                .disconnect(Disconnect::ByApplication, "deployr done", "en"),
        )
        .await;
    }
}

impl Session {
    /// Sends a file over SFTP on this connection, to `to.part` first and then renamed, so that
    /// nothing ever finds half a file under its real name. Returns once the server has ended the
    /// SFTP session, so anything the server does when a session ends has happened by then.
    pub async fn upload(
        &self,
        from: &Path,
        to: &str,
        bound: Duration,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), String> {
        if let Some(cut) = self.cut.outcome() {
            return Err(cut.to_string());
        }
        match tokio::time::timeout(bound, self.upload_unbounded(from, to, progress)).await {
            Ok(result) => result,
            Err(_) => {
                let reason = format!(
                    "the upload did not finish within {}",
                    humantime::format_duration(bound)
                );
                self.cut.set(reason.clone());
                Err(reason)
            }
        }
    }

    async fn upload_unbounded(
        &self,
        from: &Path,
        to: &str,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), String> {
        let Ok(_permit) = self.channels.clone().acquire_owned().await else {
            return Err("connection closed".into());
        };
        let channel = self.channel().await?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|error| format!("the server refused SFTP: {error}"))?;
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let pump = tokio::spawn(pump_subsystem(channel, ours));
        let sent = send_file(theirs, from, to, progress).await;
        // The SFTP session is gone, so the pump has sent EOF; wait for the server to close.
        let closed = tokio::time::timeout(Duration::from_secs(60), pump).await;
        sent?;
        match closed {
            Ok(Ok(())) => Ok(()),
            _ => Err("the server did not end the SFTP session".into()),
        }
    }
}

/// Carries bytes between an in-memory stream (the SFTP client's end) and a subsystem channel,
/// until the server closes the channel.
/// How much a start-up banner in front of the SFTP stream may hold before it is given up on.
const BANNER_LIMIT: usize = 64 * 1024;

/// Where the server's first SFTP packet starts in `bytes`: `SSH_FXP_VERSION` (2) with version 3,
/// after a length under 64 KiB. A banner is text, so it never holds the NUL bytes this needs.
fn sftp_start(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(9)
        .position(|w| w[0] == 0 && w[1] == 0 && w[4] == 2 && w[5..9] == [0, 0, 0, 3])
}

async fn pump_subsystem(mut channel: russh::Channel<client::Msg>, stream: tokio::io::DuplexStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer = vec![0; 1 << 15];
    let mut input_open = true;
    // What the server sent before its first SFTP packet: an external sftp-server is started by
    // the login shell, whose start-up files may print a banner into the SFTP stream.
    let mut before_sftp: Option<Vec<u8>> = Some(Vec::new());
    loop {
        tokio::select! {
            read = reader.read(&mut buffer), if input_open => match read {
                Ok(0) | Err(_) => {
                    input_open = false;
                    let _ = channel.eof().await;
                }
                Ok(read) => {
                    if channel.data(&buffer[..read]).await.is_err() {
                        return;
                    }
                }
            },
            message = channel.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    let data = match &mut before_sftp {
                        None => &data[..],
                        Some(held) => {
                            held.extend_from_slice(&data);
                            match sftp_start(held) {
                                Some(start) => {
                                    let _ = writer.write_all(&held[start..]).await;
                                    before_sftp = None;
                                }
                                None if held.len() > BANNER_LIMIT => {
                                    let _ = writer.write_all(held).await;
                                    before_sftp = None;
                                }
                                None => {}
                            }
                            &[][..]
                        }
                    };
                    let _ = writer.write_all(data).await;
                }
                Some(ChannelMsg::Eof) => {
                    let _ = writer.shutdown().await;
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            },
        }
    }
}

async fn send_file(
    stream: tokio::io::DuplexStream,
    from: &Path,
    to: &str,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sftp = russh_sftp::client::SftpSession::new(stream)
        .await
        .map_err(|error| format!("cannot start SFTP: {error}"))?;
    if let Some((dir, _)) = to.rsplit_once('/') {
        // Usually there already; if it cannot be made, creating the file says why.
        let _ = sftp.create_dir(dir).await;
    }
    let partial = format!("{to}.part");
    let mut remote = sftp
        .create(partial.as_str())
        .await
        .map_err(|error| format!("cannot create {partial}: {error}"))?;
    let mut local = tokio::fs::File::open(from)
        .await
        .map_err(|error| format!("cannot read {}: {error}", from.display()))?;
    let mut buffer = vec![0; 1 << 18];
    let mut sent = 0;
    loop {
        let read = local
            .read(&mut buffer)
            .await
            .map_err(|error| format!("cannot read {}: {error}", from.display()))?;
        if read == 0 {
            break;
        }
        remote
            .write_all(&buffer[..read])
            .await
            .map_err(|error| format!("writing {partial} failed: {error}"))?;
        sent += read as u64;
        progress(sent);
    }
    remote
        .shutdown()
        .await
        .map_err(|error| format!("writing {partial} failed: {error}"))?;
    let _ = sftp.remove_file(to).await;
    sftp.rename(partial.as_str(), to)
        .await
        .map_err(|error| format!("cannot rename {partial} to {to}: {error}"))?;
    let _ = sftp.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sftp_stream_starts_after_a_banner() {
        let version = [0, 0, 0, 5, 2, 0, 0, 0, 3];
        let mut stream = b"Welcome to web1\x1b[0m no newline".to_vec();
        let banner = stream.len();
        stream.extend_from_slice(&version);
        assert_eq!(sftp_start(&stream), Some(banner));
        assert_eq!(sftp_start(&version), Some(0));
        assert_eq!(sftp_start(b"just text, no packet yet"), None);
    }
}
