//! Where a service principal's secret or signed assertion may go, and what a pod hears of Entra's
//! refusal.
//!
//! An AzureIdentity's `adEndpoint` is written by whoever may write AzureIdentities in a namespace,
//! and NMI posts the identity's credential there from the node: an endpoint on the node's
//! loopback or network would receive the secret, could probe what NMI reaches, and its answer
//! would reach the pod. So `adEndpoint` must be https and one of Entra's authorities: NMI's
//! `--entra-endpoint`, the Azure clouds' own, or one an administrator allowed with
//! `--allowed-ad-endpoint`. And the pod is told Entra's status and error codes, never Entra's
//! answer itself (see [`summarize`]).

use reqwest::Url;
use serde_json::Value;

use crate::{Error, Result};

/// Entra's authority in Azure's public, US Government and China clouds (Germany's closed in 2021).
pub const CLOUD_AUTHORITIES: [&str; 3] = [
    "https://login.microsoftonline.com/",
    "https://login.microsoftonline.us/",
    "https://login.chinacloudapi.cn/",
];

/// Why a URL is not an authority NMI posts credentials to. Private: the same reasons end in a
/// flag's error ([`Error::Config`]) or an AzureIdentity's ([`Error::Identity`]), each worded
/// around them.
#[derive(Debug, thiserror::Error)]
enum Unfit {
    /// The URL parser's own reason.
    #[error("not a URL ({0})")]
    NotUrl(String),
    #[error("a URL with credentials")]
    Credentials,
    #[error("a URL with a query or fragment")]
    QueryOrFragment,
    #[error("a URL without a host")]
    NoHost,
    #[error("not https")]
    NotHttps,
    #[error("not an Entra ID authority NMI trusts")]
    NotTrusted,
}

/// An authority as compared: scheme, host, port and path, as the URL parser normalises them
/// (lower-case host, default port dropped, no trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

impl Authority {
    /// `text` as an authority: an absolute URL without credentials, query or fragment.
    fn parse(text: &str) -> std::result::Result<(Self, Url), Unfit> {
        let url = Url::parse(text.trim()).map_err(|e| Unfit::NotUrl(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Unfit::Credentials);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Unfit::QueryOrFragment);
        }
        let host = url.host_str().ok_or(Unfit::NoHost)?.to_ascii_lowercase();
        let authority = Self {
            scheme: url.scheme().to_owned(),
            host,
            port: url.port(),
            path: url.path().trim_end_matches('/').to_owned(),
        };
        Ok((authority, url))
    }
}

/// The authorities `adEndpoint` may name.
#[derive(Clone, Debug)]
pub struct Authorities {
    trusted: Vec<Authority>,
    /// As given, for the refusal's text.
    listed: Vec<String>,
}

impl Authorities {
    /// `configured` is `--entra-endpoint` (trusted as the administrator gave it); `allowed` are
    /// `--allowed-ad-endpoint`'s, which must be https like any `adEndpoint`. A flag that names no
    /// authority is an [`Error::Config`].
    pub fn new(configured: &str, allowed: &[String]) -> Result<Self> {
        let mut trusted = Vec::new();
        let mut listed = Vec::new();
        let configured = std::iter::once(configured).filter(|c| !c.is_empty());
        for text in configured.chain(CLOUD_AUTHORITIES) {
            let (authority, _) = Authority::parse(text)
                .map_err(|e| Error::Config(format!("--entra-endpoint `{text}`: {e}")))?;
            trusted.push(authority);
            listed.push(text.to_owned());
        }
        for text in allowed.iter().filter(|a| !a.is_empty()) {
            let (authority, _) = Authority::parse(text)
                .map_err(|e| Error::Config(format!("--allowed-ad-endpoint `{text}`: {e}")))?;
            if authority.scheme != "https" {
                return Err(Error::Config(format!(
                    "--allowed-ad-endpoint `{text}`: Entra is reached over https only"
                )));
            }
            trusted.push(authority);
            listed.push(text.clone());
        }
        listed.dedup();
        Ok(Self { trusted, listed })
    }

    /// The authority to post to for `ad_endpoint` (as parsed: what was checked is what is used),
    /// or why NMI refuses it, an [`Error::Identity`]; `who` names the AzureIdentity.
    pub fn check(&self, ad_endpoint: &str, who: &str) -> Result<String> {
        let refuse = |why: Unfit| {
            Error::Identity(format!(
                "AzureIdentity {who}: adEndpoint `{ad_endpoint}` is {why}; NMI sends a service principal's \
                 credentials only over https to an Entra ID authority ({}). Remove adEndpoint to use \
                 NMI's --entra-endpoint, or have the cluster administrator allow it with NMI's \
                 --allowed-ad-endpoint",
                self.listed.join(", ")
            ))
        };
        let (authority, url) = Authority::parse(ad_endpoint).map_err(refuse)?;
        if authority.scheme != "https" {
            return Err(refuse(Unfit::NotHttps));
        }
        if !self.trusted.contains(&authority) {
            return Err(refuse(Unfit::NotTrusted));
        }
        Ok(url.to_string())
    }
}

/// Whether `tenant` can only name a tenant: a GUID or a domain name. It is joined into the token
/// URL's path, where `/`, `?` or `#` would change what is asked.
pub fn is_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !tenant.starts_with('.')
}

/// What a pod is told of Entra's error answer `body`: Entra's `error` code and its AADSTS codes
/// when the body is Entra's JSON error, else nothing of it. Entra's text is not passed on: a pod
/// is told only what NMI read and checked, never a server's bytes.
pub fn summarize(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let Some(v) = parsed.as_ref().filter(|v| v.is_object()) else {
        return "not an Entra ID error answer (its body is not passed on)".into();
    };
    let mut parts = Vec::new();
    if let Some(code) = v["error"].as_str().filter(|c| {
        !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }) {
        parts.push(code.to_owned());
    }
    let mut codes: Vec<u64> = v["error_codes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .take(4)
        .collect();
    if codes.is_empty() {
        // Older answers name the code only in the description's `AADSTS<digits>:` prefix.
        codes.extend(
            v["error_description"]
                .as_str()
                .and_then(|d| d.strip_prefix("AADSTS"))
                .map(|d| {
                    d.bytes()
                        .take_while(u8::is_ascii_digit)
                        .map(char::from)
                        .collect::<String>()
                })
                .and_then(|d| d.parse::<u64>().ok()),
        );
    }
    parts.extend(codes.iter().map(|c| format!("AADSTS{c}")));
    if parts.is_empty() {
        return "an error answer without Entra ID's error code (its body is not passed on)".into();
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorities(allowed: &[&str]) -> Authorities {
        let allowed: Vec<String> = allowed.iter().map(|a| (*a).to_owned()).collect();
        Authorities::new("https://login.microsoftonline.com/", &allowed).unwrap()
    }

    #[test]
    fn entras_authorities_pass_as_normalised() {
        let a = authorities(&["https://adfs.contoso.example/adfs/"]);
        for (given, used) in [
            (
                "https://login.microsoftonline.com/",
                "https://login.microsoftonline.com/",
            ),
            (
                "https://LOGIN.microsoftonline.com",
                "https://login.microsoftonline.com/",
            ),
            (
                "https://login.microsoftonline.com:443/",
                "https://login.microsoftonline.com/",
            ),
            (
                "https://login.chinacloudapi.cn/",
                "https://login.chinacloudapi.cn/",
            ),
            (
                "https://login.microsoftonline.us",
                "https://login.microsoftonline.us/",
            ),
            (
                "https://adfs.contoso.example/adfs",
                "https://adfs.contoso.example/adfs",
            ),
        ] {
            assert_eq!(a.check(given, "ns/id").unwrap(), used, "{given}");
        }
    }

    #[test]
    fn anything_else_is_refused_naming_the_field_and_the_fix() {
        let a = authorities(&[]);
        for bad in [
            "http://127.0.0.1:9999/",
            "http://login.microsoftonline.com/",
            "https://127.0.0.1:9999/",
            "https://login.microsoftonline.com.evil.example/",
            "https://login.microsoftonline.com@127.0.0.1/",
            "https://user:pw@login.microsoftonline.com/",
            "https://login.microsoftonline.com:8443/",
            "https://login.microsoftonline.com/?x=1",
            "https://login.microsoftonline.com/#x",
            "https://login.microsoftonline.com/other/",
            "https://adfs.contoso.example/adfs/",
            "file:///etc/passwd",
            "login.microsoftonline.com",
            "",
        ] {
            let e = a.check(bad, "evil/sp").unwrap_err();
            assert!(matches!(e, Error::Identity(_)), "{bad}: {e}");
            let e = e.to_string();
            assert!(
                e.contains("AzureIdentity evil/sp: adEndpoint")
                    && e.contains("--allowed-ad-endpoint")
                    && e.contains("Remove adEndpoint"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_allow_list_takes_https_only() {
        let e = Authorities::new(
            "https://login.microsoftonline.com/",
            &["http://adfs.local/".into()],
        )
        .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains("--allowed-ad-endpoint"), "{e}");
        // The administrator's own --entra-endpoint is trusted as given (a test emulator's may be http).
        let a = Authorities::new("http://127.0.0.1:8444/", &[]).unwrap();
        assert!(
            a.check("http://127.0.0.1:8444/", "ns/id").is_err(),
            "adEndpoint is https only"
        );
    }

    #[test]
    fn tenants_are_guids_or_domains() {
        for ok in [
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "contoso.onmicrosoft.com",
            "adfs",
        ] {
            assert!(is_tenant(ok), "{ok}");
        }
        for bad in ["", "t/../x", "t?x=1", "t#", "@127.0.0.1", ".."] {
            assert!(!is_tenant(bad), "{bad}");
        }
    }

    #[test]
    fn entras_errors_are_summarised_never_relayed() {
        let entra = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Trace ID: x","error_codes":[7000215],"trace_id":"x"}"#;
        assert_eq!(summarize(entra), "invalid_client, AADSTS7000215");
        let old =
            r#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application not found"}"#;
        assert_eq!(summarize(old), "unauthorized_client, AADSTS700016");
        for foreign in [
            "<html>secret page</html>",
            r#"{"error":"<script>secret page</script>"}"#,
            r#"{"message":"secret page"}"#,
            r#"["secret page"]"#,
        ] {
            let s = summarize(foreign);
            assert!(!s.contains("secret page") && !s.contains('<'), "{foreign}: {s}");
        }
    }
}
