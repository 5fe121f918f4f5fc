//! The state of each named credential as this replica last saw it: its kind
//! and the error of its last use (none after a success), for
//! `/admin/v1/status`. Keyed by the credential's name under `[iam.credentials]`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::config::IamConfig;

/// One credential's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialState {
    /// `password` (IAM token) or `aksk` (signed calls).
    pub kind: &'static str,
    /// Why its last use failed; `None` after a success or before any use.
    pub last_error: Option<String>,
}

/// Every configured credential's state.
#[derive(Debug, Default)]
pub struct CredentialStates {
    map: Mutex<BTreeMap<String, CredentialState>>,
}

impl CredentialStates {
    /// Every configured credential, none failed yet.
    pub fn new(iam: &IamConfig) -> Self {
        let map = iam
            .credentials
            .iter()
            .map(|(name, credential)| {
                let state = CredentialState {
                    kind: credential.kind().as_str(),
                    last_error: None,
                };
                (name.clone(), state)
            })
            .collect();
        Self {
            map: Mutex::new(map),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CredentialState>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the outcome of a use of `name`.
    pub fn record(&self, name: &str, result: Result<(), &str>) {
        if let Some(state) = self.lock().get_mut(name) {
            state.last_error = result.err().map(str::to_owned);
        }
    }

    /// A snapshot, by name.
    pub fn snapshot(&self) -> BTreeMap<String, CredentialState> {
        self.lock().clone()
    }
}
