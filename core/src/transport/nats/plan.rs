//! Routing without a bus: what the sender's core decides from the
//! application's routes (which roles get a copy of a message, and how),
//! and what the receiver's core checks again before a handler sees it.

use std::collections::{HashMap, HashSet};

use crate::routes::{RoleRoutes, Routes};

/// One role that receives a public name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receiver {
    /// The role.
    pub(crate) role: std::sync::Arc<str>,
    /// Whether it takes the name at-least-once (JetStream).
    pub(crate) durable: bool,
}

/// The routes seen from one role.
#[derive(Debug)]
pub(crate) struct Plan {
    /// This role's own routes.
    own: RoleRoutes,
    /// Public name → the roles that receive it, in role order.
    receivers: HashMap<String, Vec<Receiver>>,
    /// Role → the public names it may send.
    sends: HashMap<String, HashSet<String>>,
    /// Public names this role receives.
    receives: HashSet<String>,
    /// Whether any role takes anything at-least-once (the stream is needed).
    any_durable: bool,
}

/// Why a received frame does not reach a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The frame names no sender.
    #[error("it names no sender")]
    NoSender,
    /// The sender's role is not in the routes.
    #[error("its sender '{0}' is not a role of the application")]
    UnknownSender(String),
    /// The sender may not send this name.
    #[error("'{sender}' does not declare that it sends it")]
    NotSent {
        /// The sender's role.
        sender: String,
    },
    /// This role does not receive it.
    #[error("this role does not receive it")]
    NotReceived,
}

impl Plan {
    /// The plan of `role`; `None` when the role is not in the routes.
    pub(crate) fn new(routes: &Routes, role: &str) -> Option<Plan> {
        let own = routes.roles.get(role)?.clone();
        let mut receivers: HashMap<String, Vec<Receiver>> = HashMap::new();
        let mut sends = HashMap::new();
        let mut any_durable = false;
        for (name, r) in &routes.roles {
            for internal in &r.receives {
                let durable = r.at_least_once.iter().any(|n| n == internal);
                any_durable |= durable;
                let list = receivers
                    .entry(r.to_public(internal).to_owned())
                    .or_default();
                if !list.iter().any(|x| *x.role == **name) {
                    list.push(Receiver {
                        role: name.as_str().into(),
                        durable,
                    });
                }
            }
            sends.insert(
                name.clone(),
                r.sends
                    .iter()
                    .map(|n| r.to_public(n).to_owned())
                    .collect::<HashSet<_>>(),
            );
        }
        let receives = own
            .receives
            .iter()
            .map(|n| own.to_public(n).to_owned())
            .collect();
        Some(Plan {
            own,
            receivers,
            sends,
            receives,
            any_durable,
        })
    }

    /// The public name of one of this role's internal names.
    pub(crate) fn to_public<'a>(&'a self, internal: &'a str) -> &'a str {
        self.own.to_public(internal)
    }

    /// The roles that get a copy of a public name.
    pub(crate) fn receivers(&self, public: &str) -> &[Receiver] {
        self.receivers.get(public).map_or(&[], Vec::as_slice)
    }

    /// Whether any role takes any name at-least-once.
    pub(crate) fn any_durable(&self) -> bool {
        self.any_durable
    }

    /// Whether this role takes anything at-least-once.
    pub(crate) fn own_durable(&self) -> bool {
        !self.own.at_least_once.is_empty()
    }

    /// Whether this role takes anything at-most-once.
    pub(crate) fn own_plain(&self) -> bool {
        self.own
            .receives
            .iter()
            .any(|n| !self.own.at_least_once.contains(n))
    }

    /// Checks a received frame (public `name`, from `sender`) and returns
    /// this role's internal name for it.
    pub(crate) fn admit<'a>(
        &'a self,
        sender: Option<&str>,
        name: &'a str,
    ) -> Result<&'a str, Refused> {
        let sender = sender.filter(|s| !s.is_empty()).ok_or(Refused::NoSender)?;
        let sent = self
            .sends
            .get(sender)
            .ok_or_else(|| Refused::UnknownSender(sender.to_owned()))?;
        if !sent.contains(name) {
            return Err(Refused::NotSent {
                sender: sender.to_owned(),
            });
        }
        if !self.receives.contains(name) {
            return Err(Refused::NotReceived);
        }
        Ok(self.own.to_internal(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        serde_json::from_str(
            r#"{
              "web": {"sends": ["users.create", "users.get"], "receives": ["users.created"]},
              "users": {"receives": ["create", "find user"], "sends": ["created"],
                        "translations": [{"public": "users.create", "internal": "create"},
                                         {"public": "users.get", "internal": "find user"},
                                         {"public": "users.created", "internal": "created"}],
                        "atLeastOnce": ["create"]},
              "stats": {"receives": ["users.created", "users.create"]}
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn one_copy_per_receiving_role_with_its_mode() {
        let web = Plan::new(&routes(), "web").unwrap();
        assert_eq!(web.to_public("users.create"), "users.create");
        let got = web.receivers("users.create");
        assert_eq!(
            got,
            [
                Receiver {
                    role: "stats".into(),
                    durable: false
                },
                Receiver {
                    role: "users".into(),
                    durable: true
                },
            ]
        );
        assert!(web.receivers("nobody").is_empty());
        assert!(web.any_durable());
        assert!(!web.own_durable());
    }

    #[test]
    fn the_receiver_translates_and_checks_the_sender() {
        let users = Plan::new(&routes(), "users").unwrap();
        assert!(users.own_durable() && users.own_plain());
        assert_eq!(users.to_public("created"), "users.created");
        assert_eq!(users.admit(Some("web"), "users.get"), Ok("find user"));
        assert_eq!(
            users.admit(Some("stats"), "users.get"),
            Err(Refused::NotSent {
                sender: "stats".into()
            })
        );
        assert_eq!(
            users.admit(Some("ghost"), "users.get"),
            Err(Refused::UnknownSender("ghost".into()))
        );
        assert_eq!(users.admit(None, "users.get"), Err(Refused::NoSender));
        assert_eq!(
            users.admit(Some("users"), "users.created"),
            Err(Refused::NotReceived)
        );
        let web = Plan::new(&routes(), "web").unwrap();
        assert_eq!(
            web.admit(Some("users"), "users.created"),
            Ok("users.created")
        );
        assert_eq!(
            web.admit(Some("web"), "users.get"),
            Err(Refused::NotReceived)
        );
        assert!(Plan::new(&routes(), "nobody").is_none());
    }
}
