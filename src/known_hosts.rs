//! known_hosts as OpenSSH reads it: every user file, then the global files; host patterns with
//! `*`, `?` and `!`; hashed names; `[host]:port`; `@revoked` keys, refused whatever else is
//! recorded; `@cert-authority` keys, which vouch for host certificates (checked for signature,
//! validity, host type and principal). Parsing is ssh-key's; the matching rules are OpenSSH's
//! (hostfile.c, sshconnect.c).

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};

use crate::connect_error::ConnectError;
use crate::inventory::{HostKeyPolicy, SshSettings};
use crate::ssh_config::wildcard;

/// One known_hosts line that names the host being checked.
struct Found {
    file: PathBuf,
    line: usize,
    marker: Option<Marker>,
    key: PublicKey,
}

/// The lines of all of `settings`' known_hosts files that apply to its host.
struct Recorded {
    known_as: String,
    /// The name a host certificate must name as a principal (no port).
    principal: String,
    entries: Vec<Found>,
}

impl Recorded {
    fn read(settings: &SshSettings) -> Result<Recorded, ConnectError> {
        let known_as = settings.known_as();
        let mut entries = Vec::new();
        for file in settings
            .known_hosts_files
            .iter()
            .chain(&settings.global_known_hosts_files)
        {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(ConnectError::KnownHosts {
                        known_hosts: file.clone(),
                        reason: error.to_string(),
                    });
                }
            };
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // As OpenSSH does, a line it cannot read (an unknown key type) is skipped.
                let Ok(entry) = line.parse::<Entry>() else {
                    continue;
                };
                if names(entry.host_patterns(), &known_as) {
                    entries.push(Found {
                        file: file.clone(),
                        line: index + 1,
                        marker: entry.marker().copied(),
                        key: entry.public_key().clone(),
                    });
                }
            }
        }
        Ok(Recorded {
            principal: settings
                .host_key_alias
                .clone()
                .unwrap_or_else(|| settings.host_name.clone()),
            known_as,
            entries,
        })
    }

    fn revoked(&self, key: &PublicKey) -> Option<&Found> {
        self.entries
            .iter()
            .find(|e| e.marker == Some(Marker::Revoked) && e.key.key_data() == key.key_data())
    }

    fn plain(&self) -> impl Iterator<Item = &Found> {
        self.entries.iter().filter(|e| e.marker.is_none())
    }
}

/// Whether a line's host field names `known_as` (`host` or `[host]:port`).
fn names(patterns: &HostPatterns, known_as: &str) -> bool {
    match patterns {
        HostPatterns::Patterns(list) => {
            let name = known_as.to_ascii_lowercase();
            let mut matched = false;
            for pattern in list {
                match pattern.strip_prefix('!') {
                    Some(negated) if wildcard(&name, &negated.to_ascii_lowercase()) => {
                        return false;
                    }
                    Some(_) => {}
                    None => matched |= wildcard(&name, &pattern.to_ascii_lowercase()),
                }
            }
            matched
        }
        HostPatterns::HashedName { salt, hash } => hashed(salt, known_as) == *hash,
    }
}

fn hashed(salt: &[u8], name: &str) -> [u8; 20] {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).expect("HMAC takes any key");
    mac.update(name.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The host key algorithms to offer, OpenSSH's way: the types recorded for this host first
/// (unless `HostKeyAlgorithms` set an order of its own), then the rest of `HostKeyAlgorithms`;
/// and the certificate types, when an `@cert-authority` line covers the host.
pub fn algorithms(settings: &SshSettings) -> (Vec<Algorithm>, Vec<Algorithm>) {
    let supported = russh::Preferred::DEFAULT.key;
    let wanted: Vec<Algorithm> = settings
        .host_key_algorithms
        .iter()
        .filter(|name| !name.contains("-cert-"))
        .filter_map(|name| Algorithm::new(name).ok())
        .filter(|algorithm| supported.contains(algorithm))
        .collect();
    let Ok(recorded) = Recorded::read(settings) else {
        return (wanted, Vec::new());
    };
    let mut order = Vec::new();
    let preferred = recorded
        .plain()
        .filter(|_| settings.prefer_known_host_key_types);
    for found in preferred {
        let types = match found.key.algorithm() {
            Algorithm::Rsa { .. } => vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ],
            other => vec![other],
        };
        for algorithm in types {
            if wanted.contains(&algorithm) && !order.contains(&algorithm) {
                order.push(algorithm);
            }
        }
    }
    for algorithm in &wanted {
        if !order.contains(algorithm) {
            order.push(algorithm.clone());
        }
    }
    let has_ca = recorded
        .entries
        .iter()
        .any(|e| e.marker == Some(Marker::CertAuthority));
    let certificates = if has_ca {
        settings
            .host_key_algorithms
            .iter()
            .filter_map(|name| name.strip_suffix("-cert-v01@openssh.com"))
            .filter_map(|base| Algorithm::new(base).ok())
            .filter(|algorithm| supported.contains(algorithm))
            .collect()
    } else {
        Vec::new()
    };
    (order, certificates)
}

/// known_hosts is shared by every connection of the run; appends must not interleave.
static WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Accepts the server's key or certificate, or says exactly why not.
pub fn check(
    settings: &SshSettings,
    offered: &russh::keys::PublicKeyOrCertificate,
) -> Result<(), ConnectError> {
    let recorded = Recorded::read(settings)?;
    match offered {
        russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
            check_key(settings, &recorded, key)
        }
        russh::keys::PublicKeyOrCertificate::Certificate(certificate) => {
            check_certificate(settings, &recorded, certificate)
        }
    }
}

fn check_certificate(
    settings: &SshSettings,
    recorded: &Recorded,
    certificate: &Certificate,
) -> Result<(), ConnectError> {
    let key = PublicKey::from(certificate.public_key().clone());
    let ca = PublicKey::from(certificate.signature_key().clone());
    for revoked in [&key, &ca] {
        if let Some(found) = recorded.revoked(revoked) {
            return Err(revoked_error(recorded, revoked, found));
        }
    }
    let trusted = recorded
        .entries
        .iter()
        .any(|e| e.marker == Some(Marker::CertAuthority) && e.key.key_data() == ca.key_data());
    if !trusted {
        // OpenSSH then tries the certificate's key as a plain host key.
        return check_key(settings, recorded, &key);
    }
    let fingerprint = ca.fingerprint(HashAlg::Sha256);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let when = |seconds: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
        )
    };
    let reason = if !certificate.cert_type().is_host() {
        Some("it is a user certificate, not a host certificate".to_string())
    } else if now >= certificate.valid_before() {
        Some(format!(
            "it expired at {}",
            when(certificate.valid_before())
        ))
    } else if now < certificate.valid_after() {
        Some(format!(
            "it is not valid before {}",
            when(certificate.valid_after())
        ))
    } else if let Err(error) = certificate.validate([&fingerprint]) {
        Some(format!("its signature does not verify ({error})"))
    } else if !certificate.valid_principals().is_empty()
        && !certificate.valid_principals().contains(&recorded.principal)
    {
        Some(format!(
            "it is for {:?}, not for {}",
            certificate.valid_principals(),
            recorded.principal
        ))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(ConnectError::HostCertificate {
            known_as: recorded.known_as.clone(),
            ca: fingerprint.to_string(),
            reason,
        }),
    }
}

fn revoked_error(recorded: &Recorded, key: &PublicKey, found: &Found) -> ConnectError {
    ConnectError::RevokedHostKey {
        known_as: recorded.known_as.clone(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        line: found.line,
        known_hosts: found.file.clone(),
    }
}

fn check_key(
    settings: &SshSettings,
    recorded: &Recorded,
    key: &PublicKey,
) -> Result<(), ConnectError> {
    if let Some(found) = recorded.revoked(key) {
        return Err(revoked_error(recorded, key, found));
    }
    if recorded.plain().any(|e| e.key.key_data() == key.key_data()) {
        return Ok(());
    }
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let same_type = |e: &&Found| e.key.algorithm() == key.algorithm();
    if let Some(old) = recorded.plain().find(same_type) {
        return Err(ConnectError::HostKeyChanged {
            known_as: recorded.known_as.clone(),
            fingerprint,
            line: old.line,
            known_hosts: old.file.clone(),
        });
    }
    let learn_into = settings
        .known_hosts_files
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts"));
    match settings.host_keys {
        HostKeyPolicy::Strict => Err(ConnectError::UnknownHostKey {
            known_as: recorded.known_as.clone(),
            fingerprint,
            known_hosts: learn_into,
        }),
        HostKeyPolicy::AcceptNew => learn(
            &learn_into,
            &recorded.known_as,
            key,
            settings.hash_known_hosts,
        )
        .map_err(|error| ConnectError::KnownHosts {
            known_hosts: learn_into.clone(),
            reason: error.to_string(),
        }),
    }
}

/// Appends `known_as KEY` (its name hashed under `HashKnownHosts yes`), as OpenSSH writes it.
fn learn(file: &Path, known_as: &str, key: &PublicKey, hash: bool) -> std::io::Result<()> {
    let _guard = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let name = if hash {
        let mut salt = [0u8; 20];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut salt)?;
        HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash: hashed(&salt, known_as),
        }
        .to_string()
    } else {
        known_as.to_string()
    };
    let mut key = key.clone();
    key.set_comment("");
    let text = key
        .to_openssh()
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(out, "{name} {}", text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_types_go_first_unless_host_key_algorithms_sets_an_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            "web1 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOUkhULBnmB4KXSi7PBCu4FSJNb/BNum9raKh+RFPYdo4Ym5ek9LOUXpl7BoPk4aAHJZZiJKN42KQRtqvxDlEsI=\n",
        )
        .unwrap();
        let mut settings = SshSettings::direct("web1", "deploy");
        settings.known_hosts_files = vec![file];
        settings.host_key_algorithms = crate::ssh_config::DEFAULT_KEY_ALGORITHMS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ecdsa = Algorithm::new("ecdsa-sha2-nistp256").unwrap();
        let (order, certificates) = algorithms(&settings);
        assert_eq!(order[0], ecdsa);
        assert_eq!(order[1], Algorithm::Ed25519);
        assert!(certificates.is_empty());
        settings.prefer_known_host_key_types = false;
        assert_eq!(algorithms(&settings).0[0], Algorithm::Ed25519);
    }

    #[test]
    fn patterns_negation_and_hashes_name_hosts_as_openssh_does() {
        let list = |p: &str| HostPatterns::Patterns(p.split(',').map(str::to_string).collect());
        assert!(names(&list("*.example,!db.example"), "web.example"));
        assert!(!names(&list("*.example,!db.example"), "db.example"));
        assert!(names(&list("[10.0.0.?]:2222"), "[10.0.0.1]:2222"));
        assert!(!names(&list("10.0.0.1"), "[10.0.0.1]:2222"));
        let salt = [7u8; 20];
        let hashed_name = HostPatterns::HashedName {
            salt: salt.to_vec(),
            hash: hashed(&salt, "web1"),
        };
        assert!(names(&hashed_name, "web1"));
        assert!(!names(&hashed_name, "web2"));
    }
}
