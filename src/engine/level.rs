//! One level of an approval chain: one role, one of a group, or all of a group.
//! Plain data shared by the lifecycle (events carry chains), approval and the rules.

use serde::{Deserialize, Serialize};

/// One level of an approval chain: one role, one of a group, or all of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Level {
    Role(String),
    Any { any: Vec<String> },
    All { all: Vec<String> },
}

/// `"role"`, `{any = [...]}` or `{all = [...]}`, read by the value's own shape rather
/// than by trying each variant in turn (serde's `untagged` buffers the value and
/// builds an error per miss; every approval event of every order carries levels).
impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Level;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a role, {any = [roles]} or {all = [roles]}")
            }
            fn visit_str<E>(self, s: &str) -> Result<Level, E> {
                Ok(Level::Role(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Level, E> {
                Ok(Level::Role(s))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Level, A::Error> {
                use serde::de::Error as _;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom("a level needs `any` or `all`"));
                };
                let roles: Vec<String> = map.next_value()?;
                if let Some(other) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!("a level has one key, `any` or `all`, not also `{other}`")));
                }
                match key.as_str() {
                    "any" => Ok(Level::Any { any: roles }),
                    "all" => Ok(Level::All { all: roles }),
                    _ => Err(A::Error::unknown_field(&key, &["any", "all"])),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
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
