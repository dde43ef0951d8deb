//! Everything deployr runs on a host, and how it reads what comes back.

pub mod frame;
