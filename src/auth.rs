//! Public-key authentication in OpenSSH's order (sshconnect2.c, pubkey_prepare):
//! certificates first (`CertificateFile`s, then each identity file's `-cert.pub`), then the
//! agent's keys that are also identity files, then the agent's other keys and certificates
//! (not with `IdentitiesOnly`), then the identity files the agent does not hold. A `.pub`
//! identity file stands for its key in the agent. Every attempt is recorded so a failure can
//! say what was tried; a server that hangs up mid-way (MaxAuthTries) is named as such.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle, Handler};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use crate::connect_error::ConnectError;
use crate::inventory::SshSettings;

type Agent = AgentClient<tokio::net::UnixStream>;

/// One thing to offer the server.
enum Attempt {
    /// A key (from a file, or `None` when only the agent can sign with it).
    Key {
        public: PublicKey,
        private: Option<PathBuf>,
        in_agent: bool,
        label: String,
    },
    Certificate {
        certificate: Box<Certificate>,
        private: Option<PathBuf>,
        in_agent: bool,
        label: String,
    },
}

/// The public half of an identity file: `FILE.pub` beside it, the file itself when it is a
/// `.pub`, else the private key read without a passphrase.
fn public_of(path: &Path) -> Option<(PublicKey, Option<PathBuf>)> {
    if path.extension().is_some_and(|e| e == "pub") {
        let public = PublicKey::read_openssh_file(path).ok()?;
        let private = path.with_extension("");
        return Some((public, private.exists().then_some(private)));
    }
    if !path.exists() {
        return None;
    }
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    if let Ok(public) = PublicKey::read_openssh_file(Path::new(&pub_path)) {
        return Some((public, Some(path.to_path_buf())));
    }
    // The public half of an OpenSSH private key file is readable without its passphrase;
    // older formats (PEM, PKCS#8) are read whole, when they are not encrypted.
    let public = match PrivateKey::read_openssh_file(path) {
        Ok(private) => private.public_key().clone(),
        Err(_) => russh::keys::load_secret_key(path, None)
            .ok()?
            .public_key()
            .clone(),
    };
    Some((public, Some(path.to_path_buf())))
}

/// Asks, on a terminal, for the passphrases of the encrypted identity files no agent holds,
/// before the connection (and its timeout) starts.
pub async fn unlock(settings: &SshSettings) {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return;
    }
    let encrypted: Vec<(PathBuf, PublicKey)> = settings
        .identity_files
        .iter()
        .filter_map(|path| {
            let (public, private) = public_of(path)?;
            let private = private?;
            let key = PrivateKey::read_openssh_file(&private).ok()?;
            key.is_encrypted().then_some((private, public))
        })
        .collect();
    if encrypted.is_empty() {
        return;
    }
    let mut held = Vec::new();
    if let Some(socket) = &settings.agent
        && let Ok(mut agent) = AgentClient::connect_uds(socket).await
        && let Ok(identities) = agent.request_identities().await
    {
        held = identities;
    }
    for (path, public) in encrypted {
        let in_agent = held.iter().any(|identity| {
            matches!(identity, AgentIdentity::PublicKey { key, .. } if same_key(key, &public))
        });
        if !in_agent {
            let _ = tokio::task::spawn_blocking(move || crate::passphrase::ask(&path)).await;
        }
    }
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

pub async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    settings: &SshSettings,
) -> Result<(), ConnectError> {
    let user = settings.user.as_str();
    let mut tried = Vec::new();
    let (mut agent, agent_identities) = match &settings.agent {
        None => (None, Vec::new()),
        Some(socket) => match AgentClient::connect_uds(socket).await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(identities) => (Some(agent), identities),
                Err(error) => {
                    tried.push(format!("ssh-agent (cannot list keys: {error})"));
                    (None, Vec::new())
                }
            },
            Err(error) => {
                tried.push(format!(
                    "ssh-agent at {} (cannot connect: {error})",
                    socket.display()
                ));
                (None, Vec::new())
            }
        },
    };
    let agent_keys: Vec<&PublicKey> = agent_identities
        .iter()
        .filter_map(|identity| match identity {
            AgentIdentity::PublicKey { key, .. } => Some(key),
            AgentIdentity::Certificate { .. } => None,
        })
        .collect();
    let in_agent = |key: &PublicKey| agent_keys.iter().any(|k| same_key(k, key));
    let files: Vec<(PathBuf, PublicKey, Option<PathBuf>)> = settings
        .identity_files
        .iter()
        .filter_map(|path| public_of(path).map(|(public, private)| (path.clone(), public, private)))
        .collect();
    let mut attempts = Vec::new();
    // 1. Certificates named in the configuration, then those beside identity files.
    let beside = files.iter().filter_map(|(path, _, _)| {
        let base = path.to_string_lossy();
        let base = base.strip_suffix(".pub").unwrap_or(&base);
        Some(PathBuf::from(format!("{base}-cert.pub"))).filter(|p| p.exists())
    });
    let certificate_paths: Vec<PathBuf> = settings
        .certificate_files
        .iter()
        .cloned()
        .chain(beside)
        .collect();
    for path in certificate_paths {
        let certificate = match Certificate::read_file(&path) {
            Ok(certificate) => certificate,
            Err(error) => {
                tried.push(format!(
                    "certificate {} (unreadable: {error})",
                    path.display()
                ));
                continue;
            }
        };
        let key = PublicKey::from(certificate.public_key().clone());
        let private = files
            .iter()
            .find(|(_, public, _)| same_key(public, &key))
            .and_then(|(_, _, private)| private.clone());
        if private.is_none() && !in_agent(&key) {
            tried.push(format!(
                "certificate {} (neither an identity file nor the agent holds its key)",
                path.display()
            ));
            continue;
        }
        attempts.push(Attempt::Certificate {
            in_agent: in_agent(&key),
            certificate: Box::new(certificate),
            private,
            label: format!("certificate {}", path.display()),
        });
    }
    // 2. and 3. The agent's keys: those that are identity files first.
    let is_file = |key: &PublicKey| files.iter().any(|(_, public, _)| same_key(public, key));
    for identity in &agent_identities {
        if let AgentIdentity::PublicKey { key, .. } = identity
            && is_file(key)
        {
            let path = files
                .iter()
                .find(|(_, p, _)| same_key(p, key))
                .expect("is a file");
            attempts.push(Attempt::Key {
                public: key.clone(),
                private: None,
                in_agent: true,
                label: format!("ssh-agent's copy of {}", path.0.display()),
            });
        }
    }
    for identity in &agent_identities {
        match identity {
            AgentIdentity::PublicKey { key, .. } if !is_file(key) && !settings.identities_only => {
                attempts.push(Attempt::Key {
                    label: format!("ssh-agent key {}", key.fingerprint(HashAlg::Sha256)),
                    public: key.clone(),
                    private: None,
                    in_agent: true,
                });
            }
            AgentIdentity::Certificate { certificate, .. } => {
                let key = PublicKey::from(certificate.public_key().clone());
                if settings.identities_only && !is_file(&key) {
                    continue;
                }
                attempts.push(Attempt::Certificate {
                    label: format!("ssh-agent certificate {}", certificate.key_id()),
                    certificate: Box::new(certificate.clone()),
                    private: None,
                    in_agent: true,
                });
            }
            AgentIdentity::PublicKey { .. } => {}
        }
    }
    // 4. Identity files the agent does not hold.
    for (path, public, private) in &files {
        if in_agent(public) {
            continue;
        }
        match private {
            Some(private) => attempts.push(Attempt::Key {
                public: public.clone(),
                private: Some(private.clone()),
                in_agent: false,
                label: format!("key {}", path.display()),
            }),
            None => tried.push(format!(
                "key {} (its private half is not beside it and the agent does not hold it)",
                path.display()
            )),
        }
    }
    // PubkeyAcceptedAlgorithms: keys and certificates of other types are not offered.
    let attempts = attempts.into_iter().filter(|attempt| {
        let (name, label) = match attempt {
            Attempt::Key { public, label, .. } => (public.algorithm().to_string(), label),
            Attempt::Certificate {
                certificate, label, ..
            } => (certificate.algorithm().to_certificate_type(), label),
        };
        let accepted = accepted(&settings.pubkey_algorithms, &name);
        if !accepted {
            tried.push(format!(
                "{label} (not offered: {name} is not in PubkeyAcceptedAlgorithms)"
            ));
        }
        accepted
    });
    let attempts: Vec<Attempt> = attempts.collect();
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|error| ConnectError::Protocol(error.to_string()))?
        .flatten();
    for (index, attempt) in attempts.into_iter().enumerate() {
        let (label, result) = offer(handle, user, attempt, agent.as_mut(), rsa_hash).await;
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push(label),
            Err(_) if handle.is_closed() => {
                // The attempts before this one are those the server counted.
                return Err(ConnectError::AuthDisconnected {
                    user: user.to_string(),
                    attempts: index,
                    tried,
                });
            }
            Err(reason) => tried.push(format!("{label} ({reason})")),
        }
    }
    if tried.is_empty() {
        tried.push("nothing: no identity file, no ssh-agent and no ~/.ssh/id_* key".into());
    }
    Err(ConnectError::Auth {
        user: user.to_string(),
        tried,
    })
}

/// Offers one key or certificate; `Ok(false)` when the server refuses it, with the label
/// saying why.
async fn offer<H: Handler>(
    handle: &mut Handle<H>,
    user: &str,
    attempt: Attempt,
    agent: Option<&mut Agent>,
    rsa_hash: Option<HashAlg>,
) -> (String, Result<bool, String>) {
    let hash_for = |key: &PublicKey| {
        if key.algorithm().is_rsa() {
            rsa_hash
        } else {
            None
        }
    };
    let rejected = |label: String| format!("{label} (rejected by the server)");
    match attempt {
        Attempt::Key {
            public,
            private,
            in_agent,
            label,
        } => {
            let result = match (in_agent, agent, private) {
                (true, Some(agent), _) => {
                    let hash = hash_for(&public);
                    handle
                        .authenticate_publickey_with(user, public, hash, agent)
                        .await
                        .map_err(|e| e.to_string())
                }
                (_, _, Some(path)) => match load(&path) {
                    Ok(key) => {
                        let hash = hash_for(&public);
                        handle
                            .authenticate_publickey(
                                user,
                                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                            )
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(reason) => return (format!("{label} ({reason})"), Ok(false)),
                },
                _ => return (format!("{label} (no private key)"), Ok(false)),
            };
            verdict(label, result, rejected)
        }
        Attempt::Certificate {
            certificate,
            private,
            in_agent,
            label,
        } => {
            let key = PublicKey::from(certificate.public_key().clone());
            let result = match (in_agent, agent, private) {
                (true, Some(agent), _) => handle
                    .authenticate_certificate_with(user, *certificate, hash_for(&key), agent)
                    .await
                    .map_err(|e| e.to_string()),
                (_, _, Some(path)) => match load(&path) {
                    Ok(private) => handle
                        .authenticate_openssh_cert(user, Arc::new(private), *certificate)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(reason) => return (format!("{label} ({reason})"), Ok(false)),
                },
                _ => return (format!("{label} (no private key)"), Ok(false)),
            };
            verdict(label, result, rejected)
        }
    }
}

fn verdict(
    label: String,
    result: Result<AuthResult, String>,
    rejected: impl Fn(String) -> String,
) -> (String, Result<bool, String>) {
    match result {
        Ok(AuthResult::Success) => (label, Ok(true)),
        Ok(AuthResult::Failure { .. }) => (rejected(label), Ok(false)),
        Err(reason) => (label, Err(reason)),
    }
}

fn load(path: &Path) -> Result<PrivateKey, String> {
    let passphrase = crate::passphrase::known(path);
    match russh::keys::load_secret_key(path, passphrase.as_deref()) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(
            "passphrase-protected: add it to ssh-agent, or run deployr on a terminal to be asked"
                .into(),
        ),
        Err(error) => Err(format!("unreadable: {error}")),
    }
}

/// Whether a key or certificate type may be offered; an RSA key (`ssh-rsa`) goes when any of
/// its signature algorithms does. An empty list (no configuration at all) accepts everything.
fn accepted(list: &[String], name: &str) -> bool {
    if list.is_empty() {
        return true;
    }
    let rsa =
        |n: &str| n.contains("rsa-sha2-") || n == "ssh-rsa" || n == "ssh-rsa-cert-v01@openssh.com";
    if name == "ssh-rsa" || name == "ssh-rsa-cert-v01@openssh.com" {
        let certificate = name.contains("-cert-");
        return list
            .iter()
            .any(|n| rsa(n) && n.contains("-cert-") == certificate);
    }
    list.iter().any(|n| n == name)
}
