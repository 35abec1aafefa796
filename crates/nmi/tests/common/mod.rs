//! Shared by NMI's integration tests: NMI in-process against a real kube-apiserver and the Azure
//! emulator ([`Env`]), with the knobs those tests turn (mode, policy, timeouts, rate limit,
//! staleness, extra service principals) and a token check by the JWT's `appid` and `xms_mirid`;
//! the test world's Azure (`azure`); Kubernetes objects as the tests create them (`objects`),
//! also for the tests that run NMI as a binary; and what those tests share (`binary`).
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use api::{AzureAssignedIdentity, AzureIdentity};
use azure_emulator::{Emulator, EndpointKind, RunningEmulator, world::ServicePrincipalSpec};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use nmi::{
    metrics::Metrics,
    server::{self, Nmi},
    state::{Mode, PodLookup, State},
    token::{Azure, AzureConfig},
    token_cache::{CachePolicy, TokenCache},
};
use serde_json::{Value, json};

mod azure;
mod binary;
mod objects;

pub use azure::*;
#[allow(unused_imports)] // only the tests that run the binary use them
pub use binary::*;
pub use objects::*;

pub struct Opts {
    pub mode: Mode,
    pub policy: matching::Policy,
    pub identity_wait: Duration,
    pub upstream_timeout: Duration,
    /// (requests per second, burst); `None`: off.
    pub rate_limit: Option<(f64, u32)>,
    pub max_staleness: Duration,
    pub pod_wait: Duration,
    /// `--set-retry-after-header`.
    pub set_retry_after_header: bool,
    /// Added to the world's own, which has only `SP_CLIENT`.
    pub service_principals: Vec<ServicePrincipalSpec>,
    /// Federated mode: identities on no VM, each with federated credentials for the apiserver's
    /// issuer and these subjects (`system:serviceaccount:…`). Empty: federated mode off.
    pub federated: Vec<azure_emulator::world::IdentitySpec>,
    /// `--header-read-timeout` and `--max-connections-per-pod`.
    pub connection_limits: server::ConnectionLimits,
    /// The IdentityReady condition and warm first tokens (`--identity-ready-condition`); off
    /// unless given.
    pub readiness: Option<nmi::readiness::Config>,
    /// Refusals as Events on their pods (`--refusal-events`), with this series policy; off
    /// unless given. Tests shorten its write interval instead of sleeping 30 s.
    pub refusal_events: Option<events::SeriesPolicy>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            mode: Mode::Managed,
            policy: matching::Policy::default(),
            identity_wait: Duration::from_secs(1),
            upstream_timeout: Duration::from_secs(5),
            rate_limit: None,
            max_staleness: nmi::state::DEFAULT_MAX_STALENESS,
            pod_wait: Duration::from_secs(1),
            set_retry_after_header: false,
            service_principals: vec![],
            federated: vec![],
            connection_limits: server::ConnectionLimits::default(),
            readiness: None,
            refusal_events: None,
        }
    }
}

pub struct Env {
    pub client: Client,
    pub ns: String,
    pub node: String,
    pub emulator: RunningEmulator,
    pub state: Arc<State>,
    pub metrics: Metrics,
    pub nmi: SocketAddr,
}

/// [`env`] in a fresh namespace named after `prefix` on the shared test kube-apiserver.
pub async fn env_in(prefix: &str, opts: Opts) -> Env {
    let (client, ns) = testbed::ApiServer::shared()
        .namespace(prefix)
        .await
        .expect("the test kube-apiserver gives a namespace");
    env(client, ns, opts).await
}

pub async fn env(client: Client, ns: String, opts: Opts) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("nmi=info,kube=warn")
        .try_init();
    let node = format!("node-{ns}");
    let mut world = world(&node);
    world.service_principals.extend(opts.service_principals);
    let federated = !opts.federated.is_empty();
    if federated {
        let apiserver = testbed::ApiServer::shared();
        world.oidc_issuers.push(azure_emulator::world::OidcIssuerSpec {
            issuer: apiserver.issuer(),
            jwks: None,
            jwks_file: None,
            ca_file: Some(apiserver.ca_file()),
        });
        world.identities.extend(opts.federated);
    }
    let emulator = Emulator::start(world).await.expect("the Azure emulator starts");
    let metrics = Metrics::new();
    let state = Arc::new(State::new(node.clone(), opts.mode, opts.policy));
    state.set_max_staleness(opts.max_staleness);
    state.spawn_watches(client.clone());
    tokio::spawn(server::track_staleness(state.clone(), metrics.clone()));
    let azure = Azure::new(
        AzureConfig {
            imds: emulator
                .imds_url(&node)
                .expect("the emulator serves IMDS for the node"),
            entra: emulator.entra_url(),
            extra_roots_pem: emulator.ca_cert_pem().map(|p| p.as_bytes().to_vec()),
            timeout: opts.upstream_timeout,
        },
        Some(client.clone()),
        metrics.clone(),
    )
    .unwrap();
    let http = azure.http().clone();
    let imds = azure.imds_base().to_owned();
    let cache = Arc::new(TokenCache::new(
        Arc::new(azure),
        CachePolicy::default(),
        metrics.clone(),
    ));
    let nmi = Nmi::new(
        state.clone(),
        cache,
        server::Config {
            metadata_header_required: true,
            block_instance_metadata: false,
            set_retry_after_header: opts.set_retry_after_header,
            identity_wait: opts.identity_wait,
            pod_wait: opts.pod_wait,
            imds,
        },
        metrics.clone(),
        http,
    );
    if federated {
        nmi.authorizer
            .enable_federation(nmi::federation::Federation::start(
                state.clone(),
                nmi.authorizer.cache.clone(),
                client.clone(),
                nmi.http.clone(),
                nmi::federation::FederationConfig {
                    authority: emulator.entra_url(),
                    tenant: emulator.tenant_id().to_owned(),
                },
            ));
    }
    if let Some((rate, burst)) = opts.rate_limit {
        nmi.rate_limit.configure(rate, burst);
    }
    if let Some(series) = opts.refusal_events {
        nmi.enable_refusal_events(server::RefusalEvents::start(
            client.clone(),
            &node,
            series,
            Arc::new(|| {}),
        ));
    }
    if let Some(config) = opts.readiness {
        nmi::readiness::spawn(nmi.authorizer.clone(), client.clone(), config);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve_with(
        listener,
        nmi,
        opts.connection_limits,
        std::future::pending(),
    ));
    let env = Env {
        client,
        ns,
        node,
        emulator,
        state,
        metrics,
        nmi: addr,
    };
    env.until("NMI's watches have synced", |s| s.is_synced()).await;
    env
}

impl Env {
    pub async fn until(&self, what: &str, cond: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(&self.state) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn create_in<K: Namespaced>(&self, ns: &str, value: Value) -> K {
        create_in(&self.client, ns, value).await
    }

    pub async fn create<K: Namespaced>(&self, value: Value) -> K {
        self.create_in(&self.ns, value).await
    }

    pub async fn pod(&self, name: &str, ip: &str, labels: Value) {
        self.pod_in(&self.ns, name, ip, labels, false).await
    }

    /// A Running pod on this node with `ip`, as a kubelet would report it.
    pub async fn pod_in(&self, ns: &str, name: &str, ip: &str, labels: Value, host_network: bool) {
        let before = self.state.pods.len();
        self.create_running_pod(ns, name, ip, labels, host_network).await;
        let (ns, name, ip) = (ns.to_owned(), name.to_owned(), ip.to_owned());
        if host_network {
            // Never addressable by IP, so not in the IP index: wait until the watch has it at all.
            self.until("NMI's pod index has the hostNetwork pod", |s| {
                s.pods.len() > before
            })
            .await;
        } else {
            // By IP, not by name: the pod is seen before its status gives it the IP, and a reused IP
            // must already point at this pod rather than at its previous owner.
            self.until(
                &format!("NMI sees pod {ns}/{name} at {ip}"),
                |s| matches!(s.pods.by_ip(&ip), PodLookup::Found(p) if p.name == name && p.namespace == ns),
            )
            .await;
        }
    }

    /// Creates a Running pod on this node with `ip`, without waiting for NMI to see it.
    pub async fn create_running_pod(
        &self,
        ns: &str,
        name: &str,
        ip: &str,
        labels: Value,
        host_network: bool,
    ) {
        running_pod(&self.client, ns, name, &self.node, ip, labels, host_network).await;
    }

    pub async fn identity_in(&self, ns: &str, u: Uami) -> AzureIdentity {
        let id = self
            .create_in(
                ns,
                json!({
                    "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                    "metadata": {"name": u.name},
                    "spec": {"type": 0, "resourceID": resource_id(u.name), "clientID": u.client()}
                }),
            )
            .await;
        let ns = ns.to_owned();
        self.until("NMI sees the identity", |s| {
            s.identities.get(&ns, u.name).is_some()
        })
        .await;
        id
    }

    pub async fn identity(&self, u: Uami) -> AzureIdentity {
        self.identity_in(&self.ns, u).await
    }

    pub async fn binding(&self, name: &str, identity: &str, selector: &str) {
        self.binding_in(&self.ns, name, identity, selector).await
    }

    pub async fn binding_in(&self, ns: &str, name: &str, identity: &str, selector: &str) {
        let _: api::AzureIdentityBinding = self
            .create_in(
                ns,
                json!({
                    "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
                    "metadata": {"name": name},
                    "spec": {"azureIdentity": identity, "selector": selector}
                }),
            )
            .await;
        let ns = ns.to_owned();
        self.until("NMI sees the binding", |s| s.bindings.get(&ns, name).is_some())
            .await;
    }

    pub async fn exception_in(&self, ns: &str, name: &str, labels: Value) {
        let _: api::AzurePodIdentityException = self
            .create_in(
                ns,
                json!({
                    "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzurePodIdentityException",
                    "metadata": {"name": name},
                    "spec": {"podLabels": labels}
                }),
            )
            .await;
        let ns = ns.to_owned();
        self.until("NMI sees the exception", |s| {
            s.exceptions.get(&ns, name).is_some()
        })
        .await;
    }

    /// MIC's record for `pod` in this namespace, in the given state.
    pub async fn assigned(&self, pod: &str, identity: &AzureIdentity, status: &str) {
        let name =
            AzureAssignedIdentity::object_name(pod, &self.ns, identity.metadata.name.as_deref().unwrap());
        let api = Api::<AzureAssignedIdentity>::namespaced(self.client.clone(), &self.ns);
        let aai: AzureAssignedIdentity = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureAssignedIdentity",
            "metadata": {"name": name, "labels": {"nodename": self.node}},
            "spec": {"azureIdentityRef": identity, "pod": pod, "podNamespace": self.ns, "nodename": self.node}
        }))
        .unwrap();
        if api.get_opt(&name).await.unwrap().is_none() {
            api.create(&PostParams::default(), &aai).await.unwrap();
        }
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"status": status, "availableReplicas": 1}})),
        )
        .await
        .unwrap();
    }

    /// A token request from `from` (a loopback address), with `query` appended.
    pub async fn ask(&self, from: &str, query: &str) -> Answer {
        let ip: IpAddr = from.parse().unwrap();
        let http = reqwest::Client::builder()
            .local_address(ip)
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let res = http
            .get(format!(
                "http://{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}{query}",
                self.nmi,
                form_urlencoded::byte_serialize(VAULT.as_bytes()).collect::<String>()
            ))
            .header("Metadata", "true")
            .send()
            .await
            .expect("NMI answers");
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let content_types = res
            .headers()
            .get_all("content-type")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = res.text().await.unwrap();
        Answer {
            status,
            retry_after,
            content_types,
            body,
        }
    }

    pub fn token_calls(&self, endpoint: EndpointKind) -> usize {
        self.emulator
            .admin()
            .calls()
            .iter()
            .filter(|c| c.endpoint == endpoint && c.path.contains("token"))
            .count()
    }

    /// The value of an unlabelled metric in NMI's exposition.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Every Content-Type header: SDKs refuse an answer with two.
    pub content_types: Vec<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The access token's claims, when the answer has one.
    pub fn claims(&self) -> Option<Value> {
        let v: Value = serde_json::from_str(&self.body).ok()?;
        let token = v["access_token"].as_str()?;
        let payload = token.split('.').nth(1)?;
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The access token's claims; without a token, a panic that shows the body instead.
    pub fn token_claims(&self) -> Value {
        self.claims().unwrap_or_else(|| panic!("no token: {}", self.body))
    }

    /// `(appid, xms_mirid)` of the token, lower-cased.
    pub fn who(&self) -> Option<(String, String)> {
        let c = self.claims()?;
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_ascii_lowercase();
        Some((s("appid"), s("xms_mirid")))
    }

    pub fn refused(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(!self.body.contains("access_token"), "{}", self.body);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    testbed::free_port().expect("a free loopback port")
}
