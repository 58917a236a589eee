//! `Client::send_watched`: every message of a watched activity goes to the
//! watch, not to the handlers, until the watch is dropped.

use std::time::Duration;

use exoservice::ServiceConfig;
use exoservice::dispatch::Engine;
use exoservice::message::Message;
use exoservice::testing::MockBus;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_activity_gets_every_message_of_it() {
    let bus = MockBus::start().await.unwrap();
    let config = ServiceConfig::from_parts("watcher", ["ping"], ["ask"])
        .with_exocom("127.0.0.1", bus.port());
    let engine = Engine::new(config);
    engine.announce_online(false);
    engine.handle("ping").unwrap();
    engine.connect().unwrap();
    assert!(engine.wait_online(WAIT).await);

    let mut watch = engine.client().send_watched("ask", None, None, 8).unwrap();
    let activity = watch.activity_id().to_owned();
    let ask = bus.wait_for("ask", WAIT).await.unwrap();
    assert_eq!(ask.activity_id.as_deref(), Some(activity.as_str()));

    // Two answers, one named like a handled message: both go to the watch.
    for name in ["answer", "ping"] {
        let msg = Message {
            activity_id: Some(activity.clone()),
            ..Message::new(name)
        };
        bus.send_message("watcher", msg).await.unwrap();
    }
    let first = timeout(WAIT, watch.next()).await.unwrap().unwrap();
    let second = timeout(WAIT, watch.next()).await.unwrap().unwrap();
    assert_eq!(
        (first.name.as_str(), second.name.as_str()),
        ("answer", "ping")
    );
    assert!(
        timeout(Duration::from_millis(200), engine.next())
            .await
            .is_err(),
        "a message of the watched activity reached the handlers"
    );

    // Once the watch is dropped, the activity's messages go to handlers.
    drop(watch);
    let msg = Message {
        activity_id: Some(activity.clone()),
        ..Message::new("ping")
    };
    bus.send_message("watcher", msg).await.unwrap();
    let delivery = timeout(WAIT, engine.next()).await.unwrap().unwrap();
    assert_eq!(delivery.message().name, "ping");
    assert_eq!(delivery.message().activity(), activity);
    drop(delivery);

    // An undeclared name is refused at the call site.
    assert!(matches!(
        engine.client().send_watched("nope", None, None, 8),
        Err(exoservice::ExoError::Undeclared { .. })
    ));
    engine.drain().await;
}
