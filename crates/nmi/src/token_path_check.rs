//! `nmi test-token-path`: the check behind the chart's `helm test` (templates/tests/token-path.yaml).
//! Run in a pod that is not on the host network, so that the node's interception applies to it,
//! it asks the IMDS token endpoint as an SDK does and passes only if NMI answered as it should:
//!
//! - by default the pod is bound to nothing, and only NMI answers such a pod with its IMDS-style
//!   403 whose `error_description` names the pod as unbound ([`crate::refusal::unbound_detail`]).
//!   The VM's own IMDS, reached around NMI, answers 400 ("Identity not found") or hands out the
//!   node's token, both failures here;
//! - with `--expect-token` the pod is labelled with a binding's selector, and it must get a token.
//!
//! Answers NMI gives while it cannot decide yet (it has not seen the new pod, MIC is still
//! assigning the identity) are asked again until `--timeout`. The result is one line on stdout.

use std::{fmt, time::Duration};

use clap::Args;
use serde::Deserialize;
use tokio::time::Instant;

use crate::{
    Error, Result,
    refusal::{self, PodName},
};

/// What an SDK asks first: a token for ARM, in the oldest api-version every IMDS serves.
pub const DEFAULT_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/";

/// Longest one ask may take: NMI holds a request up to --pod-wait plus --identity-wait (20 s, or
/// upstream's up to 36 s), then IMDS's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Between asks answered "not yet".
const PAUSE: Duration = Duration::from_secs(2);
/// Most of an answer's body a verdict quotes.
const QUOTED: usize = 300;

/// The flags of `nmi test-token-path`.
#[derive(Clone, Debug, Args)]
pub struct TokenPathCheck {
    /// Require a token (the pod carries a binding's selector in aadpodidbinding). Without it: require NMI's 403 for a pod bound to nothing.
    #[arg(long = "expect-token")]
    pub expect_token: bool,

    /// The token request to send (with Metadata: true).
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,

    /// This pod's namespace (downward API): NMI's refusal must name this pod.
    #[arg(long = "pod-namespace", env = "POD_NAMESPACE", requires = "pod_name")]
    pub pod_namespace: Option<String>,

    /// This pod's name (downward API).
    #[arg(long = "pod-name", env = "POD_NAME", requires = "pod_namespace")]
    pub pod_name: Option<String>,

    /// How long answers that mean "not yet" (404, 429, 5xx, no connection) are asked again, in seconds.
    #[arg(long, value_parser = crate::flags::parse_secs, default_value = "120")]
    pub timeout: Duration,
}

impl TokenPathCheck {
    pub fn expectation(&self) -> Expectation {
        if self.expect_token {
            return Expectation::Token;
        }
        let pod = match (&self.pod_namespace, &self.pod_name) {
            (Some(namespace), Some(name)) if !namespace.is_empty() && !name.is_empty() => Some(PodName {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: None,
            }),
            _ => None,
        };
        Expectation::Refusal { pod }
    }
}

/// The answer the check requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// NMI's 403 for a pod bound to nothing; naming this pod when it is known.
    Refusal { pod: Option<PodName> },
    /// 200 with an `access_token`.
    Token,
}

/// How one answer (or the whole check) came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    /// Not a verdict yet: NMI cannot decide now, and says so; ask again.
    Retry(String),
    Fail(String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Self::Pass(_))
    }
}

impl fmt::Display for Verdict {
    /// The line printed: `PASS: …`, `FAIL: …` (a `Retry` is printed as not yet decided).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass(why) => write!(f, "PASS: {why}"),
            Self::Retry(why) => write!(f, "WAIT: {why}"),
            Self::Fail(why) => write!(f, "FAIL: {why}"),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    expires_on: String,
}

/// The verdict on one answer: its status and body.
pub fn judge(expect: &Expectation, status: u16, body: &str) -> Verdict {
    let error = serde_json::from_str::<ErrorBody>(body).ok();
    let token = (status == 200)
        .then(|| serde_json::from_str::<TokenBody>(body).ok())
        .flatten()
        .filter(|t| !t.access_token.is_empty());
    if is_not_yet(status) {
        return Verdict::Retry(format!("{status} {}", quote(body)));
    }
    match expect {
        Expectation::Refusal { pod } => match (status, &error, &token) {
            (403, Some(e), _) if e.error == "forbidden" && e.error_description.contains(refusal::UNBOUND) => {
                match pod {
                    Some(p)
                        if !e
                            .error_description
                            .starts_with(&refusal::unbound_subject(&p.namespace, &p.name)) =>
                    {
                        Verdict::Fail(format!(
                            "NMI refused, but named another pod than {}/{}: {}",
                            p.namespace, p.name, e.error_description
                        ))
                    }
                    _ => Verdict::Pass(format!(
                        "NMI answered the unbound test pod with its refusal: 403 {}",
                        e.error_description
                    )),
                }
            }
            // Never the body: it holds a token of the node's identity.
            (200, _, Some(t)) => Verdict::Fail(format!(
                "a pod bound to nothing got a token (client_id {}): NMI did not answer it. Are the \
                 interception rules in place on this node, and does no AzurePodIdentityException \
                 match the test pod?",
                t.client_id
            )),
            (400, _, _) => Verdict::Fail(format!(
                "400 {}: not NMI's answer to a pod bound to nothing (the VM's IMDS answers so when \
                 reached directly): is NMI intercepting 169.254.169.254 on this node?",
                quote(body)
            )),
            _ => Verdict::Fail(format!(
                "{status} {}: not NMI's refusal of a pod bound to nothing",
                quote(body)
            )),
        },
        Expectation::Token => match (status, &error, &token) {
            (200, _, Some(t)) => Verdict::Pass(format!(
                "a token for {} (client_id {}, expires_on {})",
                t.resource, t.client_id, t.expires_on
            )),
            (200, _, None) => Verdict::Fail("200 without an access_token".to_owned()),
            (403, Some(e), _) if e.error_description.contains(refusal::UNBOUND) => Verdict::Fail(format!(
                "NMI refused: {}. tests.binding must be the selector of an AzureIdentityBinding in \
                 the test pod's namespace",
                e.error_description
            )),
            _ => Verdict::Fail(format!("{status} {}", quote(body))),
        },
    }
}

/// NMI's answers while it cannot decide yet, which SDKs retry too: the pod not yet seen (404),
/// the identity not yet assigned (404, or 503 with --set-retry-after-header), NMI still syncing
/// (503), over the rate limit (429), IMDS failing (5xx).
fn is_not_yet(status: u16) -> bool {
    matches!(status, 404 | 429 | 500..=599)
}

/// A body on one line, cut to [`QUOTED`] characters.
fn quote(body: &str) -> String {
    let line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUOTED)
        .collect();
    if body.chars().count() > QUOTED {
        format!("{line}…")
    } else {
        line
    }
}

/// Asks until a verdict, or until `--timeout` has passed with only "not yet" answers (a failure,
/// quoting the last of them).
pub async fn run(check: &TokenPathCheck) -> Result<Verdict> {
    let http = reqwest::Client::builder()
        // 169.254.169.254 is reached directly, as SDKs do, or the interception is not what is tested.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "pod-identity/nmi-test-token-path/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|source| Error::Http {
            what: "building the HTTP client",
            source,
        })?;
    let expect = check.expectation();
    let deadline = Instant::now() + check.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let asked = http
            .get(&check.url)
            .header("Metadata", "true")
            .timeout(left.clamp(Duration::from_secs(1), ASK_TIMEOUT))
            .send()
            .await;
        let verdict = match asked {
            Ok(answer) => {
                let status = answer.status().as_u16();
                let body = answer.text().await.unwrap_or_default();
                judge(&expect, status, &body)
            }
            Err(e) => Verdict::Retry(format!("no answer from {}: {e}", check.url)),
        };
        match verdict {
            Verdict::Retry(why) if Instant::now() + PAUSE < deadline => {
                tracing::info!("not yet: {why}");
                tokio::time::sleep(PAUSE).await;
            }
            Verdict::Retry(why) => {
                return Ok(Verdict::Fail(format!(
                    "no verdict within {} s; the last answer: {why}",
                    check.timeout.as_secs()
                )));
            }
            done => return Ok(done),
        }
    }
}

#[cfg(test)]
mod tests;
