//! Passphrases of encrypted identity files, asked on the terminal as `ssh` asks them: once per
//! key for the whole run, before the connection's timeout starts, and only when no agent holds
//! the key. Without a terminal (cron, CI) nothing is asked and the key is reported as
//! passphrase-protected.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What was answered for each key (`None`: nothing usable); the lock also keeps two hosts'
/// prompts from interleaving.
static ANSWERS: Mutex<Option<HashMap<PathBuf, Option<String>>>> = Mutex::new(None);

/// The passphrase given for `path` earlier in this run.
pub fn known(path: &Path) -> Option<String> {
    let answers = ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
    answers.as_ref()?.get(path).cloned().flatten()
}

/// Asks for `path`'s passphrase on the terminal (once per run), when there is one.
pub fn ask(path: &Path) {
    if !std::io::stdin().is_terminal() {
        return;
    }
    let mut answers = ANSWERS.lock().unwrap_or_else(|e| e.into_inner());
    let answers = answers.get_or_insert_with(HashMap::new);
    if answers.contains_key(path) {
        return;
    }
    let answer = prompt(&format!("Enter passphrase for key '{}': ", path.display()))
        .filter(|answer| russh::keys::load_secret_key(path, Some(answer)).is_ok());
    answers.insert(path.to_path_buf(), answer);
}

/// Reads one line from `/dev/tty` with echo off.
fn prompt(text: &str) -> Option<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr on a descriptor we own.
    let saved = unsafe {
        let mut termios = std::mem::zeroed::<libc::termios>();
        if libc::tcgetattr(fd, &mut termios) != 0 {
            return None;
        }
        let mut quiet = termios;
        quiet.c_lflag &= !libc::ECHO;
        libc::tcsetattr(fd, libc::TCSANOW, &quiet);
        termios
    };
    let _ = tty.write_all(text.as_bytes());
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    // SAFETY: restores the settings read above on the same descriptor.
    unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, &saved);
    }
    let _ = tty.write_all(b"\n");
    read.ok()?;
    Some(line.trim_end_matches(['\n', '\r']).to_string())
}
