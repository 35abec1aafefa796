//! Tokens from Azure, for MIC (its own token for ARM) and NMI (pods' tokens): one client, so both
//! ask the same way, read answers the same way and agree on what a failure means.
//!
//! - [`Credential`] says who asks: a managed identity through the node's IMDS, or a service
//!   principal at Entra ID with a client secret or a [`CertificateCredential`] (which signs the
//!   client assertion). [`TokenRequest`] adds what for (the resource) and which Entra endpoint
//!   (v1 takes a `resource`, v2 a `scope`); [`TokenRequest::prepare`] builds the HTTP request as
//!   plain values, [`TokenRequest::send`] sends it with the caller's `reqwest` client (whose roots,
//!   timeout and user agent are the caller's).
//! - [`read_answer`] turns a status, a `Retry-After` and a body into a [`Token`] or an [`Error`]:
//!   IMDS's all-strings token object and Entra's v1 and v2 shapes, with numbers as numbers or
//!   strings. [`retry_after`] reads the header as delta-seconds or an HTTP date.
//! - [`Error`] classifies every failure in the manner of pingora's error types: whose it is
//!   ([`Fault::Ours`]: no answer, a timeout, a request we could not make; [`Fault::Theirs`]: the
//!   service answered with an error) and whether asking again may help. An upstream answer keeps
//!   its status, `Retry-After` and body, so NMI can hand IMDS's answer to a pod as IMDS gave it.
//!
//! Caching, concurrency limits and retry loops stay with the callers: MIC and NMI differ there on
//! purpose (one token for ARM; many tokens shared by pods, at most 5 IMDS calls at once).
#![forbid(unsafe_code)]

mod answer;
mod certificate;
mod error;
mod request;
mod retry_after;

pub use answer::{BODY_KEPT, Token, jwt_claim, now, parse_token, read_answer};
pub use certificate::{CertificateCredential, is_pem};
pub use error::{Error, Fault, Service, retryable_status};
pub use request::{
    Call, Credential, EntraVersion, IMDS_API_VERSION, JWT_BEARER, Prepared, TokenRequest, scope_of,
};
pub use retry_after::retry_after;
