use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// A clock that only moves when told to.
#[derive(Debug, Default)]
struct Manual(AtomicU64);

impl Manual {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for Manual {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn bucket_spends_its_burst_then_waits_in_proportion() {
    let mut b = TokenBucket::new(100.0, 100.0, Duration::ZERO);
    assert_eq!(b.reserve(60.0, Duration::ZERO), Duration::ZERO);
    assert_eq!(b.reserve(40.0, Duration::ZERO), Duration::ZERO);
    // Empty: 50 more tokens are half a second away.
    assert_eq!(b.reserve(50.0, Duration::ZERO), ms(500));
    // The next caller queues behind that debt.
    assert_eq!(b.reserve(50.0, Duration::ZERO), ms(1000));
    // After the waits have passed, the debt is paid and the bucket refills again.
    assert_eq!(b.reserve(0.0, ms(1000)), Duration::ZERO);
    assert_eq!(b.reserve(100.0, ms(2000)), Duration::ZERO);
}

#[test]
fn bucket_never_saves_more_than_its_burst() {
    let mut b = TokenBucket::new(10.0, 10.0, Duration::ZERO);
    // A long idle time refills only up to the burst.
    assert_eq!(b.reserve(10.0, Duration::from_secs(3600)), Duration::ZERO);
    assert_eq!(b.reserve(5.0, Duration::from_secs(3600)), ms(500));
}

#[test]
fn a_chunk_larger_than_a_second_of_budget_waits_instead_of_never_fitting() {
    let mut b = TokenBucket::new(1000.0, 1000.0, Duration::ZERO);
    assert_eq!(b.reserve(5000.0, Duration::ZERO), Duration::from_secs(4));
}

#[test]
fn throttle_limits_bytes_and_messages_and_returns_the_longer_wait() {
    let clock = Arc::new(Manual::default());
    let t = Throttle::with_clock(
        Limits {
            bytes_per_second: Some(1000),
            messages_per_second: Some(2.0),
        },
        clock.clone(),
    );
    assert_eq!(t.reserve(0, 1), Duration::ZERO);
    assert_eq!(t.reserve(0, 1), Duration::ZERO);
    // The third message of the same instant waits half a second for its token.
    assert_eq!(t.reserve(0, 1), ms(500));
    clock.advance(ms(500));
    // Bytes: 1000 in the bucket; 1500 asked: half a second more; the message bucket
    // (now empty, 2/s) asks for 0.5 s too.
    assert_eq!(t.reserve(1500, 1), ms(500));
    clock.advance(Duration::from_secs(10));
    assert_eq!(t.reserve(1000, 1), Duration::ZERO);
}

#[test]
fn a_shared_throttle_is_one_budget_for_several_moves() {
    let clock = Arc::new(Manual::default());
    let shared = Arc::new(Throttle::with_clock(
        Limits {
            bytes_per_second: Some(100),
            messages_per_second: None,
        },
        clock.clone(),
    ));
    let a = Throttles::for_move(Limits::default(), Some(shared.clone()));
    let b = Throttles::for_move(Limits::default(), Some(shared));
    assert_eq!(a.reserve(100, 1), Duration::ZERO);
    // Move b pays for what move a took.
    assert_eq!(b.reserve(100, 1), Duration::from_secs(1));
    assert!(Throttles::none().is_empty());
    assert_eq!(
        Throttles::none().reserve(u64::MAX, u64::MAX),
        Duration::ZERO
    );
}

#[test]
fn profile_keys_become_limits() {
    let mut t = ThrottleSettings::default();
    assert!(Limits::from_profile(&t).is_unlimited());
    t.max_bytes_per_second = Some(mailferry_core::profile::ByteSize(10_000_000));
    t.max_messages_per_second = Some(5.0);
    let l = Limits::from_profile(&t);
    assert_eq!(l.bytes_per_second, Some(10_000_000));
    assert_eq!(l.messages_per_second, Some(5.0));
    assert!(!Throttles::for_move(l, None).is_empty());
}

#[test]
fn backoff_uses_the_hint_else_doubles_and_is_always_capped() {
    let p = BackoffPolicy {
        initial: ms(1000),
        max: Duration::from_secs(60),
        attempts: 5,
    };
    // random = 0: no jitter.
    assert_eq!(p.wait(1, None, 0), ms(1000));
    assert_eq!(p.wait(2, None, 0), ms(2000));
    assert_eq!(p.wait(3, None, 0), ms(4000));
    assert_eq!(p.wait(30, None, 0), Duration::from_secs(60));
    assert_eq!(p.wait(1, Some(Duration::from_secs(3)), 0), ms(3000));
    assert_eq!(
        p.wait(1, Some(ms(299_609)), 0),
        Duration::from_secs(60),
        "a hint is capped too"
    );
    // Jitter adds at most a tenth.
    for r in [1, 7, 99, u64::MAX] {
        let w = p.wait(1, Some(Duration::from_secs(10)), r);
        assert!(
            w >= Duration::from_secs(10) && w < Duration::from_secs(11),
            "{w:?}"
        );
    }
    let d = BackoffPolicy::default();
    assert_eq!(d.initial, ms(1000));
    assert!(
        d.wait(1, Some(ms(299_609)), 0) == ms(299_609),
        "the default cap lets Exchange's five-minute hint be honoured"
    );
}

#[test]
fn backoff_hints_from_server_text() {
    assert_eq!(
        backoff_hint(
            "[THROTTLED] Request is throttled. Suggested Backoff Time: 299609 milliseconds"
        ),
        Some(ms(299_609))
    );
    assert_eq!(
        backoff_hint("NO [LIMIT] suggested backoff time:250ms"),
        Some(ms(250))
    );
    assert_eq!(
        backoff_hint("Suggested Backoff Time: 30 seconds."),
        Some(Duration::from_secs(30))
    );
    assert_eq!(backoff_hint("Backoff Time: 42"), Some(ms(42)));
    assert_eq!(backoff_hint("[UNAVAILABLE] try later"), None);
    assert_eq!(backoff_hint("Suggested Backoff Time: soon"), None);
    assert_eq!(backoff_hint("Suggested Backoff Time: 5 fortnights"), None);
    assert_eq!(backoff_hint(""), None);
}
