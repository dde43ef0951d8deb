//! Who holds a deploy lock: the operator's login name, the machine, and the deployr process,
//! written into the lock's owner line; and whether the holder named in a lock is still running
//! on this machine, so that `deployr unlock` never breaks a live deploy by mistake.

use std::ffi::CStr;

/// `user@machine`: the login name from the password database (what `ssh` and `id -un` say,
/// whatever `$USER` claims or when it is unset), and this machine's name.
pub fn operator() -> String {
    format!("{}@{}", login_name(), machine())
}

/// This machine's name, as the kernel has it.
pub fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The login name of the user running deployr, from the password database; `$USER`, then the
/// numeric uid, where the database has no entry (a container with an arbitrary uid).
pub fn login_name() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to memory owned here, and `buffer.len()` is its real size.
    let status = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status == 0 && !found.is_null() && !entry.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in buffer.
        let name = unsafe { CStr::from_ptr(entry.pw_name) };
        if let Ok(name) = name.to_str()
            && !name.is_empty()
        {
            return name.to_string();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| uid.to_string())
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`): with
/// the pid, it names one process, where a pid alone may have been reused.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The owner line of this process's lock: who, where, which process, which command, since
/// when, and the token that lets this invocation release only its own lock.
pub fn lock_owner(command: &str, token: &str) -> String {
    let pid = std::process::id();
    format!(
        "{} pid={pid} start={} command={command} since={} token={token}",
        operator(),
        process_start(pid).unwrap_or_default(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// The owner line without the token, for messages.
pub fn without_token(owner: &str) -> String {
    owner
        .split_whitespace()
        .filter(|field| !field.starts_with("token="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the deployr that wrote `owner` is still running on this machine: the same machine
/// name, and a live process with the same pid and start time.
pub fn holder_alive_here(owner: &str) -> bool {
    let mut fields = owner.split_whitespace();
    let Some((_, holder_machine)) = fields.next().and_then(|who| who.rsplit_once('@')) else {
        return false;
    };
    if holder_machine != machine() {
        return false;
    }
    let field = |name: &str| {
        owner
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|value| value.parse::<u64>().ok())
    };
    match (field("pid="), field("start=")) {
        (Some(pid), Some(start)) => u32::try_from(pid)
            .ok()
            .and_then(process_start)
            .is_some_and(|now| now == start),
        // A lock written before start times were recorded: a live pid is enough to be careful.
        (Some(pid), None) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_holds_its_own_lock_and_a_dead_one_does_not() {
        let owner = lock_owner("deploy", "t1");
        assert!(holder_alive_here(&owner), "{owner}");
        let elsewhere = owner.replacen('@', "@not-", 1);
        assert!(!holder_alive_here(&elsewhere), "{elsewhere}");
        let restarted = owner.replace("start=", "start=1");
        assert!(!holder_alive_here(&restarted), "{restarted}");
    }

    #[test]
    fn the_login_name_comes_from_the_password_database() {
        let expected = std::process::Command::new("id")
            .arg("-un")
            .output()
            .expect("id");
        assert_eq!(
            login_name(),
            String::from_utf8_lossy(&expected.stdout).trim()
        );
    }

    #[test]
    fn messages_never_show_the_token() {
        assert_eq!(
            without_token("a@b pid=1 token=secret command=x"),
            "a@b pid=1 command=x"
        );
    }
}
