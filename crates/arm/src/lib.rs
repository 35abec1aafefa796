//! Azure Resource Manager as MIC and `kubectl pod-identity` reach it, in one crate so that the
//! plugin reads ARM exactly as MIC does without linking MIC (its controller, webhook and
//! metrics server).
//!
//! The decisions are pure functions over plain values, unit-tested: [`body`] (ARM's wire format
//! of VM and scale-set identities: reading a GET, writing delta PATCH bodies, reading errors),
//! [`classify`] (the ARM error code in an error's text), [`consent`] (whether an identity's
//! owner lets a namespace use it), [`retry`] (backoff and `Retry-After`) and [`observe`] (what a
//! client reports of its calls). The I/O is [`client`] (the [`ArmClient`]: GETs, PATCHes with
//! long-running-operation polling, retries, one cached token) and [`cloud`] (the cloud config
//! file, the certificate it names, and the endpoints of the cloud it selects).
#![forbid(unsafe_code)]

pub mod body;
pub mod classify;
pub mod client;
pub mod cloud;
pub mod consent;
pub mod observe;
pub mod retry;

use std::path::{Path, PathBuf};

pub use azure_token::{Credential, retry_after};
pub use body::{
    ArmError, IdentityState, MAX_IDENTITIES_PER_REQUEST, UserIdentity, identity_ids_in, patch_bodies,
};
pub use classify::reason_of;
pub use client::{ArmClient, COMPUTE_API_VERSION, Connection, IDENTITY_API_VERSION, MANAGEMENT_RESOURCE};
pub use observe::{CallObserver, CallResult, Unobserved};
pub use retry::RetryPolicy;

use cloud::ENVIRONMENT_FILEPATH;

/// What goes wrong here: an ARM call, once its retries are spent, and a cloud config that cannot
/// be used. The messages of the calls' errors are what [`reason_of`] reads a code from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ARM answered with an error (after retries, for retryable ones).
    #[error("{operation} {status}: {} {}", .error.code, .error.message)]
    Arm {
        operation: &'static str,
        status: u16,
        error: ArmError,
    },
    /// The long-running operation ended in `Failed` or `Canceled`.
    #[error("{operation}: the operation ended {status}: {} {}", .error.code, .error.message)]
    Operation {
        operation: &'static str,
        status: String,
        error: ArmError,
    },
    /// No answer at all.
    #[error("{operation}: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    /// No token for ARM (whether it is worth asking again: [`azure_token::Error::is_retryable`]).
    #[error("getting a token for ARM: {0}")]
    Token(#[source] azure_token::Error),

    /// The cloud config file cannot be read.
    #[error("reading cloud config {}: {source}", .path.display())]
    ReadCloudConfig { path: PathBuf, source: std::io::Error },
    /// The cloud config is neither JSON nor YAML of its shape; `path` is `None` for text given
    /// directly ([`cloud::CloudConfig::parse`]).
    #[error("{}neither JSON ({json}) nor YAML ({yaml})", in_file(.path.as_deref()))]
    CloudConfigSyntax {
        path: Option<PathBuf>,
        json: serde_json::Error,
        /// Boxed: serde-saphyr's error is large, and every `Result<_, Error>` would be as large.
        yaml: Box<serde_saphyr::Error>,
    },
    /// The cloud config names a cloud go-autorest does not know.
    #[error(
        "cloud config: unknown cloud {name:?}: use AzurePublicCloud, AzureChinaCloud, \
         AzureUSGovernmentCloud, or AzureStackCloud with {ENVIRONMENT_FILEPATH}"
    )]
    UnknownCloud { name: String },
    /// `AzureStackCloud` without the environment file that gives its endpoints.
    #[error("cloud config: cloud {name} needs {ENVIRONMENT_FILEPATH} to name a go-autorest environment file")]
    NoEnvironmentFile { name: String },
    #[error("cloud config: reading {ENVIRONMENT_FILEPATH} {path}: {source}")]
    ReadEnvironmentFile { path: String, source: std::io::Error },
    #[error("cloud config: {ENVIRONMENT_FILEPATH} {path}: not a go-autorest environment file: {source}")]
    EnvironmentFileSyntax { path: String, source: serde_json::Error },
    /// The environment file lacks an endpoint MIC needs (`field`, as the file spells it).
    #[error("cloud config: {ENVIRONMENT_FILEPATH} {path}: the environment file has no `{field}`")]
    EnvironmentFileField { path: String, field: &'static str },
    /// A service principal's tenant or client id is missing (`field`, as azure.json spells it).
    #[error("the cloud config has no {field} and useManagedIdentityExtension is false")]
    NoCredentialField { field: &'static str },
    #[error(
        "the cloud config has neither aadClientSecret nor aadClientCertPath, and \
         useManagedIdentityExtension is false"
    )]
    NoSecretNorCertificate,
    #[error("reading aadClientCertPath {path}: {source}")]
    ReadCertificate { path: String, source: std::io::Error },
    #[error(
        "aadClientCertPath {path}: the PKCS#12 bundle cannot be opened with \
         aadClientCertPassword (wrong or missing password)"
    )]
    CertificatePassword { path: String },
    /// The certificate file is not a usable PKCS#12 bundle or PEM (no private key, ...).
    #[error("aadClientCertPath {path}: {source}")]
    Certificate {
        path: String,
        source: azure_token::Error,
    },
}

impl Error {
    /// The ARM error, when ARM gave one.
    pub fn arm_error(&self) -> Option<&ArmError> {
        match self {
            Self::Arm { error, .. } | Self::Operation { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// `cloud config <path>: ` before a message about a file's contents; nothing for text given
/// directly.
fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("cloud config {}: ", p.display()))
        .unwrap_or_default()
}
