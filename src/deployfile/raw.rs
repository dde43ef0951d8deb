//! Serde structs that mirror the TOML exactly. Nothing outside `deployfile` sees them: they are
//! validated once into the resolved types of `deployfile`, so every later stage can trust its input.
//!
//! Every struct denies unknown keys, so a misspelt key is an error (with a suggestion) rather than
//! a setting that silently does nothing.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployfile {
    pub app: S<RawApp>,
    pub source: Option<S<RawSource>>,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub env: Ordered<S<RawEnvValue>>,
    #[serde(default)]
    pub vars: Ordered<S<String>>,
    #[serde(default)]
    pub hosts: Ordered<S<RawHost>>,
    #[serde(default)]
    pub check: Vec<S<RawStep>>,
    #[serde(default)]
    pub prepare: Vec<S<RawStep>>,
    #[serde(default)]
    pub activate: Vec<S<RawStep>>,
    pub healthcheck: Option<S<RawHealthcheck>>,
    #[serde(default)]
    pub tasks: Ordered<S<RawTask>>,
    #[serde(default)]
    pub on_success: Vec<S<RawStep>>,
    #[serde(default)]
    pub on_failure: Vec<S<RawStep>>,
    /// Never filled: `stage::select` takes `[stages]` out first. Named here so that a misspelt
    /// `[stage.production]` is answered with "did you mean `stages`?".
    #[serde(rename = "stages")]
    pub _stages: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: S<String>,
    pub deploy_to: S<String>,
    pub keep_releases: Option<S<i64>>,
    #[serde(default)]
    pub shared_dirs: Vec<S<String>>,
    #[serde(default)]
    pub shared_files: Vec<S<String>>,
    #[serde(default)]
    pub watch: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub repo: S<String>,
    #[serde(rename = "ref")]
    pub reference: Option<S<String>>,
    pub repo_tree: Option<S<String>>,
    pub strategy: Option<S<String>>,
    pub build: Option<S<String>>,
    pub artifact: Option<S<String>>,
}

/// The `[ssh]` keys, which a host may also set for itself.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub identity_file: Option<S<String>>,
    pub known_hosts: Option<S<String>>,
    pub known_hosts_file: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub keepalive_interval: Option<S<String>>,
    pub keepalive_max: Option<S<i64>>,
    pub jump: Option<S<String>>,
    pub forward_agent: Option<S<bool>>,
    pub concurrency: Option<S<i64>>,
    pub housekeeping_timeout: Option<S<String>>,
    pub connect_rate: Option<S<i64>>,
    pub connect_attempts: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub address: S<String>,
    #[serde(default)]
    pub roles: Vec<S<String>>,
    pub deploy_to: Option<S<String>>,
    #[serde(default)]
    pub vars: Ordered<S<String>>,
    pub user: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub identity_file: Option<S<String>>,
    pub known_hosts: Option<S<String>>,
    pub known_hosts_file: Option<S<String>>,
    pub connect_timeout: Option<S<String>>,
    pub keepalive_interval: Option<S<String>>,
    pub keepalive_max: Option<S<i64>>,
    pub jump: Option<S<String>>,
    pub forward_agent: Option<S<bool>>,
}

impl RawHost {
    /// The host's own `[ssh]` keys, layered over the global ones by the caller.
    pub fn ssh(&self) -> RawSsh {
        RawSsh {
            user: self.user.clone(),
            port: self.port.clone(),
            identity_file: self.identity_file.clone(),
            known_hosts: self.known_hosts.clone(),
            known_hosts_file: self.known_hosts_file.clone(),
            connect_timeout: self.connect_timeout.clone(),
            keepalive_interval: self.keepalive_interval.clone(),
            keepalive_max: self.keepalive_max.clone(),
            jump: self.jump.clone(),
            forward_agent: self.forward_agent.clone(),
            concurrency: None,
            housekeeping_timeout: None,
            connect_rate: None,
            connect_attempts: None,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum RawEnvValue {
    Plain(String),
    Table(RawEnvTable),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawEnvTable {
    pub value: Option<String>,
    pub from_env: Option<String>,
    /// Unset: a `value` is not secret, a value `from_env` is.
    pub secret: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: Option<S<String>>,
    pub run: Option<S<String>>,
    pub switch: Option<S<bool>>,
    pub roles: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub once: bool,
    pub timeout: Option<S<String>>,
    pub concurrency: Option<S<i64>>,
    pub local: Option<S<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthcheck {
    pub run: S<String>,
    pub roles: Option<S<Vec<S<String>>>>,
    pub attempts: Option<S<i64>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    pub description: Option<String>,
    pub run: S<String>,
    pub roles: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub once: bool,
    #[serde(default)]
    pub lock: bool,
    pub timeout: Option<S<String>>,
    pub concurrency: Option<S<i64>>,
    pub local: Option<S<bool>>,
}

/// A TOML table whose entries keep the order of the file, because "the first listed host" of a
/// role is what `once` means.
pub struct Ordered<V>(pub Vec<(S<String>, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry()? {
                    entries.push((key, value));
                }
                // toml hands tables over sorted by key; the keys' spans give back the file order.
                entries.sort_by_key(|(key, _): &(S<String>, V)| key.span().start);
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use crate::deployfile::Deployfile;

    #[test]
    fn tables_keep_the_order_of_the_file() {
        let text = "[app]\nname = \"a\"\ndeploy_to = \"/srv/a\"\n\n\
                    [hosts.zeta]\naddress = \"local\"\n[hosts.alpha]\naddress = \"local\"\n\n\
                    [tasks.second]\nrun = \"true\"\n[tasks.first]\nrun = \"true\"\n";
        let deployfile =
            Deployfile::parse(std::path::Path::new("deployfile.toml"), text, None).unwrap();
        let hosts: Vec<&str> = deployfile.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(hosts, ["zeta", "alpha"]);
        let tasks: Vec<&str> = deployfile
            .tasks
            .iter()
            .map(|t| t.step.name.as_str())
            .collect();
        assert_eq!(tasks, ["second", "first"]);
    }
}
