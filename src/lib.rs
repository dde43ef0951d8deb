//! deployr: deploys an application to many servers over SSH in two steps, so that the slow work
//! happens while the old release keeps serving and the switch takes milliseconds.
//!
//! The binary is a thin shell around [`cmd`]; everything is here so that tests can call it.

pub mod artifact;
pub mod auth;
pub mod cli;
pub mod cmd;
pub mod deployfile;
pub mod diff;
pub mod error;
pub mod events;
pub mod history;
pub mod inventory;
pub mod known_hosts;
pub mod lines;
pub mod local;
pub mod owner;
pub mod passphrase;
pub mod plan;
pub mod refname;
pub mod release;
pub mod remote;
pub mod report;
pub mod run;
pub mod shell;
pub mod ssh;
pub mod ssh_config;
pub mod template;
pub mod transport;
