//! The per-service settings blocks of a world file (`arm:`, `entra:`, `imds:`, `admin:`, `tls:`)
//! with their defaults: knobs of the emulator itself, apart from what the cloud contains.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Where a server listens unless the world says: loopback, on a free port. Here rather than in
/// `world` (whose VM entries use it too) so this module needs nothing from its parent.
pub(super) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArmSettings {
    pub listen: SocketAddr,
    /// How long an identity write stays `InProgress` before it takes effect.
    pub operation_latency_ms: u64,
    pub throttling: bool,
    pub read_bucket: Bucket,
    pub write_bucket: Bucket,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Also accept tokens whose audience is this ARM endpoint's own URL (`https://host:port`,
    /// with or without a trailing `/`), as Azure Stack Hub does. Public Azure refuses them with
    /// `InvalidAuthenticationTokenAudience`, hence off by default. Upstream aad-pod-identity's MIC
    /// configured with `cloud: AzureStackCloud` and an environment file asks Entra for exactly
    /// such a token, which is how the mixed-version tests point it at the emulator.
    pub accept_endpoint_audience: bool,
}

impl Default for ArmSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            operation_latency_ms: 300,
            throttling: true,
            read_bucket: Bucket {
                size: 250,
                refill_per_sec: 25.0,
            },
            write_bucket: Bucket {
                size: 200,
                refill_per_sec: 10.0,
            },
            max_body_bytes: 4 * 1024 * 1024,
            accept_endpoint_audience: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub size: u32,
    pub refill_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntraSettings {
    pub listen: SocketAddr,
    pub token_lifetime_secs: u64,
}

impl Default for EntraSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token_lifetime_secs: 3599,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImdsSettings {
    /// Per-VM limits of the managed-identity category: off only for benchmarks.
    pub rate_limit: bool,
    pub requests_per_second: u32,
    pub max_concurrent: u32,
    pub token_lifetime_secs: u64,
}

impl Default for ImdsSettings {
    fn default() -> Self {
        Self {
            rate_limit: true,
            requests_per_second: 20,
            max_concurrent: 5,
            token_lifetime_secs: 86399,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    pub listen: SocketAddr,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Serve ARM and Entra over https (Azure SDKs refuse bearer tokens and authorities over http).
    pub enabled: bool,
    /// Where `ca.pem` is written; a temporary directory when absent.
    pub dir: Option<PathBuf>,
    /// Extra DNS names for the server certificate (127.0.0.1, ::1 and localhost are always in).
    pub hostnames: Vec<String>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            hostnames: Vec::new(),
        }
    }
}
