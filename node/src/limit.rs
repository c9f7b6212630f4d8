//! Flood limits for the node's own clients: a token bucket per client (its source address and
//! port), one budget for REGISTER, one for the other out-of-dialog requests and one for the
//! requests inside a dialog (a To tag: BYE, re-INVITE, ACK, INFO...), so that a
//! softphone that floods is refused (503 with Retry-After, RFC 3261 §21.5.4) while every other
//! client keeps its own budget.
//!
//! Sans-IO: every call takes `now`. Bounded: at most [`Config::max_clients`] clients are
//! tracked. A client whose budgets are full again is the same as a client never seen, so it is
//! forgotten first (every minute, and whenever the table is full); when every tracked client
//! is busy, the one closest to a full budget makes room.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often idle clients are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The Retry-After of a budget that never refills.
const NEVER: Duration = Duration::from_secs(3600);

/// A budget: `burst` requests at once, then `per_second` more each second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many requests may come at once (the bucket's size); 0 refuses every request.
    pub burst: u32,
    /// How many more requests each second brings (the refill rate).
    pub per_second: u32,
}

impl Rate {
    /// No limit at all (for load generators such as sipp, which send like a thousand
    /// softphones from one port).
    pub const UNLIMITED: Rate = Rate {
        burst: u32::MAX,
        per_second: u32::MAX,
    };

    /// `burst` requests at once, then `per_second` each second.
    pub const fn new(burst: u32, per_second: u32) -> Rate {
        Rate { burst, per_second }
    }

    fn is_unlimited(&self) -> bool {
        self.burst == u32::MAX
    }
}

/// How the node limits each of its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The REGISTERs of one client. Default: 20 at once, then 2 a second (a softphone sends
    /// one every few minutes).
    pub register: Rate,
    /// The other out-of-dialog requests of one client (INVITE, MESSAGE, OPTIONS,
    /// SUBSCRIBE...). Default: 20 at once, then 5 a second. CANCELs are not counted.
    pub requests: Rate,
    /// The requests of one client inside a dialog (a To tag: ACK, BYE, re-INVITE, UPDATE,
    /// INFO, PRACK, NOTIFY...). Default: 50 at once, then 10 a second (a call sends a few).
    pub in_dialog: Rate,
    /// How many clients are tracked at once. Default 4096.
    pub max_clients: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            register: Rate::new(20, 2),
            requests: Rate::new(20, 5),
            in_dialog: Rate::new(50, 10),
            max_clients: 4096,
        }
    }
}

impl Config {
    /// No limits.
    pub fn unlimited() -> Config {
        Config {
            register: Rate::UNLIMITED,
            requests: Rate::UNLIMITED,
            in_dialog: Rate::UNLIMITED,
            ..Config::default()
        }
    }
}

/// Which budget a request is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// A REGISTER.
    Register,
    /// Any other out-of-dialog request.
    Requests,
    /// A request inside a dialog (with a To tag).
    InDialog,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When the client may send again: whole seconds, at least 1 (for Retry-After).
    pub retry_after: Duration,
    /// The first refusal since the client's last accepted request of this budget: worth a
    /// warning in the log; the next ones are not.
    pub first: bool,
}

/// The budgets of every client. See the module docs.
#[derive(Debug)]
pub struct Limiter {
    config: Config,
    clients: HashMap<SocketAddr, Client>,
    next_sweep: Option<Instant>,
}

impl Limiter {
    /// A limiter with no client yet.
    pub fn new(config: Config) -> Limiter {
        Limiter {
            config,
            clients: HashMap::new(),
            next_sweep: None,
        }
    }

    /// Takes one request of `budget` from `client`'s budget at `now`, or says why not.
    pub fn check(
        &mut self,
        now: Instant,
        client: SocketAddr,
        budget: Budget,
    ) -> Result<(), Refusal> {
        let rate = self.rate(budget);
        if rate.is_unlimited() {
            return Ok(());
        }
        if self.config.max_clients == 0 {
            return Err(Refusal {
                retry_after: NEVER,
                first: true,
            });
        }
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.sweep(now);
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
        if !self.clients.contains_key(&client) && self.clients.len() >= self.config.max_clients {
            self.make_room(now);
        }
        let config = &self.config;
        let entry = self.clients.entry(client).or_insert_with(|| Client {
            register: Bucket::full(config.register, now),
            requests: Bucket::full(config.requests, now),
            in_dialog: Bucket::full(config.in_dialog, now),
        });
        let bucket = match budget {
            Budget::Register => &mut entry.register,
            Budget::Requests => &mut entry.requests,
            Budget::InDialog => &mut entry.in_dialog,
        };
        bucket.take(rate, now)
    }

    /// How many clients are tracked.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    fn rate(&self, budget: Budget) -> Rate {
        match budget {
            Budget::Register => self.config.register,
            Budget::Requests => self.config.requests,
            Budget::InDialog => self.config.in_dialog,
        }
    }

    /// Forgets the clients whose budgets are full again: nothing is lost.
    fn sweep(&mut self, now: Instant) {
        let config = &self.config;
        self.clients.retain(|_, c| c.level(config, now) < 3.0);
    }

    /// With the table full: forgets idle clients, or else the client closest to a full
    /// budget (the one that gains least by being forgotten).
    fn make_room(&mut self, now: Instant) {
        self.sweep(now);
        if self.clients.len() < self.config.max_clients {
            return;
        }
        let config = &self.config;
        let fullest = self
            .clients
            .iter()
            .map(|(addr, c)| (*addr, c.level(config, now)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(addr, _)| addr);
        if let Some(addr) = fullest {
            self.clients.remove(&addr);
        }
    }
}

/// The budgets of one client.
#[derive(Debug)]
struct Client {
    register: Bucket,
    requests: Bucket,
    in_dialog: Bucket,
}

impl Client {
    /// How full its budgets are, from 0 to 3 (3: all full, the client is idle).
    fn level(&self, config: &Config, now: Instant) -> f64 {
        self.register.level(config.register, now)
            + self.requests.level(config.requests, now)
            + self.in_dialog.level(config.in_dialog, now)
    }
}

/// A token bucket (also the pace of a node's Routes to one peer, in `p2p`).
#[derive(Debug)]
pub(crate) struct Bucket {
    /// Tokens at `at`.
    tokens: f64,
    at: Instant,
    /// The last request was refused.
    refusing: bool,
}

impl Bucket {
    pub(crate) fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
            refusing: false,
        }
    }

    /// Tokens at `now`.
    fn tokens(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst))
    }

    /// How full the bucket is at `now`, from 0 to 1 (an empty-sized bucket counts as full).
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        if rate.burst == 0 {
            return 1.0;
        }
        self.tokens(rate, now) / f64::from(rate.burst)
    }

    /// How long from `now` until the bucket holds a token: zero when it holds one now;
    /// [`NEVER`] when it never refills.
    pub(crate) fn wait(&self, rate: Rate, now: Instant) -> Duration {
        let missing = 1.0 - self.tokens(rate, now);
        if missing <= 0.0 {
            Duration::ZERO
        } else if rate.per_second == 0 || rate.burst == 0 {
            NEVER
        } else {
            Duration::from_secs_f64(missing / f64::from(rate.per_second))
        }
    }

    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Refusal> {
        self.tokens = self.tokens(rate, now);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refusing = false;
            return Ok(());
        }
        let retry_after = if rate.per_second == 0 || rate.burst == 0 {
            NEVER
        } else {
            let wait = (1.0 - self.tokens) / f64::from(rate.per_second);
            Duration::from_secs((wait.ceil() as u64).max(1))
        };
        let first = !std::mem::replace(&mut self.refusing, true);
        Err(Refusal { retry_after, first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn limiter(register: Rate, requests: Rate, max_clients: usize) -> Limiter {
        Limiter::new(Config {
            register,
            requests,
            in_dialog: requests,
            max_clients,
        })
    }

    /// Requests inside a dialog have a budget of their own.
    #[test]
    fn in_dialog_requests_have_their_own_budget() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Config {
            in_dialog: Rate::new(1, 0),
            ..Config::default()
        });
        assert!(l.check(t0, client(1), Budget::InDialog).is_ok());
        assert!(l.check(t0, client(1), Budget::InDialog).is_err());
        assert!(l.check(t0, client(1), Budget::Requests).is_ok());
        assert!(l.check(t0, client(2), Budget::InDialog).is_ok());
    }

    /// The burst goes through at once; the next request is refused, with a Retry-After of
    /// the time one more takes to come, and only the first refusal is marked first.
    #[test]
    fn a_burst_then_refusals_with_retry_after() {
        let t0 = Instant::now();
        let mut l = limiter(Rate::new(3, 1), Rate::new(3, 1), 16);
        for _ in 0..3 {
            assert_eq!(l.check(t0, client(1), Budget::Register), Ok(()));
        }
        let refused = l.check(t0, client(1), Budget::Register).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert!(refused.first);
        let again = l.check(t0, client(1), Budget::Register).unwrap_err();
        assert!(!again.first, "one warning per flood");
    }

    /// The bucket refills at `per_second`, up to `burst`.
    #[test]
    fn budgets_refill_over_time() {
        let t0 = Instant::now();
        let mut l = limiter(Rate::new(2, 4), Rate::new(2, 4), 16);
        assert!(l.check(t0, client(1), Budget::Requests).is_ok());
        assert!(l.check(t0, client(1), Budget::Requests).is_ok());
        assert!(l.check(t0, client(1), Budget::Requests).is_err());
        // A quarter of a second brings one.
        let t1 = t0 + Duration::from_millis(250);
        assert!(l.check(t1, client(1), Budget::Requests).is_ok());
        assert!(l.check(t1, client(1), Budget::Requests).is_err());
        // An hour brings the burst, no more.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(l.check(t2, client(1), Budget::Requests).is_ok());
        assert!(l.check(t2, client(1), Budget::Requests).is_ok());
        let refused = l.check(t2, client(1), Budget::Requests).unwrap_err();
        assert!(refused.first, "accepted requests in between: a new flood");
    }

    /// REGISTERs and other requests have separate budgets; so do clients, down to the port.
    #[test]
    fn budgets_are_per_kind_and_per_client() {
        let t0 = Instant::now();
        let mut l = limiter(Rate::new(1, 1), Rate::new(1, 1), 16);
        assert!(l.check(t0, client(1), Budget::Register).is_ok());
        assert!(l.check(t0, client(1), Budget::Register).is_err());
        assert!(l.check(t0, client(1), Budget::Requests).is_ok());
        assert!(l.check(t0, client(2), Budget::Register).is_ok());
        let other_host = SocketAddr::from(([127, 0, 0, 2], 1));
        assert!(l.check(t0, other_host, Budget::Register).is_ok());
    }

    #[test]
    fn a_bucket_says_how_long_until_its_next_token() {
        let rate = Rate::new(2, 10);
        let t0 = Instant::now();
        let mut bucket = Bucket::full(rate, t0);
        assert_eq!(bucket.wait(rate, t0), Duration::ZERO);
        bucket.take(rate, t0).unwrap();
        bucket.take(rate, t0).unwrap();
        assert_eq!(bucket.wait(rate, t0), Duration::from_millis(100));
        let later = t0 + Duration::from_millis(40);
        assert!(
            bucket.wait(rate, later).abs_diff(Duration::from_millis(60)) < Duration::from_micros(1)
        );
        assert_eq!(
            bucket.wait(rate, t0 + Duration::from_millis(100)),
            Duration::ZERO
        );
        let never = Rate::new(0, 0);
        assert_eq!(Bucket::full(never, t0).wait(never, t0), NEVER);
    }

    /// A Retry-After is whole seconds, rounded up.
    #[test]
    fn retry_after_rounds_up() {
        let t0 = Instant::now();
        let mut l = limiter(Rate::new(1, 1), Rate::new(4, 1), 16);
        for _ in 0..4 {
            assert!(l.check(t0, client(1), Budget::Requests).is_ok());
        }
        let t1 = t0 + Duration::from_millis(100);
        let refused = l.check(t1, client(1), Budget::Requests).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        let mut slow = limiter(Rate::new(1, 1), Rate::new(1, 1), 16);
        assert!(slow.check(t0, client(1), Budget::Register).is_ok());
        assert!(slow.check(t0, client(1), Budget::Register).is_err());
        let mut never = limiter(Rate::new(0, 0), Rate::new(1, 0), 16);
        let refused = never.check(t0, client(1), Budget::Register).unwrap_err();
        assert_eq!(refused.retry_after, NEVER);
    }

    /// Unlimited budgets take everything and track nobody.
    #[test]
    fn unlimited_tracks_nobody() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Config::unlimited());
        for port in 0..10_000 {
            assert!(l.check(t0, client(port), Budget::Requests).is_ok());
        }
        assert_eq!(l.clients(), 0);
    }

    /// The table never grows beyond `max_clients`: idle clients (full budgets) go first, then
    /// the busy client closest to a full budget.
    #[test]
    fn the_table_is_bounded_and_idle_clients_go_first() {
        let t0 = Instant::now();
        let mut l = limiter(Rate::new(2, 1), Rate::new(2, 1), 4);
        // Client 1 floods: its budget is empty.
        for _ in 0..5 {
            let _ = l.check(t0, client(1), Budget::Requests);
        }
        // Thousands of other clients, one request each, a second apart: each is idle (full
        // again) a second later.
        for port in 2..2000 {
            let at = t0 + Duration::from_millis(u64::from(port) * 10);
            assert!(l.check(at, client(port), Budget::Requests).is_ok());
            assert!(l.clients() <= 4);
        }
        // Busy clients only: the one closest to a full budget makes room.
        let t1 = t0 + Duration::from_secs(100);
        for port in 3000..3004 {
            for _ in 0..2 {
                assert!(l.check(t1, client(port), Budget::Requests).is_ok());
            }
        }
        assert_eq!(l.clients(), 4);
        assert!(l.check(t1, client(4000), Budget::Requests).is_ok());
        assert_eq!(l.clients(), 4);
    }

    /// A flooding client stays limited while the table turns over: it is never the idle one.
    #[test]
    fn a_flooder_is_not_forgotten_while_it_floods() {
        let t0 = Instant::now();
        let mut l = limiter(Rate::new(2, 1), Rate::new(2, 1), 3);
        for step in 0..500u64 {
            let at = t0 + Duration::from_millis(step * 100);
            // The flooder: ten requests every 100 ms, far beyond one a second.
            let accepted = (0..10)
                .filter(|_| l.check(at, client(1), Budget::Requests).is_ok())
                .count();
            assert!(accepted <= 2, "step {step}: {accepted}");
            // A new client every step, one request.
            assert!(
                l.check(at, client(2 + step as u16), Budget::Requests)
                    .is_ok()
            );
        }
    }

    /// A table of size 0 refuses everybody (nothing can be tracked).
    #[test]
    fn no_room_refuses() {
        let mut l = limiter(Rate::new(2, 1), Rate::new(2, 1), 0);
        assert!(
            l.check(Instant::now(), client(1), Budget::Register)
                .is_err()
        );
        assert_eq!(l.clients(), 0);
    }
}
