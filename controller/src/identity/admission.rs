//! What `Identity.Certify` lets through to the authenticator. Every token a
//! stranger sends would otherwise cost a check (on Kubernetes, a
//! TokenReview call to the API server): requests are limited per source
//! address, and a token just refused is refused again from memory, without
//! asking the authenticator, until the refusal expires.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use tonic::{Code, Status};

#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    /// Requests a source may make at once…
    pub burst: u32,
    /// …and per second after that. A sidecar certifies at start and renews
    /// every few hours; a node restarting all its agents at once is the
    /// burst (local agents all come from 127.0.0.1, so the default is
    /// generous; refused sidecars retry with backoff).
    pub per_second: f64,
    /// How long a refused token stays refused without a new check.
    pub refusal_ttl: Duration,
    /// Sources and refusals remembered; the oldest are forgotten first.
    pub max_sources: usize,
    pub max_refusals: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            burst: 200,
            per_second: 20.0,
            refusal_ttl: Duration::from_secs(10),
            max_sources: 10_000,
            max_refusals: 10_000,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct State {
    buckets: HashMap<Option<IpAddr>, Bucket>,
    /// Insertion order, to forget the oldest source when full.
    sources: VecDeque<Option<IpAddr>>,
    refusals: HashMap<[u8; 32], (Instant, Code, String)>,
    refusal_order: VecDeque<[u8; 32]>,
}

pub struct Admission {
    cfg: AdmissionConfig,
    state: Mutex<State>,
}

/// Why a request was stopped here.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    RateLimited,
    /// Refused moments ago; the same answer again.
    Refused,
}

impl Stopped {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Refused => "refused_recently",
        }
    }
}

fn key(agent: &str, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(agent.as_bytes());
    h.update([0]);
    h.update(token.as_bytes());
    h.finalize().into()
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Self {
        Self {
            cfg,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Only counters are kept; a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a request from `source` for `agent` with `token` reach the
    /// authenticator? `Err` carries the status to answer with.
    pub fn admit(
        &self,
        source: Option<IpAddr>,
        agent: &str,
        token: &str,
    ) -> Result<(), (Stopped, Status)> {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some((until, code, message)) = st.refusals.get(&key(agent, token))
            && *until > now
        {
            return Err((Stopped::Refused, Status::new(*code, message.clone())));
        }
        if !st.buckets.contains_key(&source) {
            if st.sources.len() >= self.cfg.max_sources
                && let Some(oldest) = st.sources.pop_front()
            {
                st.buckets.remove(&oldest);
            }
            st.sources.push_back(source);
            st.buckets.insert(
                source,
                Bucket {
                    tokens: f64::from(self.cfg.burst),
                    at: now,
                },
            );
        }
        let (burst, rate) = (f64::from(self.cfg.burst), self.cfg.per_second);
        let bucket = st.buckets.get_mut(&source).ok_or_else(|| {
            (
                Stopped::RateLimited,
                Status::internal("admission state lost"),
            )
        })?;
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate.max(f64::MIN_POSITIVE));
            return Err((
                Stopped::RateLimited,
                Status::resource_exhausted(format!(
                    "too many certificate requests from this address; retry in {} ms",
                    wait.as_millis().max(1)
                )),
            ));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// The authenticator refused this token: answer the same for a while.
    pub fn refused(&self, agent: &str, token: &str, status: &Status) {
        let until = Instant::now() + self.cfg.refusal_ttl;
        let k = key(agent, token);
        let mut st = self.lock();
        if !st.refusals.contains_key(&k) {
            if st.refusal_order.len() >= self.cfg.max_refusals
                && let Some(oldest) = st.refusal_order.pop_front()
            {
                st.refusals.remove(&oldest);
            }
            st.refusal_order.push_back(k);
        }
        st.refusals
            .insert(k, (until, status.code(), status.message().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_source_gets_its_burst_then_waits_and_others_are_unaffected() {
        let a = Admission::new(AdmissionConfig {
            burst: 3,
            per_second: 0.001,
            ..AdmissionConfig::default()
        });
        for i in 0..3 {
            assert!(a.admit(ip(1), "ns/a", &format!("t{i}")).is_ok());
        }
        let (why, status) = a.admit(ip(1), "ns/a", "t9").unwrap_err();
        assert_eq!(why, Stopped::RateLimited);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(a.admit(ip(2), "ns/b", "t0").is_ok(), "another source");
    }

    #[test]
    fn a_refused_token_is_refused_again_without_a_check_until_it_expires() {
        let a = Admission::new(AdmissionConfig {
            refusal_ttl: Duration::from_millis(50),
            ..AdmissionConfig::default()
        });
        a.refused(
            "ns/a",
            "bad",
            &Status::unauthenticated("token rejected: nope"),
        );
        let (why, status) = a.admit(ip(1), "ns/a", "bad").unwrap_err();
        assert_eq!(why, Stopped::Refused);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "token rejected: nope");
        assert!(a.admit(ip(1), "ns/a", "good").is_ok(), "only that token");
        assert!(a.admit(ip(1), "ns/b", "bad").is_ok(), "only for that agent");
        std::thread::sleep(Duration::from_millis(60));
        assert!(a.admit(ip(1), "ns/a", "bad").is_ok(), "expired");
    }

    #[test]
    fn memory_is_bounded() {
        let a = Admission::new(AdmissionConfig {
            max_sources: 4,
            max_refusals: 4,
            ..AdmissionConfig::default()
        });
        for i in 0..50u8 {
            let _ = a.admit(ip(i), "ns/a", "t");
            a.refused("ns/a", &format!("bad{i}"), &Status::unauthenticated("no"));
        }
        let st = a.lock();
        assert!(st.buckets.len() <= 4 && st.sources.len() <= 4);
        assert!(st.refusals.len() <= 4 && st.refusal_order.len() <= 4);
    }
}
