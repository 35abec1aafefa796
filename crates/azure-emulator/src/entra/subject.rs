//! What every way of authenticating a client ends in, and the clock skew their assertion checks
//! allow. Secret and certificate authentication (`credentials`) and federated assertions
//! (`federated`) both produce a [`Subject`], and `credentials` hands federated assertions on to
//! `federated`; with these two defined here, below both, `federated` needs nothing back from
//! `credentials`.

/// Clock skew Entra tolerates on assertion times.
pub(super) const SKEW_SECS: u64 = 300;

/// Who the token is for, once the client is authenticated.
pub(super) struct Subject {
    pub(super) client_id: String,
    pub(super) object_id: String,
    pub(super) appidacr: &'static str,
    pub(super) mirid: Option<String>,
}
