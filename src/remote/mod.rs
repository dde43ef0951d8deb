//! Everything deployr runs on a host, in one place: the scripts of deployr's own steps, the
//! wrapper around the deployfile's commands, what the scripts print and how it is read back,
//! the protocol words ([`protocol`]), and how deployr's shell on a host is started and runs one
//! step after another ([`frame`]). `plan` builds steps from these functions; nothing
//! else in deployr writes shell. Values reach these scripts only through [`crate::shell`].
//!
//! deployr's own scripts run in `/bin/sh` (dash on Debian), whatever the login shell, so they
//! are POSIX sh: no bashisms, and every glob that may match nothing is checked
//! (`[ -e "$f" ] || continue`). The deployfile's commands run in the user's login shell
//! (`"${SHELL:-/bin/sh}" -c COMMAND`), as Fabric's `run()` does ([`command`]).
//!
//! The layout on every host:
//!
//! ```text
//! {deploy_to}/
//!   repo/                      bare mirror of the git repo, fetched incrementally
//!   releases/20261124T154100Z/ one directory per release, with a REVISION file
//!   shared/                    shared_dirs and shared_files, linked into each release
//!   current -> releases/...    switched by rename(2), never unlinked first
//!   .deployr/prepared          the release the last prepare finished (release, commit, ref, time)
//!   .deployr/ready/<id>        one empty file per release whose prepare succeeded on this host
//!   .deployr/activating        the journal of an activation between its switch and its finish
//!   .deployr/switch/current    the new `current` link while a switch is armed
//!   .deployr/lock              the deploy lock: a symlink whose target is the owner line
//!   .deployr/history           one JSON record per command that changed the host
//!   .deployr/artifacts/        the last uploaded artifact (`strategy = "upload"`)
//! ```
//!
//! The upload strategy runs two of these scripts on this machine instead (its mirror and the
//! build's export), so they live here too.

pub mod check;
pub mod code;
pub mod command;
pub mod diff;
pub mod fetch;
pub mod finish;
pub mod frame;
pub mod gate;
mod history;
pub mod lock;
pub mod prepared;
pub mod protocol;
mod shared;
pub mod stand_in;
pub mod state;
pub mod switch;

#[cfg(test)]
mod tests;
