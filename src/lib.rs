//! deployr: deploys an application to many servers over SSH in two steps, so that the slow work
//! happens while the old release keeps serving and the switch takes milliseconds.
//!
//! The binary is a thin shell around [`cmd`]. Only what it calls is public (the command line,
//! the commands, the JSON events' last line, the errors' exit codes) and `ssh_config`, which
//! tests/ssh_config.rs compares with `ssh -G`. Everything else is private to the crate, so the
//! compiler reports code nothing uses.

mod artifact;
mod auth;
pub mod cli;
pub mod cmd;
mod connect_error;
mod connection;
mod deployfile;
mod diff;
pub mod error;
mod events;
mod executor;
mod history;
mod inventory;
mod known_hosts;
mod lines;
mod local;
mod mask;
mod owner;
mod passphrase;
mod plan;
mod refname;
mod release;
mod release_id;
mod remote;
pub mod report;
mod shell;
mod ssh;
pub mod ssh_config;
mod template;
mod transport;
