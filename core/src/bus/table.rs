//! The routes compiled for look-ups: who may send what, the public name of
//! a sender's message, and who receives a public name under which name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::routes::{RoleRoutes, Routes};

/// A role, by index. Roles of the routes come first, in name order;
/// roles that register without routes get the indexes after them.
pub(crate) type RoleId = u32;

/// The role of the security adapter.
pub(crate) const SECURITY: &str = "security";
/// Sent by the bus to the security role to ask for a verdict.
pub(crate) const AUTHORIZE: &str = "authorize message";
/// The security role releases a held message.
pub(crate) const AUTHORIZED: &str = "message authorized";
/// The security role refuses a held message (and the bus tells the sender).
pub(crate) const UNAUTHORIZED: &str = "message unauthorized";
/// The security role asks the bus to send a message for it.
pub(crate) const SECURITY_REQUEST: &str = "security request";
/// The bus hands the answer of a security request to the security role.
pub(crate) const SECURITY_RESPONSE: &str = "security response";

/// One receiving role and its name for a public message.
#[derive(Debug, Clone)]
pub(crate) struct Receiver {
    pub(crate) role: RoleId,
    pub(crate) internal: Arc<str>,
    /// This (public name, role) pair's counter in the bus's metrics.
    pub(crate) slot: usize,
}

/// The compiled route of one role.
#[derive(Debug)]
pub(crate) struct RoleTable {
    pub(crate) name: Arc<str>,
    sends: HashSet<String>,
    to_public: HashMap<String, String>,
}

/// The routes, compiled.
#[derive(Debug)]
pub(crate) struct Table {
    roles: Vec<RoleTable>,
    ids: HashMap<String, RoleId>,
    receivers: HashMap<String, Vec<Receiver>>,
    /// The security role, when the routes have one.
    pub(crate) security: Option<RoleId>,
    /// `[security role receives "authorize message"]`.
    pub(crate) authorize: Vec<Receiver>,
    /// `[security role receives "security response"]`.
    pub(crate) security_response: Vec<Receiver>,
    /// The routes as `/config.json` shows them (every list present).
    pub(crate) routes_json: String,
    /// The (public name, receiving role) of each [`Receiver::slot`].
    pub(crate) slots: Vec<(Arc<str>, RoleId)>,
}

/// The fixed route of the security role.
fn security_route() -> RoleRoutes {
    RoleRoutes {
        receives: vec![AUTHORIZE.into(), SECURITY_RESPONSE.into()],
        sends: vec![
            AUTHORIZED.into(),
            UNAUTHORIZED.into(),
            SECURITY_REQUEST.into(),
        ],
        translations: Vec::new(),
        at_least_once: Vec::new(),
    }
}

impl Table {
    pub(crate) fn new(mut routes: Routes) -> Table {
        if let Some(security) = routes.roles.get_mut(SECURITY) {
            *security = security_route();
        }
        let mut roles = Vec::with_capacity(routes.roles.len());
        let mut ids = HashMap::with_capacity(routes.roles.len());
        let mut receivers: HashMap<String, Vec<Receiver>> = HashMap::new();
        let mut slots: Vec<(Arc<str>, RoleId)> = Vec::new();
        for (index, (name, route)) in routes.roles.iter().enumerate() {
            let id = index as RoleId;
            ids.insert(name.clone(), id);
            let mut to_public = HashMap::new();
            for t in &route.translations {
                to_public
                    .entry(t.internal.clone())
                    .or_insert_with(|| t.public.clone());
            }
            for internal in &route.receives {
                let public = route.to_public(internal);
                let list = receivers.entry(public.to_owned()).or_default();
                // One copy per role, under the first name it lists.
                if !list.iter().any(|r| r.role == id) {
                    list.push(Receiver {
                        role: id,
                        internal: Arc::from(internal.as_str()),
                        slot: slots.len(),
                    });
                    slots.push((Arc::from(public), id));
                }
            }
            roles.push(RoleTable {
                name: Arc::from(name.as_str()),
                sends: route.sends.iter().cloned().collect(),
                to_public,
            });
        }
        let security = ids.get(SECURITY).copied();
        let mut fixed = |name: &str| -> Vec<Receiver> {
            security
                .map(|role| {
                    slots.push((Arc::from(name), role));
                    Receiver {
                        role,
                        internal: Arc::from(name),
                        slot: slots.len() - 1,
                    }
                })
                .into_iter()
                .collect()
        };
        let authorize = fixed(AUTHORIZE);
        let security_response = fixed(SECURITY_RESPONSE);
        Table {
            authorize,
            security_response,
            slots,
            routes_json: routes.to_json(),
            roles,
            ids,
            receivers,
            security,
        }
    }

    /// How many roles the routes have.
    pub(crate) fn len(&self) -> usize {
        self.roles.len()
    }

    /// The role of the routes with this name.
    pub(crate) fn id(&self, name: &str) -> Option<RoleId> {
        self.ids.get(name).copied()
    }

    /// The compiled route of a role of the routes.
    pub(crate) fn role(&self, id: RoleId) -> Option<&RoleTable> {
        self.roles.get(id as usize)
    }

    /// Whether `role` may send `name` (its `sends` lists it).
    pub(crate) fn may_send(&self, role: RoleId, name: &str) -> bool {
        self.role(role).is_some_and(|r| r.sends.contains(name))
    }

    /// The public name of `name` as sent by `role`.
    pub(crate) fn to_public<'a>(&'a self, role: Option<RoleId>, name: &'a str) -> &'a str {
        role.and_then(|r| self.role(r))
            .and_then(|r| r.to_public.get(name))
            .map_or(name, String::as_str)
    }

    /// Every role that receives the public name, with its name for it.
    pub(crate) fn receivers(&self, public: &str) -> &[Receiver] {
        self.receivers.get(public).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(
            Routes::from_json(
                r#"{
                "web": {"receives": ["users created"], "sends": ["users create"]},
                "users": {"receives": ["mongo create"], "sends": ["mongo created"],
                          "translations": [{"public": "users create", "internal": "mongo create"},
                                           {"public": "users created", "internal": "mongo created"}]},
                "log": {"receives": ["users create"]},
                "security": {"receives": ["x"]}
            }"#,
            )
            .unwrap(),
        )
    }

    #[test]
    fn translates_and_finds_receivers() {
        let t = table();
        let web = t.id("web").unwrap();
        let users = t.id("users").unwrap();
        assert!(t.may_send(web, "users create"));
        assert!(!t.may_send(web, "users get-SSN"));
        assert_eq!(t.to_public(Some(users), "mongo created"), "users created");
        let names: Vec<(&str, &str)> = t
            .receivers("users create")
            .iter()
            .map(|r| (&*t.role(r.role).unwrap().name, &*r.internal))
            .collect();
        assert_eq!(names, [("log", "users create"), ("users", "mongo create")]);
    }

    #[test]
    fn security_route_is_fixed() {
        let t = table();
        let sec = t.security.unwrap();
        assert!(t.may_send(sec, AUTHORIZED));
        assert!(t.receivers("x").is_empty());
        assert_eq!(t.authorize.len(), 1);
        assert!(
            t.routes_json
                .contains(r#""security":{"receives":["authorize message","security response"]"#)
        );
    }
}
