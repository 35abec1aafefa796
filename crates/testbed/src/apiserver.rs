use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use k8s_openapi::{
    api::{core::v1::Namespace, rbac::v1::ClusterRoleBinding},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

use crate::{Error, Result, Supervised, binaries, io_err, pki::Pki};

mod port;
mod wait;
pub use port::free_port;
use wait::{block_on, http_ok, ready, wait_until};

/// A real etcd + kube-apiserver pair on loopback, with the aadpodidentity.k8s.io CRDs installed.
///
/// Dropping it stops both processes and removes its directory.
pub struct ApiServer {
    apiserver: Option<Supervised>,
    etcd: Option<Supervised>,
    etcd_args: Vec<String>,
    etcd_url: String,
    apiserver_args: Vec<String>,
    port: u16,
    kubeconfig: PathBuf,
    started_in: Duration,
    // Declared last: removed after the processes have stopped.
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// The server shared by all tests of this test binary. Started on first use;
    /// its processes end when the test process does, and their supervisors then remove its
    /// directory (a `static` is never dropped).
    ///
    /// Panics, failing the test loudly, when the server cannot start.
    pub fn shared() -> &'static ApiServer {
        // The outcome is kept, failure included, so that every test fails at once with the same message.
        // The failure is kept as text: `Error` holds io and kube errors, which are not Clone, and
        // all a later test does with it is panic with it.
        static SHARED: OnceLock<Result<ApiServer, String>> = OnceLock::new();
        match SHARED.get_or_init(|| ApiServer::start().map_err(|e| e.to_string())) {
            Ok(server) => server,
            Err(e) => panic!("the test kube-apiserver could not start: {e}"),
        }
    }

    /// Starts a private server. Blocks until it is ready and the CRDs are established.
    pub fn start() -> Result<Self> {
        let started = Instant::now();
        // Fail before making anything when the binaries cannot be had.
        binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("pod-identity-apiserver-")
            .tempdir()
            .map_err(io_err("creating the apiserver's temporary directory"))?;
        let root = dir.path();
        let pki = Pki::generate()?;
        let write = |name: &str, body: &str| -> Result<PathBuf> {
            let p = root.join(name);
            std::fs::write(&p, body).map_err(io_err(format!("writing {}", p.display())))?;
            Ok(p)
        };
        let ca = write("ca.crt", &pki.ca)?;
        let serving_crt = write("apiserver.crt", &pki.serving.cert)?;
        let serving_key = write("apiserver.key", &pki.serving.key)?;
        let sa_key = write("sa.key", &pki.service_account_key)?;
        let sa_pub = write("sa.pub", &pki.service_account_pub)?;

        let (etcd_client, etcd_peer, port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let etcd_args = vec![
            format!("--data-dir={}", root.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
            "--listen-metrics-urls=".to_owned(),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];

        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--tls-cert-file={}", serving_crt.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            "--authorization-mode=RBAC".to_owned(),
            format!("--service-account-issuer=https://127.0.0.1:{port}/"),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--disable-admission-plugins=ServiceAccount".to_owned(),
            format!("--cert-dir={}", root.join("certs").display()),
            "--v=1".to_owned(),
        ];
        let kubeconfig = root.join("kubeconfig");
        write_kubeconfig(&kubeconfig, port, &pki)?;
        let mut server = Self {
            apiserver: None,
            etcd: None,
            etcd_args,
            etcd_url,
            apiserver_args,
            port,
            kubeconfig,
            started_in: Duration::ZERO,
            dir,
        };
        server.start_etcd()?;
        server.start_apiserver()?;
        server.install_crds()?;
        server.open_issuer_discovery()?;
        server.started_in = started.elapsed();
        tracing::info!(port, elapsed = ?server.started_in, "test kube-apiserver ready");
        Ok(server)
    }

    /// Starts (or restarts after [`ApiServer::stop_apiserver`]) the kube-apiserver process on the same port and data.
    pub fn start_apiserver(&mut self) -> Result<()> {
        let bins = binaries()?;
        // On a restart the port may be briefly held: by the old process's sockets, or by another
        // test's client that drew it as an ephemeral port. Try again for a while before failing.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut proc = Supervised::spawn_cleaning(
                "kube-apiserver",
                Command::new(&bins.kube_apiserver).args(&self.apiserver_args),
                &self.dir.path().join("kube-apiserver.log"),
                Some(self.dir.path()),
            )?;
            // A client per poll: a client is bound to the runtime it was made on, and each poll has its own.
            let outcome = wait_until(&mut proc, Duration::from_secs(90), || {
                block_on(async { Ok(ready(&self.client().await?).await) })
            });
            match outcome {
                Ok(()) => {
                    self.apiserver = Some(proc);
                    return Ok(());
                }
                Err(Error::NotReady(_, log)) if attempts < 20 && log.contains("address already in use") => {
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts (or restarts after [`ApiServer::stop_etcd`]) etcd on the same port and data directory.
    pub fn start_etcd(&mut self) -> Result<()> {
        let bins = binaries()?;
        let log = self.dir.path().join("etcd.log");
        let mut etcd = Supervised::spawn_cleaning(
            "etcd",
            Command::new(&bins.etcd).args(&self.etcd_args),
            &log,
            Some(self.dir.path()),
        )?;
        let health = format!("{}/health", self.etcd_url);
        wait_until(&mut etcd, Duration::from_secs(30), || Ok(http_ok(&health)))?;
        self.etcd = Some(etcd);
        Ok(())
    }

    /// Stops etcd (the apiserver keeps running and fails its requests meanwhile).
    pub fn stop_etcd(&mut self) {
        if let Some(mut e) = self.etcd.take() {
            e.stop(Duration::from_secs(10));
        }
    }

    /// Stops the kube-apiserver process (etcd keeps running), as an outage would.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Kills the kube-apiserver process at once (etcd keeps running), as a crash or a node loss
    /// would. Unlike [`ApiServer::stop_apiserver`] the outage starts at a known instant: a graceful
    /// stop closes watches first and may then take its full grace period to exit.
    pub fn kill_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.kill();
        }
    }

    /// A new client with admin rights.
    pub async fn client(&self) -> Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Client::try_from(config)?)
    }

    /// Creates a namespace with a unique name starting with `prefix`, and returns a client and the name.
    pub async fn namespace(&self, prefix: &str) -> Result<(Client, String)> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let client = self.client().await?;
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .expect("a namespace literal is valid");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok((client, name))
    }

    /// Path of an admin kubeconfig for this server (for `kubectl`, and for processes under test).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The service-account issuer (`--service-account-issuer`): the `iss` of the tokens it
    /// signs, and where its OIDC discovery is served (`/.well-known/openid-configuration`,
    /// `/openid/v1/jwks`) to anyone, as a federated-credential issuer must be (see
    /// [`ApiServer::open_issuer_discovery`]).
    pub fn issuer(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// The CA (PEM file) that signed the apiserver's serving certificate: what a client fetching
    /// the issuer's discovery, such as the Azure emulator's Entra, must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The HTTPS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How long [`ApiServer::start`] took, from nothing to established CRDs.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// A `kubectl` command for this server.
    pub fn kubectl(&self) -> Result<std::process::Command> {
        let mut cmd = std::process::Command::new(&binaries()?.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        Ok(cmd)
    }

    /// The kube-apiserver's log so far (last 8 KiB).
    pub fn apiserver_log(&self) -> String {
        self.apiserver
            .as_ref()
            .map(Supervised::log_tail)
            .unwrap_or_default()
    }

    /// Lets unauthenticated clients read the issuer's discovery documents, as Kubernetes'
    /// service-account issuer discovery docs describe: binds the built-in
    /// `system:service-account-issuer-discovery` ClusterRole (nothing but those two GETs) to
    /// `system:unauthenticated`. Entra fetches them with no credential of the cluster, so the
    /// emulator standing in for it does too, rather than being handed one real Entra never has.
    fn open_issuer_discovery(&self) -> Result<()> {
        block_on(async {
            let client = self.client().await?;
            let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pod-identity-testbed:issuer-discovery"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:service-account-issuer-discovery"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                              "name": "system:unauthenticated"}],
            }))
            .expect("a binding literal is valid");
            let pp = PatchParams::apply("pod-identity-testbed").force();
            Api::<ClusterRoleBinding>::all(client)
                .patch(
                    "pod-identity-testbed:issuer-discovery",
                    &pp,
                    &Patch::Apply(&binding),
                )
                .await?;
            Ok(())
        })
    }

    fn install_crds(&self) -> Result<()> {
        block_on(async {
            let client = self.client().await?;
            let api = Api::<CustomResourceDefinition>::all(client);
            let pp = PatchParams::apply("pod-identity-testbed").force();
            for crd in api::crds() {
                let name = crd.metadata.name.clone().unwrap_or_default();
                api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
                let established = await_condition(api.clone(), &name, conditions::is_crd_established());
                tokio::time::timeout(Duration::from_secs(30), established)
                    .await
                    .map_err(|_| Error::NotReady("CRD establishment", name.clone()))?
                    .map_err(|e| Error::Kubeconfig(e.to_string()))?;
            }
            Ok(())
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The apiserver first, so it does not log a storm of etcd errors.
        self.stop_apiserver();
        if let Some(mut etcd) = self.etcd.take() {
            etcd.stop(Duration::from_secs(10));
        }
    }
}

fn write_kubeconfig(path: &Path, port: u16, pki: &Pki) -> Result<()> {
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": format!("https://127.0.0.1:{port}"),
            "certificate-authority-data": B64.encode(&pki.ca),
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate-data": B64.encode(&pki.admin.cert),
            "client-key-data": B64.encode(&pki.admin.key),
        }}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    });
    // JSON is valid YAML, which is what kubectl and kube read.
    std::fs::write(path, body.to_string()).map_err(io_err(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests;
