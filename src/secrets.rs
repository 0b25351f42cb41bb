//! Named secrets. Specs name secrets (`webhook_secret: mattermost-deploys`,
//! `auth: {bearer_secret: vm-read}`); only the server holds their values, in
//! environment variables. The server policy's `secrets` maps a name to its
//! variable; a name the policy does not map is read from
//! `MUHURAT_SECRET_<NAME>` (upper case, `-` → `_`). Values are never logged
//! or shown.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Secret name → environment variable.
    pub vars: BTreeMap<String, String>,
}

/// The default variable for a secret name.
pub fn default_var(name: &str) -> String {
    let up: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("MUHURAT_SECRET_{up}")
}

impl Secrets {
    pub fn var_of(&self, name: &str) -> String {
        self.vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| default_var(name))
    }

    /// The value of secret `name`, or a message saying where it was looked for.
    pub fn resolve(&self, name: &str) -> Result<String, String> {
        let var = self.var_of(name);
        match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(format!(
                "secret `{name}` is not set: the server reads it from the environment variable {var}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_variable_names() {
        assert_eq!(default_var("vm-read"), "MUHURAT_SECRET_VM_READ");
        let s = Secrets {
            vars: [("vm-read".to_string(), "VM_TOKEN".to_string())].into(),
        };
        assert_eq!(s.var_of("vm-read"), "VM_TOKEN");
        assert!(
            s.resolve("not-set-anywhere-xyz")
                .unwrap_err()
                .contains("MUHURAT_SECRET_NOT_SET_ANYWHERE_XYZ")
        );
    }
}
