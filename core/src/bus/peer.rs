//! One service connection as the bus sees it: each frame read is parsed
//! (borrowing from the frame), registrations are recorded, frames from
//! unregistered connections or naming another role are refused, `sender`,
//! `id` and `activityId` are filled in, and the message goes to routing.
//! Dropping the connection removes the instance.

use std::borrow::Cow;
use std::sync::Arc;

use super::activity::ConnId;
use super::connection::{Frame, FrameHandler};
use super::router::Plan;
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
}

impl BusConn {
    pub(super) fn new(shared: Arc<Shared>, id: ConnId) -> BusConn {
        BusConn {
            shared,
            id,
            role: None,
            plan: Vec::new(),
        }
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
            shared.warn(format!(
                "Warning: Refused '{}' without a sender: it must name the role to register as",
                message::REGISTER
            ));
            return;
        };
        let registered = shared.lock().register(self.id, &name, &shared.table);
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
    fn frame(&mut self, frame: Frame<'_>) {
        let role = self.role.clone();
        let parsed = match frame {
            Frame::Text(text) => Incoming::parse(text),
            Frame::Binary(bytes) => Incoming::parse_bytes(bytes),
        };
        let mut msg = match parsed {
            Ok(msg) => msg,
            Err(e) => {
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
            self.shared.warn(format!(
                "Warning: Refused '{}' from a connection that has not registered",
                msg.name
            ));
            return;
        };
        match msg.sender.as_deref() {
            Some(sender) if sender != &**role_name => {
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
    }
}

impl Drop for BusConn {
    fn drop(&mut self) {
        let left = self.shared.lock().remove_conn(self.id, &self.shared.table);
        if let Some(role) = left {
            self.shared.log.line(format!("'{role}' disconnected"));
        }
    }
}
