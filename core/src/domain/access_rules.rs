//! Role rules for infrastructure access: SSH, database and Kubernetes
//! certificates a bot may obtain beyond SPIFFE SVIDs (`RoleAllow::ssh`,
//! `database`, `kubernetes`). Empty rules allow nothing of that kind.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// SSH certificates a role allows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshRules {
    /// Login names (globs, templates) a user certificate may carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Host names (globs, templates) a host certificate may carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_names: Vec<String>,
    /// Extensions of user certificates (empty = the OpenSSH defaults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Critical options of user certificates (values may be templates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub critical_options: BTreeMap<String, String>,
    /// Longest lifetime in seconds (0 = broker default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ttl_seconds: i64,
}

/// Database certificates a role allows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseRules {
    /// Database users (globs, templates) allowed as a client certificate's CN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Names a database server certificate may carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// Longest lifetime in seconds (0 = broker default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ttl_seconds: i64,
}

/// Kubernetes client certificates a role allows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRules {
    /// Users (globs, templates) allowed as CN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups (globs, templates) allowed as O.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Longest lifetime in seconds (0 = broker default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_ttl_seconds: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl SshRules {
    /// Whether the rules allow nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl DatabaseRules {
    /// Whether the rules allow nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl KubernetesRules {
    /// Whether the rules allow nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}
