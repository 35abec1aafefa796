//! The mutating admission webhook that adds the readiness gate
//! `aadpodidentity.k8s.io/IdentityReady` to pods that will use an identity, so that a pod is
//! Ready only once NMI has obtained a token of its identity (NMI sets the condition).
//!
//! Every MIC replica serves it, leader or standby: admission must not wait for an election.
//! The decision is [`mutate::mutate`], pure; [`review`] is the AdmissionReview v1 envelope,
//! [`tls`] the reloading certificate and `server` the bounded HTTPS server.
//!
//! The webhook never denies: the chart registers it with `failurePolicy: Ignore`, so a pod
//! whose admission could not reach it is created without the gate (and is Ready as before).

pub mod mutate;
pub mod review;
mod server;
pub mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};

pub use server::{MAX_BODY, MAX_CONNECTIONS};
use tls::ReloadingCert;

use crate::{Error, metrics::Metrics};

/// How often the certificate files are read again in production (a rotated Secret reaches the
/// pod's volume within the kubelet's sync period, about a minute, anyway).
pub const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Where and with what the webhook listens.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    /// Directory holding `tls.crt` and `tls.key`.
    pub cert_dir: PathBuf,
    pub reload_interval: Duration,
}

/// A running webhook server; dropping it (or [`RunningWebhook::stop`]) closes its port and
/// every connection.
#[derive(Debug)]
pub struct RunningWebhook {
    local_addr: SocketAddr,
    server: JoinHandle<()>,
    reload: JoinHandle<()>,
}

impl RunningWebhook {
    /// Loads the certificate (an error if it is missing or invalid), binds and starts serving.
    pub async fn start(config: &WebhookConfig, metrics: Arc<Metrics>) -> Result<Self, Error> {
        // An explicit provider: the workspace links both ring and aws-lc-rs, so rustls cannot pick one.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert = Arc::new(ReloadingCert::load(&config.cert_dir, provider.clone())?);
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("webhook TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind(config.addr).await.map_err(|source| Error::Io {
            what: format!("listening on {} for the webhook", config.addr),
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            what: "the webhook's address".into(),
            source,
        })?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        tracing::info!(addr = %local_addr, cert_dir = %config.cert_dir.display(), "serving the readiness-gate webhook");
        Ok(Self {
            local_addr,
            server: tokio::spawn(server::accept_loop(listener, acceptor, metrics)),
            reload: tokio::spawn(cert.watch(config.reload_interval)),
        })
    }

    /// The address the server listens on (with the port chosen, if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(mut self) {
        self.server.abort();
        self.reload.abort();
        // The aborted task has dropped the listener and the connections it owned once it ends.
        let _ = (&mut self.server).await;
    }
}

impl Drop for RunningWebhook {
    fn drop(&mut self) {
        self.server.abort();
        self.reload.abort();
    }
}
