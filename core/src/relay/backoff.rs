//! Reconnect delays (exponential with jitter) and the schedule of log lines
//! for failed attempts (the first, then with doubling gaps).

use std::time::Duration;

/// Exponential backoff: starts at `start`, doubles up to `cap`, with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    next: Duration,
    failures: u64,
}

impl Backoff {
    /// A backoff starting at `start` and capped at `cap`.
    pub fn new(start: Duration, cap: Duration) -> Self {
        Backoff {
            start,
            cap,
            next: start,
            failures: 0,
        }
    }

    /// The delay before the next attempt (between half and all of the
    /// current step), and the step doubles for the time after.
    pub fn next_delay(&mut self) -> Duration {
        self.failures += 1;
        let step = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Failed attempts since the last success.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Whether the current failure deserves a log line: the 1st, 2nd, 4th,
    /// 8th, ... so a long outage is logged with doubling gaps.
    pub fn should_log(&self) -> bool {
        self.failures.is_power_of_two()
    }

    /// A successful connection: start over.
    pub fn reset(&mut self) {
        self.next = self.start;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_logs_sparsely() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut logged = Vec::new();
        let mut steps = Vec::new();
        for _ in 0..20 {
            steps.push(b.next_delay());
            if b.should_log() {
                logged.push(b.failures());
            }
        }
        assert!(steps[0] >= Duration::from_millis(50) && steps[0] <= Duration::from_millis(100));
        assert!(steps.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(steps[19] >= Duration::from_millis(2500));
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
