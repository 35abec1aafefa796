//! The crate's error type, in a module of its own below every other: the crate root declares
//! and wires up the servers, so if the error lived there, each module returning it would import
//! from the root that imports it back (a cycle). Modules import it from here; the root re-exports
//! it for users of the crate (`azure_emulator::Error`).

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("crypto failure: {0}")]
    Crypto(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A query naming a parameter twice, which IMDS and ARM refuse; the text is their message.
    #[error("Duplicate query parameter '{0}' in request")]
    DuplicateQueryParameter(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
