//! The words that deployr and its scripts on a host say to each other. Both sides use these
//! constants, so a word changed here changes on both.

/// The line an armed script prints once it is ready for [`GO`].
pub const ARMED: &str = "armed";
/// Sent to an armed script: act now.
pub const GO: &str = "go";
/// The line an armed script prints once it has acted; it then waits for [`DONE`].
pub const SWITCHED: &str = "switched";
/// Sent to a script that has acted: check and exit.
pub const DONE: &str = "done";
/// The line a deployfile command's login shell prints, on stdout and on stderr, once its
/// start-up files have run and the command begins: what came before is no output of the step.
/// Not a secret: a start-up file that prints it only gets its own output shown.
pub const BEGINS: &str = "deployr-command-begins";
/// Sent to an armed script to call it off (anything but [`GO`] does; this is what deployr sends).
pub const STOP: &str = "stop";

/// The `key=value` lines of the state script (`remote::state`), read by
/// `remote::state::parse`.
pub mod state {
    /// Where `current` points.
    pub const CURRENT: &str = "current";
    /// `current` is a real directory.
    pub const CURRENT_DIRECTORY: &str = "current_directory";
    /// Prefixes each line of `.deployr/prepared` (see [`super::prepared`]).
    pub const PREPARED_PREFIX: &str = "prepared_";
    /// `ID COMMIT`: a release directory and the commit in its REVISION file.
    pub const RELEASE: &str = "release";
    /// One line of `.deployr/history`.
    pub const HISTORY: &str = "history";
    /// The owner line of the deploy lock.
    pub const LOCK: &str = "lock";
    /// What is at the lock's path when no deployr wrote it whole.
    pub const LOCK_MALFORMED: &str = "lock_malformed";
    /// This script took the lock.
    pub const LOCK_TAKEN: &str = "lock_taken";
    /// Why the lock could not be taken although nobody holds it.
    pub const LOCK_ERROR: &str = "lock_error";
    /// The checksum of an uploaded artifact kept on the host.
    pub const ARTIFACT: &str = "artifact";
    /// A release whose prepare succeeded on the host.
    pub const READY: &str = "ready";
    /// Prefixes each line of `.deployr/activating` (see [`super::journal`]).
    pub const ACTIVATING_PREFIX: &str = "activating_";
}

/// The `key=value` lines of `.deployr/prepared`.
pub mod prepared {
    pub const RELEASE: &str = "release";
    pub const COMMIT: &str = "commit";
    pub const REF: &str = "ref";
    pub const TIME: &str = "time";
}

/// The `key=value` lines of `.deployr/activating`, the journal of an activation.
pub mod journal {
    pub const RELEASE: &str = "release";
    pub const PREVIOUS: &str = "previous";
}

/// The `key=value` lines of the `check` probe (`remote::check`).
pub mod probe {
    /// Whether `deploy_to` is there and writable.
    pub const DEPLOY_TO: &str = "deploy_to";
    /// The programs prepare needs, or which of them are missing.
    pub const TOOLS: &str = "tools";
}
