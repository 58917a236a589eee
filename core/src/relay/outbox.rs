//! The bounded buffer of frames waiting to go to the bus.
//!
//! Senders push serialized frames from any thread without waiting; a full
//! buffer is an error at the call site. The connection's writer takes frames
//! in batches, and puts a batch back at the front when writing it failed, so
//! frames go out in order after a reconnect.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Why a frame was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The buffer holds its capacity already.
    Full(usize),
    /// The relay is closing and takes no more frames.
    Closed,
    /// The frame is larger than the transport carries.
    TooLarge {
        /// The frame's size in bytes.
        size: usize,
        /// The largest frame the transport takes.
        max: usize,
    },
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Frames taken by the writer and not yet confirmed written.
    in_flight: usize,
    closed: bool,
}

/// A bounded, ordered buffer of outgoing frames.
pub struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    /// The largest frame the connection can carry (`usize::MAX`: no limit known).
    max_frame: AtomicUsize,
    /// Wakes the writer when frames arrive.
    ready: Notify,
    /// Wakes whoever waits for the buffer to be empty and written.
    idle: Notify,
}

impl Outbox {
    /// An empty buffer holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            max_frame: AtomicUsize::new(usize::MAX),
            ready: Notify::new(),
            idle: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every operation is a single push/pop), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The buffer's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames waiting or being written.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.queue.len() + s.in_flight
    }

    /// Whether nothing waits and nothing is being written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// From now on, frames longer than `max` bytes are refused at the
    /// call site (the connection learned its limit).
    pub fn set_max_frame(&self, max: usize) {
        self.max_frame.store(max, Ordering::Relaxed);
    }

    /// Adds a frame at the end.
    pub fn push(&self, frame: String) -> Result<(), PushError> {
        let max = self.max_frame.load(Ordering::Relaxed);
        if frame.len() > max {
            return Err(PushError::TooLarge {
                size: frame.len(),
                max,
            });
        }
        {
            let mut s = self.lock();
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.queue.len() >= self.capacity {
                return Err(PushError::Full(self.capacity));
            }
            s.queue.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Takes up to `max` frames, waiting until there is at least one.
    pub async fn take_batch(&self, max: usize, into: &mut Vec<String>) {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if !s.queue.is_empty() {
                    let n = s.queue.len().min(max);
                    into.extend(s.queue.drain(..n));
                    s.in_flight += n;
                    return;
                }
            }
            notified.await;
        }
    }

    /// The writer wrote the batch it took.
    pub fn written(&self, n: usize) {
        let empty = {
            let mut s = self.lock();
            s.in_flight = s.in_flight.saturating_sub(n);
            s.queue.is_empty() && s.in_flight == 0
        };
        if empty {
            self.idle.notify_waiters();
        }
    }

    /// The writer could not write the batch: put it back at the front, in order.
    pub fn put_back(&self, batch: Vec<String>) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(batch.len());
        for frame in batch.into_iter().rev() {
            s.queue.push_front(frame);
        }
        drop(s);
        self.ready.notify_one();
    }

    /// From now on, [`Outbox::push`] fails with [`PushError::Closed`].
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Waits until every frame is written, for at most `timeout`. Returns how
    /// many frames were still waiting when it gave up (0 = all written).
    pub async fn wait_empty(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            let left = self.len();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_order_through_a_failed_write() {
        let o = Outbox::new(3);
        for f in ["a", "b", "c"] {
            o.push(f.into()).unwrap();
        }
        assert_eq!(o.push("d".into()), Err(PushError::Full(3)));
        let mut batch = Vec::new();
        o.take_batch(2, &mut batch).await;
        assert_eq!(batch, ["a", "b"]);
        o.put_back(std::mem::take(&mut batch));
        o.take_batch(10, &mut batch).await;
        assert_eq!(batch, ["a", "b", "c"]);
        assert_eq!(o.len(), 3);
        o.written(3);
        assert_eq!(o.wait_empty(Duration::from_millis(1)).await, 0);
    }

    #[test]
    fn refuses_a_frame_over_the_known_limit() {
        let o = Outbox::new(10);
        o.push("x".repeat(100)).unwrap();
        o.set_max_frame(50);
        assert_eq!(
            o.push("x".repeat(51)),
            Err(PushError::TooLarge { size: 51, max: 50 })
        );
        o.push("x".repeat(50)).unwrap();
    }

    #[tokio::test]
    async fn closed_refuses_and_waiting_gives_up_with_a_count() {
        let o = Outbox::new(2);
        o.push("x".into()).unwrap();
        o.close();
        assert_eq!(o.push("y".into()), Err(PushError::Closed));
        assert_eq!(o.wait_empty(Duration::from_millis(10)).await, 1);
    }
}
