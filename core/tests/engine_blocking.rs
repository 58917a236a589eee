//! The pull API as bindings use it: `Engine::next_blocking` called from a
//! plain host thread (not a tokio thread), against the mock bus.

use std::time::Duration;

use exoservice::Engine;
use exoservice::config::ServiceConfig;
use exoservice::dispatch::Next;
use exoservice::testing::MockBus;

#[test]
fn next_blocking_works_on_a_host_thread() {
    let io = tokio::runtime::Runtime::new().unwrap();
    let mock = io.block_on(MockBus::start()).unwrap();
    let config =
        ServiceConfig::from_parts("ping", ["ping"], ["pong"]).with_exocom("127.0.0.1", mock.port());
    let shared = exoservice::runtime::shared().unwrap();
    let engine = Engine::with_runtime(config, shared.handle().clone());
    engine.announce_online(false);
    engine.handle("ping").unwrap();
    engine.connect().unwrap();
    io.block_on(mock.wait_for_registration("ping", Duration::from_secs(5)))
        .unwrap();

    // Nothing waiting: a timeout, not a panic.
    assert!(matches!(
        engine.next_blocking(Duration::from_millis(50)),
        Next::Timeout
    ));

    io.block_on(mock.send_to_service("ping", "ping", serde_json::json!({"n": 1})))
        .unwrap();
    let delivery = match engine.next_blocking(Duration::from_secs(5)) {
        Next::Delivery(d) => d,
        Next::Timeout => panic!("no delivery within 5 s"),
        Next::Stopped => panic!("stopped"),
    };
    assert_eq!(delivery.message().name, "ping");
    let payload = delivery.message().payload.clone();
    delivery.ctx().reply_raw("pong", payload).unwrap();
    drop(delivery);
    let pong = io
        .block_on(mock.wait_for("pong", Duration::from_secs(5)))
        .unwrap();
    assert_eq!(pong.payload_value(), serde_json::json!({"n": 1}));

    engine.stop();
    assert!(matches!(
        engine.next_blocking(Duration::from_secs(1)),
        Next::Stopped
    ));
    io.block_on(mock.shutdown());
}
