//! One WebSocket connection: a loop that reads frames and hands each one to
//! a [`FrameHandler`] at once, while writing what others put into the
//! connection's [`Outbox`]. Shared by the bus and the mock bus.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::{self, Utf8Bytes};

/// One data frame as read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frame<'a> {
    /// A text frame (valid UTF-8, checked by the WebSocket layer).
    Text(&'a str),
    /// A binary frame.
    Binary(&'a [u8]),
}

impl<'a> Frame<'a> {
    /// The frame's bytes.
    pub(crate) fn bytes(self) -> &'a [u8] {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) => b,
        }
    }
}

/// What a connection does with the frames it reads.
pub(crate) trait FrameHandler: Send + 'static {
    /// One text or binary frame.
    fn frame(&mut self, frame: Frame<'_>);
    /// Who this connection is, for log lines (`'web'`).
    fn label(&self) -> String {
        "a connection".to_owned()
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The client sent a close frame.
    ClientClosed,
    /// The client dropped the connection, or the socket failed.
    Dropped,
    /// The outbox was closed (the application let the connection go).
    Closed,
    /// The client sent a frame larger than the limit.
    TooLarge {
        /// The frame's size as announced.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds its capacity already.
    Full,
    /// The connection is gone.
    Closed,
}

struct Queue {
    frames: VecDeque<Utf8Bytes>,
    closed: bool,
}

/// The bounded queue of frames waiting to be written to one connection.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Wakes [`Outbox::closed`] waiters.
    shut: Notify,
    capacity: usize,
    dropped: AtomicU64,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            shut: Notify::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one frame unless the queue is full or closed.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> Result<(), PushError> {
        let mut q = self.lock();
        if q.closed {
            return Err(PushError::Closed);
        }
        if q.frames.len() >= self.capacity {
            drop(q);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(PushError::Full);
        }
        let was_empty = q.frames.is_empty();
        q.frames.push_back(frame);
        drop(q);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues frames whatever the capacity (for copies that were held for
    /// this connection's role).
    pub(crate) fn push_all(&self, frames: impl IntoIterator<Item = Utf8Bytes>) {
        let mut q = self.lock();
        if q.closed {
            return;
        }
        let was_empty = q.frames.is_empty();
        q.frames.extend(frames);
        let now_empty = q.frames.is_empty();
        drop(q);
        if was_empty && !now_empty {
            self.ready.notify_one();
        }
    }

    /// How many copies for this connection were dropped because its queue
    /// was full (since it connected).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many frames wait to be written now.
    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Refuses further frames and forgets the queued ones.
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.frames = VecDeque::new();
        drop(q);
        self.ready.notify_one();
        self.shut.notify_waiters();
    }

    /// Resolves once the outbox is closed (so a connection whose writer
    /// is stuck on a full socket still ends when the bus lets it go).
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.shut.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().closed {
                return;
            }
            notified.await;
        }
    }

    /// Waits for frames; moves all queued ones into `into`. Returns false
    /// once the outbox is closed.
    pub(crate) async fn take(&self, into: &mut VecDeque<Utf8Bytes>) -> bool {
        loop {
            {
                let mut q = self.lock();
                if q.closed {
                    return false;
                }
                if !q.frames.is_empty() {
                    std::mem::swap(&mut q.frames, into);
                    return true;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// Serves one WebSocket until the client leaves or the socket fails: reads
/// frames into `handler`, writes what arrives in `outbox`. Never sends a
/// close frame of its own (it answers a client's close frame). The caller
/// drops the stream afterwards, which closes the TCP connection. Returns
/// how the connection ended.
pub(crate) async fn run<H: FrameHandler, S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    outbox: &Outbox,
    handler: &mut H,
) -> End {
    let (mut sink, mut stream) = ws.split();
    let reader = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(tungstenite::Message::Text(text)) => handler.frame(Frame::Text(&text)),
                Ok(tungstenite::Message::Binary(bytes)) => handler.frame(Frame::Binary(&bytes)),
                Ok(tungstenite::Message::Close(_)) => return End::ClientClosed,
                Ok(_) => {}
                Err(tungstenite::Error::Capacity(CapacityError::MessageTooLong {
                    size,
                    max_size,
                })) => {
                    return End::TooLarge {
                        size,
                        max: max_size,
                    };
                }
                Err(_) => return End::Dropped,
            }
        }
        End::Dropped
    };
    let writer = async {
        let mut batch = VecDeque::new();
        while outbox.take(&mut batch).await {
            while let Some(frame) = batch.pop_front() {
                if sink.feed(tungstenite::Message::Text(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
            // Keep the spare buffer small once a burst is over.
            if batch.capacity() > 1024 {
                batch = VecDeque::new();
            }
        }
    };
    let end = tokio::select! {
        end = reader => end,
        () = writer => End::Closed,
        () = outbox.closed() => End::Closed,
    };
    outbox.close();
    if end == End::ClientClosed {
        // Send the reply to the client's close frame (queued by tungstenite).
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.flush()).await;
    }
    end
}
