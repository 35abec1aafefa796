//! NMI in-process against a real kube-apiserver (its watches, its secrets) and the Azure
//! emulator (per-VM IMDS, Entra over https, injected faults). Pods' source IPs are loopback
//! addresses: each request is sent from the address the test wrote into the pod's status.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use api::{AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException};
use azure_emulator::{Emulator, EndpointKind, Fault, FaultAction, RunningEmulator, World};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use nmi::{
    cache::{CachePolicy, TokenCache},
    metrics::Metrics,
    server::{self, Nmi},
    state::{Mode, PodLookup, State},
    token::{Azure, AzureConfig},
};
use serde_json::{Value, json};
use testbed::ApiServer;

const SUB: &str = "11111111-2222-3333-4444-555555555555";
const ONE: (&str, &str, &str) = (
    "id-one",
    "2f5a3c4d-0000-4000-8000-000000000001",
    "9b1e7d2a-0000-4000-8000-000000000001",
);
const TWO: (&str, &str, &str) = (
    "id-two",
    "2f5a3c4d-0000-4000-8000-000000000002",
    "9b1e7d2a-0000-4000-8000-000000000002",
);
const SP_CLIENT: &str = "5c8f2a10-0000-4000-8000-00000000000b";
const SP_SECRET: &str = "app-secret-value";
const VAULT: &str = "https://vault.azure.net";

fn resource_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourcegroups/identity-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

fn world(node: &str) -> World {
    World::from_yaml(&format!(
        r#"
tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47
subscriptions:
  - id: {SUB}
    resource_groups: [node-rg, identity-rg]
identities:
  - {{name: {}, resource_group: identity-rg, client_id: {}, principal_id: {}}}
  - {{name: {}, resource_group: identity-rg, client_id: {}, principal_id: {}}}
vms:
  - name: {node}
    resource_group: node-rg
    node: {node}
    system_assigned: true
    user_assigned: [{}, {}]
service_principals:
  - name: app
    client_id: {SP_CLIENT}
    client_secret: {SP_SECRET}
"#,
        ONE.0, ONE.1, ONE.2, TWO.0, TWO.1, TWO.2, ONE.0, TWO.0
    ))
    .map(|mut w| {
        w.service_principals
            .push(azure_emulator::world::ServicePrincipalSpec {
                name: "cert-app".into(),
                client_id: CERT_CLIENT.into(),
                object_id: None,
                client_secret: None,
                certificate_pem: Some(cert().0.clone()),
                certificate_file: None,
                may_assign: vec![],
                federated_credentials: vec![],
            });
        w
    })
    .expect("the test world is valid")
}

const CERT_CLIENT: &str = "5c8f2a10-0000-4000-8000-00000000000c";

/// One RSA certificate (PEM) and key (PEM) for the whole test binary.
fn cert() -> &'static (String, String) {
    static CERT: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        use aws_lc_rs::encoding::AsDer;
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&key)
            .unwrap()
            .as_ref()
            .to_vec();
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let cert = rcgen::CertificateParams::new(vec!["cert-app".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    })
}

struct Env {
    client: Client,
    ns: String,
    node: String,
    emulator: RunningEmulator,
    state: Arc<State>,
    nmi: SocketAddr,
}

async fn env(prefix: &str, mode: Mode, identity_wait: Duration) -> Env {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("nmi=debug,kube=warn")
        .try_init();
    let (client, ns) = ApiServer::shared()
        .namespace(prefix)
        .await
        .expect("the test kube-apiserver gives a namespace");
    let node = format!("node-{ns}");
    let emulator = Emulator::start(world(&node))
        .await
        .expect("the Azure emulator starts");
    let metrics = Metrics::new();
    let state = Arc::new(State::new(node.clone(), mode, matching::Policy::default()));
    state.spawn_watches(client.clone());
    let azure = Azure::new(
        AzureConfig {
            imds: emulator
                .imds_url(&node)
                .expect("the emulator serves IMDS for the node"),
            entra: emulator.entra_url(),
            extra_roots_pem: emulator.ca_cert_pem().map(|p| p.as_bytes().to_vec()),
            timeout: Duration::from_secs(5),
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
            set_retry_after_header: false,
            identity_wait,
            pod_wait: Duration::from_secs(2),
            imds,
        },
        metrics,
        http,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            server::router(nmi).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let env = Env {
        client,
        ns,
        node,
        emulator,
        state,
        nmi: addr,
    };
    env.until("NMI's watches have synced", |s| s.is_synced()).await;
    env
}

impl Env {
    async fn until(&self, what: &str, cond: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let started = Instant::now();
        while !cond(&self.state) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("{what}: after {:?}", started.elapsed());
    }

    async fn create<K>(&self, value: Value) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(value).expect("a valid object literal");
        Api::<K>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &obj)
            .await
            .expect("the apiserver accepts the object")
    }

    /// A Running pod on this node with `ip`, as a kubelet would report it.
    async fn pod(&self, name: &str, ip: &str, labels: Value) {
        self.pod_in(&self.ns.clone(), name, ip, labels).await
    }

    async fn pod_in(&self, ns: &str, name: &str, ip: &str, labels: Value) {
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": self.node, "containers": [{"name": "app", "image": "app"}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &pod).await.unwrap();
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})),
        )
        .await
        .unwrap();
        let (ns, name, ip) = (ns.to_owned(), name.to_owned(), ip.to_owned());
        self.until(
            &format!("NMI sees pod {name} at {ip}"),
            |s| matches!(s.pods.by_ip(&ip), PodLookup::Found(p) if p.name == name && p.namespace == ns),
        )
        .await;
    }

    async fn identity(&self, (name, client, _): (&str, &str, &str)) -> AzureIdentity {
        let id = self
            .create(json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                "metadata": {"name": name},
                "spec": {"type": 0, "resourceID": resource_id(name), "clientID": client}
            }))
            .await;
        let ns = self.ns.clone();
        self.until("NMI sees the identity", |s| s.identities.get(&ns, name).is_some())
            .await;
        id
    }

    async fn binding(&self, name: &str, identity: &str, selector: &str) {
        self.binding_in(&self.ns.clone(), name, identity, selector).await
    }

    async fn binding_in(&self, ns: &str, name: &str, identity: &str, selector: &str) {
        let b: AzureIdentityBinding = serde_json::from_value(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentityBinding",
            "metadata": {"name": name},
            "spec": {"azureIdentity": identity, "selector": selector}
        }))
        .unwrap();
        Api::<AzureIdentityBinding>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &b)
            .await
            .unwrap();
        self.until("NMI sees the binding", |s| s.bindings.get(ns, name).is_some())
            .await;
    }

    /// MIC's record, in the given state.
    async fn assigned(&self, pod: &str, identity: &AzureIdentity, status: &str) {
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
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"status": status, "availableReplicas": 1}})),
        )
        .await
        .unwrap();
    }

    async fn ask(&self, from: &str, query: &str) -> Answer {
        let ip: IpAddr = from.parse().unwrap();
        let http = reqwest::Client::builder()
            .local_address(ip)
            .no_proxy()
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

    fn imds_token_calls(&self) -> usize {
        self.emulator
            .admin()
            .calls()
            .iter()
            .filter(|c| c.endpoint == EndpointKind::Imds && c.path.contains("/identity/oauth2/token"))
            .count()
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    /// Every Content-Type header: SDKs refuse an answer with two.
    content_types: Vec<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// The claims of the access token, which the emulator minted for the identity it served.
    fn claims(&self) -> Value {
        let v = self.json();
        let token = v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {}", self.body));
        let payload = token.split('.').nth(1).unwrap();
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
    fn refused(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(!self.body.contains("access_token"), "{}", self.body);
    }
}

/// The seed: identity, binding, a labelled pod; MIC's AAI marks it Assigned; the pod gets a token
/// of its identity, in IMDS's shape.
#[tokio::test]
async fn seed_scenario_standard_mode() {
    let env = env("nmi-seed", Mode::Standard, Duration::from_secs(5)).await;
    let id = env.identity(ONE).await;
    env.binding("myapp-binding", ONE.0, "myapp").await;
    env.pod("myapp", "127.0.10.1", json!({"aadpodidbinding": "myapp"}))
        .await;
    env.assigned("myapp", &id, "Assigned").await;
    let a = env.ask("127.0.10.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["client_id"], ONE.1);
    assert_eq!(v["resource"], VAULT);
    assert_eq!(v["token_type"], "Bearer");
    assert!(v.as_object().unwrap().values().all(Value::is_string));
    assert_eq!(a.claims()["oid"], ONE.2, "the token is the bound identity's");
    // A second request is served from NMI's cache: IMDS saw one call.
    assert_eq!(env.ask("127.0.10.1", "").await.status, 200);
    assert_eq!(env.imds_token_calls(), 1);
}

#[tokio::test]
async fn several_identities_selected_by_client_id_object_id_or_resource_id() {
    let env = env("nmi-select", Mode::Managed, Duration::from_secs(1)).await;
    env.identity(ONE).await;
    env.identity(TWO).await;
    env.binding("b-one", ONE.0, "app").await;
    env.binding("b-two", TWO.0, "app").await;
    env.pod("p", "127.0.11.1", json!({"aadpodidbinding": "app"}))
        .await;
    let oid = |a: Answer| a.claims()["oid"].as_str().unwrap().to_owned();
    assert_eq!(
        oid(env.ask("127.0.11.1", &format!("&client_id={}", TWO.1)).await),
        TWO.2
    );
    assert_eq!(
        oid(env
            .ask("127.0.11.1", &format!("&client_id={}", ONE.1.to_uppercase()))
            .await),
        ONE.2
    );
    assert_eq!(
        oid(env.ask("127.0.11.1", &format!("&object_id={}", TWO.2)).await),
        TWO.2
    );
    assert_eq!(
        oid(env
            .ask("127.0.11.1", &format!("&msi_res_id={}", resource_id(ONE.0)))
            .await),
        ONE.2
    );
    assert_eq!(
        oid(env
            .ask("127.0.11.1", &format!("&mi_res_id={}", resource_id(TWO.0)))
            .await),
        TWO.2
    );
    // No selector: the oldest binding's identity, every time.
    for _ in 0..3 {
        assert_eq!(oid(env.ask("127.0.11.1", "").await), ONE.2);
    }
    env.ask("127.0.11.1", "&client_id=2f5a3c4d-0000-4000-8000-0000000000ff")
        .await
        .refused(403);
}

#[tokio::test]
async fn wrong_namespace_binding_rogue_pod_and_unlabelled_pod_are_refused() {
    let env = env("nmi-refuse", Mode::Managed, Duration::from_secs(1)).await;
    let (_, other) = ApiServer::shared().namespace("nmi-rogue").await.unwrap();
    env.identity(ONE).await;
    env.binding("b", ONE.0, "app").await;
    // A binding in another namespace naming our identity's name, for a selector of its own.
    env.binding_in(&other, "cross", ONE.0, "cross").await;
    env.pod("unlabelled", "127.0.12.1", json!({})).await;
    env.pod_in(&other, "rogue", "127.0.12.2", json!({"aadpodidbinding": "app"}))
        .await;
    env.pod_in(&other, "cross", "127.0.12.3", json!({"aadpodidbinding": "cross"}))
        .await;
    env.pod("good", "127.0.12.4", json!({"aadpodidbinding": "app"}))
        .await;
    for ip in ["127.0.12.1", "127.0.12.2", "127.0.12.3"] {
        env.ask(ip, "").await.refused(403);
        env.ask(ip, &format!("&client_id={}", ONE.1)).await.refused(403);
    }
    assert_eq!(env.imds_token_calls(), 0, "no token was even fetched for them");
    assert_eq!(env.ask("127.0.12.4", "").await.status, 200);
}

#[tokio::test]
async fn deleted_pods_ip_reused_by_an_unbound_pod_is_refused_despite_a_warm_cache() {
    let env = env("nmi-reuse", Mode::Managed, Duration::from_secs(1)).await;
    env.identity(ONE).await;
    env.binding("b", ONE.0, "app").await;
    env.pod("bound", "127.0.13.1", json!({"aadpodidbinding": "app"}))
        .await;
    assert_eq!(env.ask("127.0.13.1", "").await.status, 200);
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    env.until("NMI sees the pod go", |s| {
        s.pods.by_ip("127.0.13.1") == PodLookup::NotFound
    })
    .await;
    env.pod("intruder", "127.0.13.1", json!({})).await;
    let a = env.ask("127.0.13.1", "").await;
    a.refused(403);
    assert!(a.body.contains("intruder"), "{}", a.body);
    assert_eq!(env.imds_token_calls(), 1);
}

#[tokio::test]
async fn service_principal_with_a_secret_in_its_own_namespace() {
    let env = env("nmi-sp", Mode::Managed, Duration::from_secs(1)).await;
    let tenant = env.emulator.tenant_id().to_owned();
    let _: Secret = env
        .create(json!({"metadata": {"name": "sp"}, "stringData": {"clientSecret": SP_SECRET, "note": "x"}}))
        .await;
    for (name, secret_ns) in [("sp", env.ns.clone()), ("sp-elsewhere", "kube-system".to_owned())] {
        let _: AzureIdentity = env
            .create(json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                "metadata": {"name": name},
                "spec": {"type": 1, "tenantID": tenant, "clientID": SP_CLIENT,
                         "clientPassword": {"name": "sp", "namespace": secret_ns}}
            }))
            .await;
    }
    env.until("NMI sees the identities", |s| {
        s.identities.get(&env.ns, "sp").is_some() && s.identities.get(&env.ns, "sp-elsewhere").is_some()
    })
    .await;
    env.binding("b", "sp", "app").await;
    env.binding("b-elsewhere", "sp-elsewhere", "elsewhere").await;
    env.pod("p", "127.0.14.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.pod("q", "127.0.14.2", json!({"aadpodidbinding": "elsewhere"}))
        .await;
    let a = env.ask("127.0.14.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["client_id"], SP_CLIENT);
    assert_eq!(a.claims()["appid"], SP_CLIENT);
    let a = env.ask("127.0.14.2", "").await;
    a.refused(403);
    assert!(
        a.body.contains("only from the identity's own namespace"),
        "{}",
        a.body
    );
    // §5.2 case 25: a missing secret is a clear refusal too.
    let _: AzureIdentity = env
        .create(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
            "metadata": {"name": "sp-missing"},
            "spec": {"type": 1, "tenantID": tenant, "clientID": SP_CLIENT, "clientPassword": {"name": "absent"}}
        }))
        .await;
    let ns = env.ns.clone();
    env.until("NMI sees the identity", |s| {
        s.identities.get(&ns, "sp-missing").is_some()
    })
    .await;
    env.binding("b-missing", "sp-missing", "missing").await;
    env.pod("r", "127.0.14.3", json!({"aadpodidbinding": "missing"}))
        .await;
    let a = env.ask("127.0.14.3", "").await;
    a.refused(403);
    assert!(a.body.contains("does not exist"), "{}", a.body);
}

#[tokio::test]
async fn excepted_pod_passes_through_to_the_nodes_identity() {
    let env = env("nmi-except", Mode::Standard, Duration::from_secs(1)).await;
    let _: AzurePodIdentityException = env
        .create(json!({
            "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzurePodIdentityException",
            "metadata": {"name": "exception"},
            "spec": {"podLabels": {"noaad": "true"}}
        }))
        .await;
    env.until("NMI sees the exception", |s| {
        s.exceptions.get(&env.ns, "exception").is_some()
    })
    .await;
    env.pod("system", "127.0.15.1", json!({"noaad": "True"})).await;
    // No binding, no AAI: the node's own identities answer, as IMDS itself would.
    let a = env.ask("127.0.15.1", &format!("&client_id={}", TWO.1)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.claims()["oid"], TWO.2);
    assert_eq!(
        a.content_types.len(),
        1,
        "one Content-Type, as IMDS sends: {:?}",
        a.content_types
    );
    assert!(
        a.content_types[0].starts_with("application/json"),
        "{:?}",
        a.content_types
    );
    let a = env
        .ask("127.0.15.1", &format!("&msi_res_id={}", resource_id(ONE.0)))
        .await;
    assert_eq!(a.claims()["oid"], ONE.2, "msi_res_id is kept on the way through");
}

#[tokio::test]
async fn a_request_held_while_unassigned_succeeds_once_assigned() {
    let env = env("nmi-held", Mode::Standard, Duration::from_secs(20)).await;
    let id = env.identity(ONE).await;
    env.binding("b", ONE.0, "app").await;
    env.pod("p", "127.0.16.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.assigned("p", &id, "Created").await;
    let started = Instant::now();
    let ask = env.ask("127.0.16.1", "");
    let assign = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        env.assigned("p", &id, "Assigned").await;
        Instant::now()
    };
    let (a, assigned_at) = tokio::join!(ask, assign);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(
        assigned_at.elapsed() < Duration::from_secs(2),
        "answered as soon as MIC assigned"
    );
}

#[tokio::test]
async fn unassigned_identity_times_out_as_404_not_400() {
    let env = env("nmi-timeout", Mode::Standard, Duration::from_millis(500)).await;
    let id = env.identity(ONE).await;
    env.binding("b", ONE.0, "app").await;
    env.pod("p", "127.0.17.1", json!({"aadpodidbinding": "app"}))
        .await;
    env.assigned("p", &id, "Created").await;
    let a = env.ask("127.0.17.1", "").await;
    a.refused(404);
    assert!(a.body.contains("not yet assigned"), "{}", a.body);
}

#[tokio::test]
async fn imds_throttling_and_errors_reach_the_pod_as_retryable() {
    let env = env("nmi-faults", Mode::Managed, Duration::from_secs(1)).await;
    env.identity(ONE).await;
    env.binding("b", ONE.0, "app").await;
    env.pod("p", "127.0.18.1", json!({"aadpodidbinding": "app"}))
        .await;
    let admin = env.emulator.admin();
    let fault = |status, retry_after_secs| Fault {
        endpoint: EndpointKind::Imds,
        target: Some(env.node.clone()),
        action: FaultAction::Status {
            status,
            retry_after_secs,
        },
        count: Some(1),
        rate: None,
    };
    admin.inject(fault(429, Some(3)));
    let a = env.ask("127.0.18.1", "").await;
    a.refused(429);
    assert_eq!(a.retry_after.as_deref(), Some("3"));
    admin.inject(fault(500, None));
    env.ask("127.0.18.1", "").await.refused(500);
    admin.inject(fault(503, None));
    env.ask("127.0.18.1", "").await.refused(503);
    // Faults spent: the retry the SDK makes succeeds.
    assert_eq!(env.ask("127.0.18.1", "").await.status, 200);
}

#[tokio::test]
async fn service_principal_with_a_certificate() {
    let env = env("nmi-cert", Mode::Managed, Duration::from_secs(1)).await;
    let tenant = env.emulator.tenant_id().to_owned();
    let (cert_pem, key_pem) = cert();
    let _: Secret = env
        .create(
            json!({"metadata": {"name": "cert"}, "stringData": {"certificate": cert_pem, "key": key_pem}}),
        )
        .await;
    // Upstream's layout: a PKCS#12 bundle and its password.
    let _: Secret = env
        .create(json!({"metadata": {"name": "pfx"}, "data": {"certificate": "MIIKAgEDMIIJvAYJKoZIhvcNAQcBoII=", "password": "cGFzcw=="}}))
        .await;
    for (name, secret) in [("cert", "cert"), ("pfx", "pfx")] {
        let _: AzureIdentity = env
            .create(json!({
                "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
                "metadata": {"name": name},
                "spec": {"type": 2, "tenantID": tenant, "clientID": CERT_CLIENT,
                         "clientPassword": {"name": secret}}
            }))
            .await;
        let ns = env.ns.clone();
        env.until("NMI sees the identity", |s| s.identities.get(&ns, name).is_some())
            .await;
        env.binding(&format!("b-{name}"), name, name).await;
    }
    env.pod("p", "127.0.19.1", json!({"aadpodidbinding": "cert"}))
        .await;
    env.pod("q", "127.0.19.2", json!({"aadpodidbinding": "pfx"}))
        .await;
    let a = env.ask("127.0.19.1", "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.claims()["appid"], CERT_CLIENT);
    let a = env.ask("127.0.19.2", "").await;
    a.refused(403);
    assert!(a.body.contains("PKCS#12"), "{}", a.body);
}

/// §5.2 cases 33 and 34 against a real IMDS: other paths pass through, `X-Forwarded-For` (which IMDS
/// refuses) is stripped, and the header rule still applies.
#[tokio::test]
async fn other_paths_pass_through_to_imds() {
    let env = env("nmi-pass", Mode::Standard, Duration::from_secs(1)).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut req = http.get(format!("http://{}{path}", env.nmi));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let md = [("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")];
    let (status, body) = get("/metadata/instance/compute?api-version=2021-02-01", &md).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&env.node), "IMDS's own answer: {body}");
    assert_eq!(get("/doesnotexist", &md).await.0, 404);
    let (status, body) = get("/doesnotexist", &[]).await;
    assert_eq!(status, 400);
    assert!(body.contains("Required metadata header not specified"));
    // IMDS reads paths in any letter case: passing these through would give any caller the node's
    // own token. NMI answers them itself (here: no pod has the caller's IP) or refuses them.
    for path in [
        "/metadata/Identity/oauth2/token?api-version=2018-02-01&resource=r",
        "/metadata/identity/oauth2//token?api-version=2018-02-01&resource=r",
        "/x/../metadata/identity/oauth2/token?api-version=2018-02-01&resource=r",
    ] {
        let (status, body) = get(path, &md).await;
        assert!(!body.contains("access_token"), "{path} reached IMDS: {body}");
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
    }
}
