//! The NATS subjects and JetStream names of an application. Message names
//! never appear in subjects (they may hold spaces and dots): each role has
//! its own subjects, and the frame inside names the message.

/// The JetStream stream of an application: `EXO_<app>`.
pub fn stream_name(app: &str) -> String {
    format!("EXO_{app}")
}

/// What the stream stores: `exo.<app>.js.>`.
pub fn stream_subjects(app: &str) -> String {
    format!("exo.{app}.js.>")
}

/// At-most-once copies for a role (queue group = the role):
/// `exo.<app>.to.<role>`.
pub fn role_subject(app: &str, role: &str) -> String {
    format!("exo.{app}.to.{role}")
}

/// At-least-once copies for a role (the role's durable consumer, named
/// after the role, reads them): `exo.<app>.js.to.<role>`.
pub fn durable_subject(app: &str, role: &str) -> String {
    format!("exo.{app}.js.to.{role}")
}

/// Dead letters of a role, kept in the stream: `exo.<app>.js.dlq.<role>`.
/// Each carries the headers [`ATTEMPTS_HEADER`] and [`ERROR_HEADER`].
pub fn dead_letter_subject(app: &str, role: &str) -> String {
    format!("exo.{app}.js.dlq.{role}")
}

/// One instance's inbox, for copies that stick to it (the activity's
/// earlier member): `exo.<app>.inst.<instance>`.
pub fn instance_subject(app: &str, instance: &str) -> String {
    format!("exo.{app}.inst.{instance}")
}

/// Where every instance of an application answers who it is (see
/// [`super::presence`]): `exo.<app>.presence`.
pub fn presence_subject(app: &str) -> String {
    format!("exo.{app}.presence")
}

/// Where an instance sends itself an echo to learn that the server has
/// handled its subscriptions: `exo.<app>.sync.<instance>`.
pub(crate) fn sync_subject(app: &str, instance: &str) -> String {
    format!("exo.{app}.sync.{instance}")
}

/// Where the server reports that a sticky copy found nobody:
/// `exo.<app>.nr.<instance>.<seq>`.
pub(crate) fn no_responders_subject(app: &str, instance: &str, seq: u64) -> String {
    format!("exo.{app}.nr.{instance}.{seq}")
}

/// The advisory the server sends when a message reached its last attempt
/// without being finished (its instances died):
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EXO_<app>.<role>`.
pub fn max_deliveries_subject(app: &str, role: &str) -> String {
    format!("{}.{role}", max_deliveries_prefix(app))
}

/// The last-attempt advisories of every role of an application.
fn max_deliveries_prefix(app: &str) -> String {
    format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}",
        stream_name(app)
    )
}

/// The stream that keeps an application's last-attempt advisories until an
/// instance of the role dead-letters the message, so that what was
/// stranded while no instance of the role ran is dead-lettered by the next
/// one: `EXOLAST_<app>` (never the name of an application's stream, which
/// starts with `EXO_`).
pub fn last_attempts_stream_name(app: &str) -> String {
    format!("EXOLAST_{app}")
}

/// What [`last_attempts_stream_name`] stores:
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EXO_<app>.*`.
pub fn last_attempts_stream_subjects(app: &str) -> String {
    format!("{}.*", max_deliveries_prefix(app))
}

/// Who took part in the message's activity: `role=instance,…`.
pub const MEMBERS_HEADER: &str = "Exo-Members";
/// On a copy forwarded to the instance its activity sticks to: answer
/// when it is finished.
pub const FORWARD_HEADER: &str = "Exo-Forward";
/// On a forwarded copy: which attempt it is.
pub const ATTEMPT_HEADER: &str = "Exo-Attempt";
/// On a dead letter: how many attempts were made.
pub const ATTEMPTS_HEADER: &str = "Exo-Attempts";
/// On a dead letter: why it was given up.
pub const ERROR_HEADER: &str = "Exo-Error";
/// On a dead letter: the role that could not handle it.
pub const ROLE_HEADER: &str = "Exo-Role";
