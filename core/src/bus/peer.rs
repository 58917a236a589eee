//! One service connection as the bus sees it: each frame read is parsed
//! (borrowing from the frame), registrations are recorded, frames from
//! unregistered connections or naming another role are refused, `sender`,
//! `id` and `activityId` are filled in, and the message goes to routing.
//! Dropping the connection removes the instance.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::activity::ConnId;
use super::connection::{Frame, FrameHandler, Outbox};
use super::metrics::Refusal;
use super::router::Plan;
use super::server::Admitted;
use super::shared::Shared;
use super::table::RoleId;
use super::wire::Incoming;
use crate::message::{self, new_id};

/// One connection of the bus.
pub(crate) struct BusConn {
    shared: Arc<Shared>,
    id: ConnId,
    role: Option<(RoleId, Arc<str>)>,
    plan: Vec<Plan>,
    /// What the connection's token allows, and its outbox (closed to
    /// drop a connection that registers as a role its token is not for).
    door: Option<(Admitted, Arc<Outbox>)>,
}

impl BusConn {
    pub(super) fn new(shared: Arc<Shared>, id: ConnId) -> BusConn {
        BusConn {
            shared,
            id,
            role: None,
            plan: Vec::new(),
            door: None,
        }
    }

    /// Limits the roles this connection may register as.
    pub(super) fn with_door(mut self, admitted: Admitted, outbox: Arc<Outbox>) -> BusConn {
        self.door = Some((admitted, outbox));
        self
    }

    /// Whether the connection's token allows `role`; if not, logs and
    /// counts the refusal and closes the connection.
    fn may_register(&self, role: &str) -> bool {
        let Some((admitted, outbox)) = &self.door else {
            return true;
        };
        if admitted.roles.allows(role) {
            return true;
        }
        let n = admitted.counters.wrong_role();
        let shown = admitted
            .roles
            .roles()
            .unwrap_or_default()
            .iter()
            .map(|r| format!("'{r}'"))
            .collect::<Vec<_>>()
            .join(", ");
        self.shared.warn(format!(
            "Warning: Refused to register the connection from {} as '{role}': its token is for {shown}; closed it ({n} refused so far)",
            admitted.peer
        ));
        outbox.close();
        false
    }

    fn describe(&self) -> String {
        match &self.role {
            Some((_, name)) => format!("'{name}'"),
            None => "an unregistered connection".to_owned(),
        }
    }

    fn register(&mut self, sender: Option<String>) {
        let shared = &self.shared;
        let Some(name) = sender else {
            shared.metrics.refused(Refusal::BadFrame);
            shared.warn(format!(
                "Warning: Refused '{}' without a sender: it must name the role to register as",
                message::REGISTER
            ));
            return;
        };
        if !self.may_register(&name) {
            return;
        }
        let registered = shared
            .lock()
            .register(self.id, &name, &shared.table, &shared.metrics);
        let Some(r) = registered else {
            return;
        };
        let role_name = shared.role_name(r.role);
        self.role = Some((r.role, role_name));
        if r.again {
            return;
        }
        match r.previous {
            Some(previous) => shared.log.line(format!(
                "'{name}' registered (the connection was '{previous}' before)"
            )),
            None => shared.log.line(format!("'{name}' registered")),
        }
        if shared.table.id(&name).is_none() {
            shared.warn(format!(
                "Warning: Service '{name}' registered but the routes do not list it: it can neither send nor receive"
            ));
        }
        if r.flushed > 0 {
            shared.log.line(format!(
                "Delivered {} messages held for '{name}' since the bus started",
                r.flushed
            ));
        }
    }
}

impl FrameHandler for BusConn {
    fn label(&self) -> String {
        self.describe()
    }

    fn frame(&mut self, frame: Frame<'_>) {
        let start = Instant::now();
        self.shared.metrics.frame_in();
        let role = self.role.clone();
        let parsed = match frame {
            Frame::Text(text) => Incoming::parse(text),
            Frame::Binary(bytes) => Incoming::parse_bytes(bytes),
        };
        let mut msg = match parsed {
            Ok(msg) => msg,
            Err(e) => {
                self.shared.metrics.refused(Refusal::BadFrame);
                self.shared.log.line(format!(
                    "Error: {} sent an unreadable frame; dropped it ({e})",
                    self.describe()
                ));
                return;
            }
        };
        match &*msg.name {
            message::REGISTER => return self.register(msg.sender.map(Cow::into_owned)),
            message::STATUS_OK => return,
            _ => {}
        }
        let Some((role, role_name)) = &role else {
            self.shared.metrics.refused(Refusal::Unregistered);
            self.shared.warn(format!(
                "Warning: Refused '{}' from a connection that has not registered",
                msg.name
            ));
            return;
        };
        match msg.sender.as_deref() {
            Some(sender) if sender != &**role_name => {
                self.shared.metrics.refused(Refusal::WrongSender);
                self.shared.warn(format!(
                    "Warning: Refused '{}' from '{role_name}': it claims to come from '{sender}'",
                    msg.name
                ));
                return;
            }
            Some(_) => {}
            None => msg.sender = Some(Cow::Borrowed(role_name)),
        }
        msg.id.get_or_insert_with(|| Cow::Owned(new_id()));
        msg.activity_id.get_or_insert_with(|| Cow::Owned(new_id()));
        self.shared
            .service_message(self.id, *role, role_name, &msg.view(), &mut self.plan);
        self.shared.metrics.routing.observe_since(start);
    }
}

impl Drop for BusConn {
    fn drop(&mut self) {
        self.shared.metrics.closed();
        let left = self.shared.lock().remove_conn(self.id, &self.shared.table);
        if let Some(role) = left {
            self.shared.log.line(format!("'{role}' disconnected"));
        }
    }
}
