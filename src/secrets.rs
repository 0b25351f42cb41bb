//! Named secrets, each bound to the hosts it may be sent to.
//!
//! Specs name secrets (`webhook_secret: mattermost-deploys`, `auth:
//! {bearer_secret: vm-read}`, `token_secret: consul-prod`); only the server
//! holds their values, in environment variables. The decision a newcomer
//! must know: **a secret is bound to its destinations, not just to its
//! variable.** Anyone who may send a spec chooses the URL a secret would be
//! sent to, so the server policy's `secrets` says, for every name, the
//! variable *and* the `host:port`s (and the scheme) it may travel to:
//!
//! ```yaml
//! secrets:
//!   consul-prod: {env: CONSUL_TOKEN, hosts: ["consul.internal:8500"], scheme: https}
//! ```
//!
//! A name without a binding is usable nowhere, and every check here runs
//! before any connection is made. Errors name the secret and the host,
//! never the value. For a webhook the value *is* the URL, so the URL read
//! from the environment must itself point at a bound host.
//!
//! [`Secrets::check_destination`] is pure (the policy check and
//! `muhurat validate --policy` use it); [`Secrets::value_for`] and
//! [`Secrets::webhook_url`] also read the environment.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The scheme a secret may travel over (`https` unless the binding says
/// `http`, e.g. for a metrics store on loopback).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    #[default]
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One `host:port` a secret may be sent to (host lower case, no globs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BoundHost {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BoundHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl BoundHost {
    /// `host:port` or `[v6]:port`. Exact names only: a glob would let a
    /// secret follow a pattern to hosts nobody listed.
    pub fn parse(text: &str) -> Result<BoundHost, String> {
        let t = text.trim();
        if t.contains("://") || t.contains('/') {
            return Err(format!(
                "`{t}` looks like a URL; write host:port (the scheme is the binding's `scheme`)"
            ));
        }
        if t.contains(['*', '?']) {
            return Err(format!(
                "`{t}`: secrets are bound to exact hosts, not patterns; list every host:port"
            ));
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{t}`: an IPv6 address needs its closing `]`"))?;
            let p = after
                .strip_prefix(':')
                .ok_or_else(|| format!("`{t}`: write [addr]:port"))?;
            (h, p)
        } else {
            match t.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!(
                        "`{t}`: write IPv6 addresses in brackets, [::1]:8428"
                    ));
                }
                Some((h, p)) => (h, p),
                None => {
                    return Err(format!(
                        "`{t}` has no port; write host:port (e.g. consul.internal:8500)"
                    ));
                }
            }
        };
        if host.is_empty() {
            return Err(format!("`{t}` has no host"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{t}`: port `{port}` is not 1-65535"))?;
        Ok(BoundHost {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Where one secret comes from and where it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The environment variable holding the value.
    pub env: String,
    pub scheme: Scheme,
    pub hosts: Vec<BoundHost>,
}

impl Binding {
    fn describe(&self) -> String {
        if self.hosts.is_empty() {
            return "no host".into();
        }
        self.hosts
            .iter()
            .map(|h| format!("{}://{h}", self.scheme.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A binding as written in the policy. The old short form `name: VAR` (a
/// variable and no hosts) is refused with the new form in the message:
/// it could only ever mean "send it anywhere".
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RawBinding {
    pub env: String,
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBindingFields {
    env: String,
    hosts: Vec<String>,
    #[serde(default)]
    scheme: Option<Scheme>,
}

impl<'de> Deserialize<'de> for RawBinding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawBinding;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("{env: VAR, hosts: [\"host:port\"], scheme: https|http}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawBinding, E> {
                Err(E::custom(format!(
                    "a secret must be bound to the hosts it may be sent to: write {{env: {v}, hosts: [\"host:port\"]}} (scheme https unless you add scheme: http)"
                )))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawBinding, A::Error> {
                let f =
                    RawBindingFields::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(RawBinding {
                    env: f.env,
                    hosts: f.hosts,
                    scheme: f.scheme,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Validate one raw binding: every problem, as (key suffix, message, fix).
pub fn validate_binding(raw: &RawBinding) -> Result<Binding, Vec<(String, String, String)>> {
    let mut problems = Vec::new();
    let ok_var = raw
        .env
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && raw
            .env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_var {
        problems.push((
            "env".to_string(),
            format!("`{}` is not an environment variable name", raw.env),
            "write a name such as MATTERMOST_WEBHOOK_URL (letters, digits, _)".to_string(),
        ));
    }
    let mut hosts = Vec::new();
    for (i, h) in raw.hosts.iter().enumerate() {
        match BoundHost::parse(h) {
            Ok(b) => hosts.push(b),
            Err(e) => problems.push((
                format!("hosts[{i}]"),
                e,
                "write host:port, e.g. consul.internal:8500".to_string(),
            )),
        }
    }
    if raw.hosts.is_empty() {
        problems.push((
            "hosts".to_string(),
            "no host: the secret could not be sent anywhere".to_string(),
            "list the host:port(s) it is for, e.g. [\"consul.internal:8500\"]".to_string(),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Binding {
        env: raw.env.clone(),
        scheme: raw.scheme.unwrap_or_default(),
        hosts,
    })
}

/// Why a secret may not be used. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secret `{name}` is not bound in the server policy, so it is usable nowhere; the operator binds it with policy.secrets.{name}: {{env: VAR, hosts: [\"host:port\"]}}"
    )]
    Unbound { name: String },
    #[error(
        "secret `{name}` may not be sent to {destination}: the server policy binds it to {bound} only (policy.secrets.{name}); refused before connecting"
    )]
    NotBound {
        name: String,
        destination: String,
        bound: String,
    },
    #[error("secret `{name}` cannot be sent to `{url}`: {why}")]
    BadUrl {
        name: String,
        url: String,
        why: String,
    },
    #[error(
        "secret `{name}` is not set: the server reads it from the environment variable {var}, which is missing or empty there; set {var} in the server's environment and restart it, or remove the secret from the spec"
    )]
    NotSet { name: String, var: String },
    #[error(
        "webhook secret `{name}` does not hold an http(s) URL (the value is not shown); set {var} to the webhook's URL"
    )]
    NotAUrl { name: String, var: String },
}

/// Every secret binding of the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    pub bindings: BTreeMap<String, Binding>,
}

/// (scheme, host, port) of an absolute http(s) URL, as reqwest will
/// connect to it (the `url` crate parses for both).
fn destination(url: &str) -> Result<(String, String, u16), String> {
    let u = url::Url::parse(url.trim()).map_err(|e| format!("not a URL ({e})"))?;
    let scheme = u.scheme().to_string();
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme `{scheme}` is not http or https"));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err("no host".into()),
    };
    let port = u
        .port_or_known_default()
        .ok_or_else(|| "no port".to_string())?;
    Ok((scheme, host, port))
}

impl Secrets {
    /// A single binding (tests and small set-ups); a host that is not
    /// `host:port` is an error naming it.
    pub fn one(name: &str, env: &str, scheme: Scheme, hosts: &[&str]) -> Result<Secrets, String> {
        let mut s = Secrets::default();
        s.bindings.insert(
            name.to_string(),
            Binding {
                env: env.to_string(),
                scheme,
                hosts: hosts
                    .iter()
                    .map(|h| BoundHost::parse(h).map_err(|e| format!("secret `{name}`: {e}")))
                    .collect::<Result<_, _>>()?,
            },
        );
        Ok(s)
    }

    pub fn binding(&self, name: &str) -> Result<&Binding, SecretError> {
        self.bindings.get(name).ok_or_else(|| SecretError::Unbound {
            name: name.to_string(),
        })
    }

    /// May secret `name` be sent to `url`? Pure: no environment, no network.
    pub fn check_destination(&self, name: &str, url: &str) -> Result<(), SecretError> {
        let b = self.binding(name)?;
        let (scheme, host, port) = destination(url).map_err(|why| SecretError::BadUrl {
            name: name.to_string(),
            url: url.to_string(),
            why,
        })?;
        let ok =
            scheme == b.scheme.as_str() && b.hosts.iter().any(|h| h.host == host && h.port == port);
        if ok {
            Ok(())
        } else {
            let shown = BoundHost { host, port };
            Err(SecretError::NotBound {
                name: name.to_string(),
                destination: format!("{scheme}://{shown}"),
                bound: b.describe(),
            })
        }
    }

    fn read(&self, name: &str) -> Result<String, SecretError> {
        let b = self.binding(name)?;
        match std::env::var(&b.env) {
            Ok(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(SecretError::NotSet {
                name: name.to_string(),
                var: b.env.clone(),
            }),
        }
    }

    /// The value of `name`, for sending to `url` — only if `url` is a bound
    /// destination (checked first: an unbound destination never learns
    /// whether the secret is even set).
    pub fn value_for(&self, name: &str, url: &str) -> Result<String, SecretError> {
        self.check_destination(name, url)?;
        self.read(name)
    }

    /// A webhook secret's URL, only if it points at a bound host. The URL is
    /// the secret: errors never show it.
    pub fn webhook_url(&self, name: &str) -> Result<String, SecretError> {
        let b = self.binding(name)?;
        let url = self.read(name)?.trim().to_string();
        match self.check_destination(name, &url) {
            Ok(()) => Ok(url),
            Err(SecretError::BadUrl { .. }) => Err(SecretError::NotAUrl {
                name: name.to_string(),
                var: b.env.clone(),
            }),
            Err(SecretError::NotBound { bound, .. }) => {
                // The host of a webhook URL is not secret; its path is.
                let d = destination(&url)
                    .map(|(s, h, p)| format!("{s}://{}", BoundHost { host: h, port: p }))
                    .unwrap_or_else(|_| "another host".into());
                Err(SecretError::NotBound {
                    name: name.to_string(),
                    destination: d,
                    bound,
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consul() -> Secrets {
        Secrets::one(
            "consul-prod",
            "MUHURAT_TEST_SECRETS_CONSUL",
            Scheme::Https,
            &["consul.internal:8500"],
        )
        .unwrap()
    }

    #[test]
    fn a_secret_goes_only_to_its_bound_hosts_over_its_scheme() {
        let s = consul();
        assert_eq!(
            s.check_destination("consul-prod", "https://consul.internal:8500"),
            Ok(())
        );
        assert_eq!(
            s.check_destination("consul-prod", "https://CONSUL.internal:8500/v1/kv"),
            Ok(())
        );
        for bad in [
            "http://consul.internal:8500",
            "https://consul.internal:8501",
            "https://evil.example:8500",
            "https://consul.internal.evil.example:8500",
            "https://consul.internal:8500@evil.example:8500",
        ] {
            let e = s
                .check_destination("consul-prod", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("consul-prod") && e.contains("refused before connecting"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn without_a_binding_no_secret_is_usable() {
        let e = Secrets::default()
            .value_for("vm-read", "http://127.0.0.1:8428")
            .unwrap_err();
        assert!(matches!(e, SecretError::Unbound { .. }), "{e}");
        assert!(e.to_string().contains("policy.secrets.vm-read"), "{e}");
    }

    #[test]
    fn an_unbound_destination_never_reads_the_environment() {
        // The variable is unset: the refusal is about the host, so a probe
        // cannot even learn whether the secret is configured.
        let e = consul()
            .value_for("consul-prod", "https://evil.example:443")
            .unwrap_err();
        assert!(matches!(e, SecretError::NotBound { .. }), "{e}");
    }

    #[test]
    fn short_form_and_bad_hosts_are_refused_with_the_fix() {
        let e = serde_yaml_ng::from_str::<RawBinding>("CONSUL_TOKEN")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hosts"), "{e}");
        let raw: RawBinding =
            serde_yaml_ng::from_str("{env: X, hosts: [\"*.internal:1\", \"h\", \"http://h:1\"]}")
                .unwrap();
        let p = validate_binding(&raw).unwrap_err();
        assert_eq!(p.len(), 3, "{p:?}");
        let raw: RawBinding = serde_yaml_ng::from_str("{env: X, hosts: []}").unwrap();
        assert_eq!(validate_binding(&raw).unwrap_err()[0].0, "hosts");
    }

    #[test]
    fn ipv6_bindings() {
        let s = Secrets::one("vm", "V", Scheme::Http, &["[::1]:8428"]).unwrap();
        assert_eq!(s.check_destination("vm", "http://[::1]:8428"), Ok(()));
        assert!(s.check_destination("vm", "http://127.0.0.1:8428").is_err());
    }
}
