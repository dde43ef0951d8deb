//! All integration tests, as one test binary (one link step on a small machine).

mod support;

mod activation;
mod bounds;
mod deployfile_errors;
mod example;
mod faults;
mod fleets;
mod local_steps;
mod locks;
mod output;
mod releases;
mod run;
mod ssh;
mod stages;
mod upload;
