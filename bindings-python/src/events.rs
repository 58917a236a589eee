//! Waking an asyncio event loop from the core's runtime without the GIL.
//!
//! Tokio tasks push [`Event`]s into a queue and write one byte to a pipe;
//! the event loop watches the pipe's read end (`loop.add_reader`), reads
//! the byte and takes the queued events with the GIL held. A flag keeps at
//! most one wake byte in flight, so the pipe never fills and a writer never
//! blocks.

use std::collections::VecDeque;
use std::io::{PipeReader, PipeWriter, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use exoservice::dispatch::{Delivery, DrainReport};
use exoservice::{ExoError, Message};

/// Something for the event loop.
pub(crate) enum Event {
    /// A message for a handler.
    Delivery(Delivery),
    /// The service stopped taking messages.
    Stopped,
    /// The outcome of the request with this token.
    Reply(u64, Result<Message, ExoError>),
    /// The drain is over.
    Drained(DrainReport),
}

/// The queue and the pipe that wakes its reader.
pub(crate) struct EventQueue {
    queue: Mutex<VecDeque<Event>>,
    wake_pending: AtomicBool,
    reader: PipeReader,
    writer: PipeWriter,
}

impl EventQueue {
    /// A new queue with its pipe.
    pub(crate) fn new() -> std::io::Result<EventQueue> {
        let (reader, writer) = std::io::pipe()?;
        Ok(EventQueue {
            queue: Mutex::new(VecDeque::new()),
            wake_pending: AtomicBool::new(false),
            reader,
            writer,
        })
    }

    /// The file descriptor the event loop watches for reading (Unix only:
    /// elsewhere an event loop cannot watch a pipe).
    pub(crate) fn fd(&self) -> Option<i64> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            Some(i64::from(self.reader.as_raw_fd()))
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// Queues an event and wakes the reader (callable from any thread).
    pub(crate) fn push(&self, event: Event) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(event);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // At most one byte is unread at a time: this write cannot block.
            let _ = (&self.writer).write(&[1]);
        }
    }

    /// Takes every queued event. The reader calls it after reading the wake
    /// byte: an event pushed from now on writes a new byte.
    pub(crate) fn take(&self) -> Vec<Event> {
        self.wake_pending.store(false, Ordering::Release);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn one_wake_byte_per_batch() {
        let q = EventQueue::new().unwrap();
        q.push(Event::Stopped);
        q.push(Event::Stopped);
        q.push(Event::Stopped);
        let mut buf = [0u8; 16];
        let n = (&q.reader).read(&mut buf).unwrap();
        assert_eq!(n, 1, "one byte for three events");
        assert_eq!(q.take().len(), 3);
        q.push(Event::Stopped);
        let n = (&q.reader).read(&mut buf).unwrap();
        assert_eq!(n, 1, "a new byte after the reader took the batch");
        assert_eq!(q.take().len(), 1);
    }
}
