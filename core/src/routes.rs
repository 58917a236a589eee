//! The routes of an application: which role sends and receives which
//! message names, and how a role translates public names to its own.
//!
//! This is the shape of the bus's `SERVICE_DATA` variable and of `routes` in
//! `/config.json`. The bus reads it from JSON; [`crate::config`] builds it
//! from `application.yml` and the services' config files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One translation between a public message name and a role's internal one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    /// The name the rest of the application uses.
    pub public: String,
    /// The name this role uses in its own code.
    pub internal: String,
}

/// How copies of a message name reach a receiving role.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    /// Fire and forget: a copy is lost when no instance of the role runs or
    /// the instance dies while handling it (ExoCom, core NATS). The default.
    #[default]
    AtMostOnce,
    /// Kept until a handler finished it: redelivered when the handler fails
    /// or its instance dies, dead-lettered after the last attempt (NATS
    /// JetStream only).
    AtLeastOnce,
}

impl DeliveryMode {
    /// Reads `at-most-once` or `at-least-once`.
    pub fn parse(text: &str) -> Option<DeliveryMode> {
        match text {
            "at-most-once" => Some(DeliveryMode::AtMostOnce),
            "at-least-once" => Some(DeliveryMode::AtLeastOnce),
            _ => None,
        }
    }

    /// The name used in service files.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::AtMostOnce => "at-most-once",
            DeliveryMode::AtLeastOnce => "at-least-once",
        }
    }
}

/// What one role sends and receives (internal names) and its translations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRoutes {
    /// Message names (internal) this role may receive.
    #[serde(default, deserialize_with = "null_as_default")]
    pub receives: Vec<String>,
    /// Message names (internal) this role may send.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sends: Vec<String>,
    /// Public ⇄ internal name pairs of this role.
    #[serde(default, deserialize_with = "null_as_default")]
    pub translations: Vec<Translation>,
    /// Received names (internal) this role takes at-least-once (only the
    /// `nats` transport uses it; left out of the JSON when empty, so
    /// ExoCom's `SERVICE_DATA` keeps its shape).
    #[serde(
        default,
        rename = "atLeastOnce",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub at_least_once: Vec<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl RoleRoutes {
    /// The public name of one of this role's internal names.
    pub fn to_public<'a>(&'a self, internal: &'a str) -> &'a str {
        self.translations
            .iter()
            .find(|t| t.internal == internal)
            .map_or(internal, |t| t.public.as_str())
    }

    /// This role's internal name for a public name.
    pub fn to_internal<'a>(&'a self, public: &'a str) -> &'a str {
        self.translations
            .iter()
            .find(|t| t.public == public)
            .map_or(public, |t| t.internal.as_str())
    }
}

/// The routes of every role, by role name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Routes {
    /// Role name → its routes.
    pub roles: BTreeMap<String, RoleRoutes>,
}

/// Routes that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutesError {
    /// The JSON text does not have the shape of routes.
    #[error(
        "SERVICE_DATA is not valid routes JSON ({0}); expected {{\"ROLE\": {{\"receives\": [...], \"sends\": [...], \"translations\": [{{\"public\": ..., \"internal\": ...}}]}}}}"
    )]
    Json(String),
    /// A role name breaks the naming rule.
    #[error(
        "'{0}' is not a valid role name: use letters and digits in groups joined by single hyphens"
    )]
    RoleName(String),
    /// An empty message name.
    #[error("role '{0}' lists an empty message name")]
    EmptyName(String),
}

/// Whether `name` is a valid role name (`^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$`).
pub fn is_valid_role(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('-')
            .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Routes {
    /// Reads routes from JSON (the bus's `SERVICE_DATA`), and validates them.
    pub fn from_json(text: &str) -> Result<Routes, RoutesError> {
        let routes: Routes =
            serde_json::from_str(text).map_err(|e| RoutesError::Json(e.to_string()))?;
        routes.validate()?;
        Ok(routes)
    }

    /// Checks role names and message names.
    pub fn validate(&self) -> Result<(), RoutesError> {
        for (role, r) in &self.roles {
            if !is_valid_role(role) {
                return Err(RoutesError::RoleName(role.clone()));
            }
            let names = r.receives.iter().chain(&r.sends);
            let tnames = r.translations.iter().flat_map(|t| [&t.public, &t.internal]);
            if names.chain(tnames).any(|n| n.is_empty()) {
                return Err(RoutesError::EmptyName(role.clone()));
            }
        }
        Ok(())
    }

    /// The routes of one role.
    pub fn role(&self, role: &str) -> Option<&RoleRoutes> {
        self.roles.get(role)
    }

    /// The routes as JSON, every list present (as `/config.json` shows them).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("routes serialization: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_service_data_with_missing_lists() {
        let r =
            Routes::from_json(r#"{"users": {}, "web": {"sends": ["a b"], "translations": null}}"#)
                .unwrap();
        assert_eq!(r.role("web").unwrap().sends, vec!["a b"]);
        assert!(r.role("users").unwrap().receives.is_empty());
    }

    #[test]
    fn refuses_bad_roles_and_shapes() {
        assert!(matches!(
            Routes::from_json(r#"{"bad--role": {}}"#),
            Err(RoutesError::RoleName(_))
        ));
        assert!(matches!(
            Routes::from_json(r#"{"web": {"sends": "x"}}"#),
            Err(RoutesError::Json(_))
        ));
        assert!(matches!(
            Routes::from_json(r#"[1]"#),
            Err(RoutesError::Json(_))
        ));
        assert!(matches!(
            Routes::from_json(r#"{"web": {"sends": [""]}}"#),
            Err(RoutesError::EmptyName(_))
        ));
    }

    #[test]
    fn translates_both_ways() {
        let r = RoleRoutes {
            translations: vec![Translation {
                public: "users create".into(),
                internal: "mongo create".into(),
            }],
            ..RoleRoutes::default()
        };
        assert_eq!(r.to_internal("users create"), "mongo create");
        assert_eq!(r.to_public("mongo create"), "users create");
        assert_eq!(r.to_public("other"), "other");
    }

    #[test]
    fn role_names() {
        for ok in ["web", "todo-service", "a1-b2-c3"] {
            assert!(is_valid_role(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "a b", "a_b", "a.b"] {
            assert!(!is_valid_role(bad), "{bad}");
        }
    }
}
