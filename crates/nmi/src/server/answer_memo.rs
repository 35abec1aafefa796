//! The answer memo: answers to repeated token requests, reused while the cluster state is
//! unchanged.
//!
//! Most token traffic is a pod asking the same question again. Deciding and rendering an answer
//! is most of NMI's own CPU per request, yet the decision can only change when the mirrored
//! state changes, and any change moves [`State::version`](crate::state::State::version). So an
//! authorized answer is kept for its source IP and exact query at that version, and the first
//! change of state drops every kept answer. The body is rendered again when the second turns
//! (`expires_in` counts down); the caller decides whether the kept token may still be handed
//! out without asking the token cache (which refreshes tokens ahead of expiry).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

use axum::body::Bytes;

use mirror::sync;

use crate::{authorizer::Audit, token::Token};

/// An authorized answer: the token and who it was for.
#[derive(Debug)]
pub struct Answer {
    pub token: Arc<Token>,
    pub audit: Audit,
}

/// An answer and its latest rendering.
#[derive(Clone, Debug)]
pub struct Kept {
    pub answer: Arc<Answer>,
    /// The second `body` was rendered in.
    pub second: u64,
    pub body: Bytes,
}

struct Entry {
    query: Box<str>,
    kept: Kept,
}

/// About what a memo entry takes besides its strings: the entry, the `Arc`s, the list's slot.
const ENTRY_OVERHEAD: usize = 256;

impl Kept {
    /// About what this answer takes in memory for the memo: its body (which holds the token),
    /// the token it shares with the cache (kept alive here after the cache lets it go), and the
    /// audit's strings.
    fn approx_bytes(&self) -> usize {
        let a = &self.answer.audit;
        self.body.len()
            + self.answer.token.access_token.len()
            + [
                &a.pod,
                &a.namespace,
                &a.identity,
                &a.binding,
                &a.client_id,
                &a.resource,
            ]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
    }
}

#[derive(Default)]
struct Inner {
    /// The state version every entry was authorized at.
    version: u64,
    /// A pod asks few distinct questions: a short list per IP, compared without allocating.
    by_ip: HashMap<IpAddr, Vec<Entry>>,
    len: usize,
    /// About what the entries take (queries, answers and [`ENTRY_OVERHEAD`]).
    bytes: usize,
}

/// The answers authorized at the latest state version, at most `max` of them and about
/// `max_bytes`: a pod chooses its query (unknown parameters are accepted), up to a request
/// head's size, so the count alone would let 1024 long queries hold 16 MiB.
pub struct AnswerMemo {
    inner: RwLock<Inner>,
    max: usize,
    max_bytes: usize,
}

/// Default of the memo's bound in bytes: 1024 answers of a typical 4 to 6 KiB (a token's body,
/// the token, the audit) fit, so real traffic meets the count first.
pub const DEFAULT_MAX_BYTES: usize = 8 << 20;

impl Default for AnswerMemo {
    fn default() -> Self {
        Self::new(1024, DEFAULT_MAX_BYTES)
    }
}

impl AnswerMemo {
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Self {
            inner: RwLock::default(),
            max,
            max_bytes,
        }
    }

    /// The answer kept for `ip` and `query`, if it was authorized at state `version`.
    pub fn get(&self, ip: IpAddr, query: &str, version: u64) -> Option<Kept> {
        let inner = sync::read(&self.inner);
        if inner.version != version {
            return None;
        }
        inner
            .by_ip
            .get(&ip)?
            .iter()
            .find(|e| &*e.query == query)
            .map(|e| e.kept.clone())
    }

    /// Keeps an answer the full path authorized at state `version`, or a new rendering of a
    /// kept one. An answer of an older version than the kept ones is dropped; a newer version
    /// drops all the kept ones.
    pub fn put(&self, ip: IpAddr, query: &str, version: u64, kept: Kept) {
        let mut inner = sync::write(&self.inner);
        if version < inner.version {
            return;
        }
        if version > inner.version {
            inner.by_ip.clear();
            inner.len = 0;
            inner.bytes = 0;
            inner.version = version;
        }
        let new_bytes = kept.approx_bytes();
        let entry_bytes = query.len() + new_bytes + ENTRY_OVERHEAD;
        let full = inner.len >= self.max || inner.bytes + entry_bytes > self.max_bytes;
        let list = inner.by_ip.entry(ip).or_default();
        if let Some(e) = list.iter_mut().find(|e| &*e.query == query) {
            let old_bytes = e.kept.approx_bytes();
            e.kept = kept;
            inner.bytes = (inner.bytes + new_bytes).saturating_sub(old_bytes);
            return;
        }
        // Full until the state changes: the bound holds whatever the request mix.
        if full {
            if list.is_empty() {
                inner.by_ip.remove(&ip);
            }
            return;
        }
        list.push(Entry {
            query: query.into(),
            kept,
        });
        inner.len += 1;
        inner.bytes += entry_bytes;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        sync::read(&self.inner).len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(body: &'static str, second: u64) -> Kept {
        Kept {
            answer: Arc::new(Answer {
                token: Arc::new(Token {
                    access_token: "t".into(),
                    token_type: "Bearer".into(),
                    expires_on: 2_000_000_000,
                    not_before: 0,
                    ext_expires_in: 0,
                    principal_id: None,
                }),
                audit: Audit {
                    pod: "p".into(),
                    namespace: "ns".into(),
                    identity: "ns/id".into(),
                    binding: "b".into(),
                    client_id: "c".into(),
                    resource: "r".into(),
                },
            }),
            second,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn an_answer_is_reused_only_by_its_ip_and_query_at_its_version() {
        let m = AnswerMemo::default();
        m.put(A, "resource=x", 7, kept("one", 100));
        let k = m.get(A, "resource=x", 7).unwrap();
        assert_eq!((&k.body[..], k.second), (&b"one"[..], 100));
        assert!(m.get(B, "resource=x", 7).is_none(), "another pod's IP");
        assert!(m.get(A, "resource=y", 7).is_none(), "another query");
        assert!(m.get(A, "resource=x", 8).is_none(), "the state changed");
        // A new rendering replaces the entry rather than adding one.
        m.put(A, "resource=x", 7, kept("one, later", 101));
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(A, "resource=x", 7).unwrap().second, 101);
    }

    #[test]
    fn a_new_version_drops_every_kept_answer_and_an_older_one_is_ignored() {
        let m = AnswerMemo::default();
        m.put(A, "q", 1, kept("a", 5));
        m.put(B, "q", 2, kept("b", 5));
        assert_eq!(m.len(), 1, "the answer of version 1 is gone");
        assert!(m.get(A, "q", 1).is_none());
        m.put(A, "q", 1, kept("late", 5));
        assert!(
            m.get(A, "q", 1).is_none(),
            "a late write of an older version is dropped"
        );
        assert!(m.get(A, "q", 2).is_none());
        assert!(m.get(B, "q", 2).is_some());
    }

    #[test]
    fn the_memo_is_bounded() {
        let m = AnswerMemo::new(3, DEFAULT_MAX_BYTES);
        for i in 0..10 {
            m.put(A, &format!("q{i}"), 1, kept("x", 5));
        }
        assert_eq!(m.len(), 3);
        assert!(m.get(A, "q9", 1).is_none());
        assert!(m.get(A, "q0", 1).is_some());
    }

    #[test]
    fn the_memo_is_bounded_in_bytes_too() {
        let one = kept("x", 5).approx_bytes() + ENTRY_OVERHEAD;
        let long = "q".repeat(4096);
        // Room for three entries with long queries.
        let m = AnswerMemo::new(1024, 3 * (one + 4096 + 16));
        for i in 0..10 {
            m.put(A, &format!("{long}{i}"), 1, kept("x", 5));
        }
        assert_eq!(m.len(), 3);
        // Short queries are still kept while they fit.
        let m = AnswerMemo::new(1024, 3 * (one + 4096 + 16));
        for i in 0..10 {
            m.put(B, &format!("q{i}"), 1, kept("x", 5));
        }
        assert_eq!(m.len(), 10);
        // A new version starts from nothing.
        m.put(A, &format!("{long}x"), 2, kept("x", 5));
        assert_eq!(m.len(), 1);
    }
}
