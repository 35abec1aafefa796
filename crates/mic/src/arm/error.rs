//! [`CallError`], what an ARM call returns once retries are spent; apart from the client so
//! callers can read the error type without the HTTP machinery.

use super::ArmError;

/// Why an ARM call failed, once retries are spent.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
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
}

impl CallError {
    /// The ARM error, when ARM gave one.
    pub fn arm_error(&self) -> Option<&ArmError> {
        match self {
            Self::Arm { error, .. } | Self::Operation { error, .. } => Some(error),
            _ => None,
        }
    }
}
