//! What can go wrong getting a token, and what a caller may do about it.

use std::time::Duration;

/// The service a token is asked from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// The node's Instance Metadata Service (managed identities).
    Imds,
    /// Entra ID's token endpoint (service principals).
    Entra,
}

impl Service {
    /// The name used in messages (and in NMI's errors, where `"IMDS"` is matched on).
    pub fn name(self) -> &'static str {
        match self {
            Self::Imds => "IMDS",
            Self::Entra => "Entra ID",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whose failure it is, as pingora's `ErrorSource` tells upstream from internal errors: a caller
/// reports ours as its own trouble and may pass theirs on as the service said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No answer (connection, TLS, a timeout), or a request we could not make (an unreadable
    /// certificate, a failed signature).
    Ours,
    /// The service answered, with an error status or a body that is not a token.
    Theirs,
}

/// Why no token came back. The credential variants say what to fix, never where the bytes came
/// from: the caller knows (a Kubernetes secret's key, `aadClientCertPath`) and says it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with an error status. `body` is its answer (the first
    /// [`crate::BODY_KEPT`] characters), kept for passing it on unchanged.
    #[error("{service} answered {status}: {body}")]
    Upstream {
        service: Service,
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// The service answered success with a body that is not a token.
    #[error("{service} answered with a body that is not a token: {detail}")]
    BadAnswer { service: Service, detail: String },
    /// No answer: the connection failed, or reading the answer did.
    #[error("calling {service}: {source}")]
    Transport {
        service: Service,
        source: reqwest::Error,
    },
    /// No answer within the client's timeout.
    #[error("calling {service}: {source}")]
    Timeout {
        service: Service,
        source: reqwest::Error,
    },
    #[error("the PKCS#12 bundle cannot be opened with the password given (wrong password)")]
    WrongPassword,
    #[error("not a readable PKCS#12 bundle ({0}); give a PKCS#12 (.pfx) file or PEM")]
    NotPkcs12(String),
    #[error("the PKCS#12 bundle holds no private key")]
    NoKeyInBundle,
    #[error("the PKCS#12 bundle holds no certificate")]
    NoCertificateInBundle,
    #[error("no certificate in the PKCS#12 bundle belongs to its private key")]
    NoCertificateForKey,
    #[error("no PEM certificate found")]
    NoPemCertificate,
    #[error("no PEM private key found ({0})")]
    NoPemKey(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the private key must be RSA ({0})")]
    NotRsa(String),
    #[error("signing the client assertion failed")]
    Signing,
}

/// Whether an error status from `service` is worth asking again for: 408, 429 and 5xx from
/// either, and IMDS's 404 and 410, which it answers while the VM's identities are being updated
/// (Microsoft's IMDS guidance, and what the Azure SDKs retry).
pub fn retryable_status(service: Service, status: u16) -> bool {
    match status {
        408 | 429 | 500..=599 => true,
        404 | 410 => service == Service::Imds,
        _ => false,
    }
}

impl Error {
    /// A transport failure, told apart from a timeout.
    pub fn transport(service: Service, source: reqwest::Error) -> Self {
        if source.is_timeout() {
            Self::Timeout { service, source }
        } else {
            Self::Transport { service, source }
        }
    }

    /// Whose failure it is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Upstream { .. } | Self::BadAnswer { .. } => Fault::Theirs,
            _ => Fault::Ours,
        }
    }

    /// Whether the same request may succeed later: no answer, or a transient status. A request we
    /// could not make, a refusal, and a success without a token will not change by asking again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Upstream { service, status, .. } => retryable_status(*service, *status),
            _ => false,
        }
    }

    /// The service asked, when a request went out.
    pub fn service(&self) -> Option<Service> {
        match self {
            Self::Upstream { service, .. }
            | Self::BadAnswer { service, .. }
            | Self::Transport { service, .. }
            | Self::Timeout { service, .. } => Some(*service),
            _ => None,
        }
    }

    /// The service's error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Upstream { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the service asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The service's error answer, as it gave it.
    pub fn upstream_body(&self) -> Option<&str> {
        match self {
            Self::Upstream { body, .. } => Some(body),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(service: Service, status: u16) -> Error {
        Error::Upstream {
            service,
            status,
            retry_after: Some(Duration::from_secs(3)),
            body: r#"{"error":"x"}"#.into(),
        }
    }

    #[test]
    fn transient_statuses_are_retryable_and_theirs() {
        for status in [408, 429, 500, 502, 503, 504] {
            for service in [Service::Imds, Service::Entra] {
                let e = upstream(service, status);
                assert!(e.is_retryable(), "{e}");
                assert_eq!(e.fault(), Fault::Theirs);
            }
        }
        // IMDS answers 404 and 410 while it updates the VM's identities; Entra's 404 is final.
        for status in [404, 410] {
            assert!(upstream(Service::Imds, status).is_retryable());
            assert!(!upstream(Service::Entra, status).is_retryable());
        }
    }

    #[test]
    fn refusals_are_final_and_keep_what_the_service_said() {
        for status in [400, 401, 403] {
            let e = upstream(Service::Imds, status);
            assert!(!e.is_retryable(), "{e}");
            assert_eq!(
                (e.status(), e.retry_after(), e.upstream_body()),
                (
                    Some(status),
                    Some(Duration::from_secs(3)),
                    Some(r#"{"error":"x"}"#)
                )
            );
            assert_eq!(e.service(), Some(Service::Imds));
        }
        let e = Error::BadAnswer {
            service: Service::Entra,
            detail: "no access_token".into(),
        };
        assert_eq!(
            (e.fault(), e.is_retryable(), e.status()),
            (Fault::Theirs, false, None)
        );
        assert!(e.to_string().starts_with("Entra ID answered"), "{e}");
    }

    #[test]
    fn requests_we_cannot_make_are_ours_and_final() {
        for e in [Error::WrongPassword, Error::KeyMismatch, Error::Signing] {
            assert_eq!(
                (e.fault(), e.is_retryable(), e.service()),
                (Fault::Ours, false, None)
            );
        }
    }

    /// What a client with `timeout` gets from `addr`.
    async fn failure(addr: std::net::SocketAddr, timeout: Duration) -> reqwest::Error {
        let client = reqwest::Client::builder().timeout(timeout).build().unwrap();
        client.get(format!("http://{addr}/")).send().await.unwrap_err()
    }

    #[tokio::test]
    async fn no_answer_is_ours_and_retryable() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Error::transport(Service::Imds, failure(dead, Duration::from_secs(10)).await);
        assert!(matches!(e, Error::Transport { .. }), "{e}");
        assert_eq!((e.fault(), e.is_retryable()), (Fault::Ours, true));
        assert!(e.to_string().starts_with("calling IMDS: "), "{e}");
        // A listener that never answers: the client's timeout ends the wait.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let e = Error::transport(Service::Entra, failure(addr, Duration::from_millis(200)).await);
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!((e.fault(), e.is_retryable()), (Fault::Ours, true));
    }
}
