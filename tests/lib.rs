//! All integration tests, as one test binary (one link step on a small machine).

mod support;

mod activation;
mod bounds;
mod containment;
mod deployfile_errors;
mod diff;
mod dist;
mod dry_run;
mod example;
mod faults;
mod fleets;
mod history;
mod local_steps;
mod locks;
mod output;
mod releases;
mod remote;
mod run;
mod secrets;
mod ssh;
mod ssh_config;
mod ssh_connect;
mod stages;
mod upload;
