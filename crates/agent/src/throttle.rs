//! Read rate limits and server backoff: how fast a move may read its source, and how
//! long it waits when a server says "slow down".
//!
//! A [`Throttle`] is a pair of token buckets (bytes per second, messages per second).
//! One belongs to each move (its profile's `[throttle]` keys or the `move` flags), and
//! one can be shared by every move against the same endpoint: it is an `Arc`, and the
//! buckets are behind one mutex, so several passes draw from the same budget. The pass
//! producer asks [`Throttles::reserve`] before it opens a message and before it reads
//! each chunk, and waits what it is told. Reservations may run the bucket into debt, so
//! a chunk larger than a second's budget waits in proportion instead of never fitting,
//! and concurrent movers queue fairly behind one another.
//!
//! [`BackoffPolicy`] turns a server's answer (an HTTP `Retry-After`, an IMAP
//! `Suggested Backoff Time`) or the lack of one into a wait: the hint when there is one,
//! otherwise exponential from `backoff_initial_ms`; always capped at `backoff_max_ms`,
//! plus jitter so agents refused together do not return together.
//!
//! Pure arithmetic over an injected [`Clock`]: this module never sleeps. The caller
//! sleeps (the pass does so in a way that a closing session interrupts), which is what
//! lets the tests be deterministic.

use mailferry_core::profile::ThrottleSettings;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// === Clock ===

/// Monotonic time for the buckets, injectable so tests need no sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since an arbitrary fixed origin; never goes backwards.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

// === TokenBucket ===

/// One token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second (both positive).
    pub fn new(rate: f64, burst: f64, now: Duration) -> TokenBucket {
        let rate = rate.max(f64::MIN_POSITIVE);
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` tokens at `now` and returns how long the caller must wait before using
    /// them (zero if they were there). The bucket may go into debt: the next caller then
    /// waits for that debt too, so waits add up in arrival order.
    pub fn reserve(&mut self, n: f64, now: Duration) -> Duration {
        if now > self.last {
            let refill = (now - self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last = now;
        }
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

// === Throttle ===

/// The two rates of a throttle; `None`: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Source bytes per second.
    pub bytes_per_second: Option<u64>,
    /// Messages per second.
    pub messages_per_second: Option<f64>,
}

impl Limits {
    /// The limits of a profile's `[throttle]` table.
    pub fn from_profile(t: &ThrottleSettings) -> Limits {
        Limits {
            bytes_per_second: t.max_bytes_per_second.map(|b| b.0),
            messages_per_second: t.max_messages_per_second,
        }
    }

    /// True if neither rate is limited.
    pub fn is_unlimited(&self) -> bool {
        self.bytes_per_second.is_none() && self.messages_per_second.is_none()
    }
}

#[derive(Debug)]
struct Buckets {
    bytes: Option<TokenBucket>,
    messages: Option<TokenBucket>,
}

/// A rate limit on reading sources, shareable between moves (`Arc<Throttle>`).
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    clock: Arc<dyn Clock>,
    buckets: Mutex<Buckets>,
}

impl Throttle {
    /// A throttle on the real clock. A second's worth of each rate may be used at once.
    pub fn new(limits: Limits) -> Throttle {
        Throttle::with_clock(limits, Arc::new(MonotonicClock::default()))
    }

    /// A throttle on `clock` (tests).
    pub fn with_clock(limits: Limits, clock: Arc<dyn Clock>) -> Throttle {
        let now = clock.now();
        let bucket = |rate: f64| TokenBucket::new(rate, rate, now);
        Throttle {
            buckets: Mutex::new(Buckets {
                bytes: limits
                    .bytes_per_second
                    .filter(|&b| b > 0)
                    .map(|b| bucket(b as f64)),
                messages: limits
                    .messages_per_second
                    .filter(|m| m.is_finite() && *m > 0.0)
                    .map(bucket),
            }),
            limits,
            clock,
        }
    }

    /// The configured rates.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes `bytes` and `messages` from the buckets; returns how long to wait before
    /// reading them.
    pub fn reserve(&self, bytes: u64, messages: u64) -> Duration {
        let now = self.clock.now();
        let mut b = self.buckets.lock().expect("throttle lock");
        let mut wait = Duration::ZERO;
        if let (Some(bucket), true) = (&mut b.bytes, bytes > 0) {
            wait = wait.max(bucket.reserve(bytes as f64, now));
        }
        if let (Some(bucket), true) = (&mut b.messages, messages > 0) {
            wait = wait.max(bucket.reserve(messages as f64, now));
        }
        wait
    }
}

/// Every throttle a pass obeys: its own, and any shared with other moves (endpoint).
#[derive(Clone, Debug, Default)]
pub struct Throttles(Vec<Arc<Throttle>>);

impl Throttles {
    /// No limit at all.
    pub fn none() -> Throttles {
        Throttles::default()
    }

    /// The move's own throttle from its limits (nothing if unlimited), plus `shared`.
    pub fn for_move(own: Limits, shared: Option<Arc<Throttle>>) -> Throttles {
        let mut v = Vec::new();
        if !own.is_unlimited() {
            v.push(Arc::new(Throttle::new(own)));
        }
        v.extend(shared);
        Throttles(v)
    }

    /// Adds a throttle.
    pub fn push(&mut self, t: Arc<Throttle>) {
        self.0.push(t);
    }

    /// True if nothing limits the pass.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reserves from every throttle at once and returns the longest wait.
    pub fn reserve(&self, bytes: u64, messages: u64) -> Duration {
        self.0
            .iter()
            .map(|t| t.reserve(bytes, messages))
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

// === Server backoff ===

/// How long to wait when a server asks for patience.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// First wait when the server gives no hint; doubled on each further attempt.
    pub initial: Duration,
    /// Longest single wait, whatever the server suggests.
    pub max: Duration,
    /// Attempts in all before giving up.
    pub attempts: u32,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy::from_profile(&ThrottleSettings::default())
    }
}

impl BackoffPolicy {
    /// The policy of a profile's `[throttle]` table (`backoff_initial_ms`,
    /// `backoff_max_ms`), with 20 attempts.
    pub fn from_profile(t: &ThrottleSettings) -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(t.backoff_initial_ms.max(1)),
            max: Duration::from_millis(t.backoff_max_ms.max(1)),
            attempts: 20,
        }
    }

    /// The wait before retry number `attempt` (1-based): the server's `hint` if it gave
    /// one, else `initial` doubled per earlier retry; capped at `max`; then up to a
    /// tenth more, chosen by `random`, so that agents refused together spread out.
    pub fn wait(&self, attempt: u32, hint: Option<Duration>, random: u64) -> Duration {
        let base = hint
            .unwrap_or_else(|| {
                self.initial
                    .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            })
            .min(self.max);
        let spread = (base.as_millis() as u64 / 10).max(1);
        base + Duration::from_millis(random % spread)
    }
}

/// A random number for [`BackoffPolicy::wait`].
pub fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// The wait a server suggests in the text of a response, if it names one: Exchange's
/// `NO [THROTTLED] ... Suggested Backoff Time: 299609 milliseconds`, or the same with
/// `ms`, `seconds` or `s`. Case and spacing do not matter. Codes without a time
/// (`[UNAVAILABLE]`, `[LIMIT]`) give `None`: the caller backs off on its own.
pub fn backoff_hint(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    let at = lower.find("backoff time")?;
    let rest = lower[at + "backoff time".len()..].trim_start();
    let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let n: u64 = rest[..digits].parse().ok()?;
    let unit = rest[digits..].trim_start();
    let word_end = unit
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(unit.len());
    match &unit[..word_end] {
        "" | "ms" | "msec" | "millisecond" | "milliseconds" => Some(Duration::from_millis(n)),
        "s" | "sec" | "secs" | "second" | "seconds" => Some(Duration::from_secs(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
