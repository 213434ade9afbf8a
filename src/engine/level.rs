//! One level of an approval chain: one role, one of a group, or all of a group.
//! Plain data shared by the lifecycle (events carry chains), approval and the rules.

use serde::{Deserialize, Serialize};

/// One level of an approval chain: one role, one of a group, or all of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Level {
    Role(String),
    Any { any: Vec<String> },
    All { all: Vec<String> },
}

impl Level {
    pub(crate) fn roles(&self) -> &[String] {
        match self {
            Level::Role(r) => std::slice::from_ref(r),
            Level::Any { any } => any,
            Level::All { all } => all,
        }
    }

    /// Roles that must still approve given the roles that already did, or none when
    /// the level is complete.
    pub(crate) fn missing(&self, approved: &[String]) -> Vec<String> {
        match self {
            Level::All { all } => all.iter().filter(|r| !approved.contains(r)).cloned().collect(),
            _ if self.roles().iter().any(|r| approved.contains(r)) => Vec::new(),
            _ => self.roles().to_vec(),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Role(r) => f.write_str(r),
            Level::Any { any } => write!(f, "any of {}", any.join(", ")),
            Level::All { all } => write!(f, "all of {}", all.join(", ")),
        }
    }
}
