//! All integration tests, as one test binary (one link step on a small machine).

mod support;

mod deployfile_errors;
mod example;
mod faults;
mod local_steps;
mod output;
mod releases;
mod run;
mod ssh;
mod ssh_config;
mod ssh_connect;
mod stages;
mod upload;
