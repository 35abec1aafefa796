//! A pod's token request as the Python SDK's `ManagedIdentityCredential()` makes it, from the
//! pod's own address, with that SDK's retry policy.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde_json::Value;

use crate::cluster;

const RESOURCE: &str = "https://storage.azure.com/";
/// The Python SDK's IMDS retry policy (azure-identity `ImdsCredential`): 5 retries, backoff
/// factor 0.8 (no wait before the first retry), 2.5 for 410; `Retry-After` wins when longer.
const RETRIES: u32 = 5;
const BACKOFF: f64 = 0.8;
const BACKOFF_410: f64 = 2.5;

pub(super) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

pub(super) async fn ask(nmi: SocketAddr, from: IpAddr, client_id: Option<&str>) -> anyhow::Result<Answer> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut url = format!(
        "http://{nmi}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
        form_urlencoded::byte_serialize(RESOURCE.as_bytes()).collect::<String>()
    );
    if let Some(c) = client_id {
        url.push_str(&format!("&client_id={c}"));
    }
    let r = http.get(url).header("Metadata", "true").send().await?;
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(Answer {
        status,
        retry_after,
        body: r.text().await.unwrap_or_default(),
    })
}

/// Asks as `ManagedIdentityCredential()` does (no client id: the pod's own identity) and checks
/// the token names identity `identity`. Errors say why, as the application would see it.
// The error stays text: it is only ever a line of the churn report, which keeps a refused pod's
// reason as `Outcome::Refused(String)` (churn.rs), and the crate's one error type (`bench::Error`,
// lib.rs) has no variant for an application's failed token request.
pub(super) async fn ask_as_sdk(nmi: SocketAddr, from: IpAddr, identity: usize) -> Result<(), String> {
    let want = cluster::client_id(identity);
    for attempt in 0..=RETRIES {
        let answer = ask(nmi, from, None).await;
        let (retry, wait, what) = match answer {
            Ok(a) if a.status == 200 => {
                let body: Value = serde_json::from_str(&a.body)
                    .map_err(|e| format!("200 with a body that is no JSON: {e}"))?;
                return match body["client_id"].as_str() {
                    Some(c) if c.eq_ignore_ascii_case(&want) => Ok(()),
                    other => Err(format!("a token for client id {other:?}, not its own {want}")),
                };
            }
            Ok(a) => {
                let retryable = matches!(a.status, 404 | 410 | 429 | 500..=599);
                let factor = if a.status == 410 { BACKOFF_410 } else { BACKOFF };
                (
                    retryable,
                    backoff(attempt, factor).max(a.retry_after.unwrap_or_default()),
                    format!("{} {}", a.status, a.body),
                )
            }
            // Connection errors are retried by the SDK's pipeline as well.
            Err(e) => (true, backoff(attempt, BACKOFF), format!("transport: {e}")),
        };
        if !retry {
            return Err(format!("final answer {what}"));
        }
        if attempt == RETRIES {
            return Err(format!("still {what} after {RETRIES} retries"));
        }
        tokio::time::sleep(wait).await;
    }
    unreachable!("the loop returns")
}

/// azure-core's exponential backoff: none before the first retry, then `factor * 2^(n-1)`.
fn backoff(attempt: u32, factor: f64) -> Duration {
    if attempt == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(factor * f64::from(1u32 << attempt))
    }
}
