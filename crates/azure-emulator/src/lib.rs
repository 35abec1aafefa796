//! An emulator of the parts of Azure that AAD Pod Identity talks to: per-VM IMDS endpoints that
//! hand out managed-identity tokens, ARM for assigning user-assigned identities to VMs and scale
//! sets, and Entra ID's token endpoints. It keeps Azure's wire formats, its limits (IMDS's
//! 20 requests/s per VM, ARM's 150-identities-per-request rule and subscription token buckets),
//! its slowness (asynchronous identity writes that only reach IMDS when their operation
//! completes) and its errors, and lets tests inject faults and read what was called. Start it
//! in-process with [`Emulator::start`] or run the `azure-emulator` binary with a world YAML file.
#![forbid(unsafe_code)]

pub mod admin;
pub mod arm;
pub mod ca;
pub mod calls;
pub mod entra;
mod error;
pub mod faults;
pub mod ids;
pub mod imds;
pub mod model;
mod server;
pub mod state;
mod sync;
pub mod tags;
pub mod time;
mod tls;
pub mod token;
pub mod world;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

use axum::{Router, middleware::from_fn_with_state};
use tokio::task::JoinHandle;

pub use admin::{
    Admin, CallRecord, CounterSnapshot, EndpointKind, Fault, FaultAction, NewIdentity, NodeIdentities,
};
pub use error::{Error, Result};
pub use world::World;

use crate::{
    server::Endpoint,
    state::Shared,
    sync::lock,
    tls::{Tls, issue},
};

/// Entry point: `Emulator::start(world).await` serves everything on loopback.
pub struct Emulator;

/// The IMDS endpoint of one VM or scale-set instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsEndpoint {
    /// Kubernetes node the instance backs.
    pub node: String,
    /// VM name, or scale-set instance name (e.g. `pool_0`).
    pub instance: String,
    /// ARM id of the VM or scale set.
    pub resource_id: String,
    pub addr: SocketAddr,
}

/// A running emulator. Dropping it stops every server.
pub struct RunningEmulator {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    arm_addr: SocketAddr,
    entra_addr: SocketAddr,
    admin_addr: SocketAddr,
    imds: Vec<ImdsEndpoint>,
    tls: Option<Tls>,
}

fn url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}")
}

impl Emulator {
    /// Binds every endpoint the world asks for and starts serving. Must run inside a Tokio runtime.
    pub async fn start(world: World) -> Result<RunningEmulator> {
        let shared = Arc::new(Shared::new(world)?);
        let w = &shared.world;
        let served = if w.allow_non_loopback {
            vec![w.admin.listen]
        } else {
            vec![w.arm.listen, w.entra.listen, w.admin.listen]
        };
        for addr in served {
            if !addr.ip().is_loopback() {
                return Err(Error::Config(format!(
                    "{addr} is not a loopback address; the emulator serves loopback only"
                )));
            }
        }
        let arm_l = server::bind(w.arm.listen).await?;
        let entra_l = server::bind(w.entra.listen).await?;
        let admin_l = server::bind(w.admin.listen).await?;
        let local =
            |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| Error::Io("local address".into(), e));
        let (arm_addr, entra_addr, admin_addr) = (local(&arm_l)?, local(&entra_l)?, local(&admin_l)?);
        let tls = if w.tls.enabled {
            Some(Tls::create(&w.tls, &[arm_addr.ip(), entra_addr.ip()])?)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        *lock(&shared.arm_url) = url(scheme, arm_addr);
        *lock(&shared.entra_url) = url(scheme, entra_addr);

        let mut tasks = Vec::new();
        let endpoint = |kind, targets: Vec<String>| Endpoint {
            kind,
            shared: shared.clone(),
            targets: Arc::new(targets),
        };
        let with_faults =
            |router: Router, ep: Endpoint| router.layer(from_fn_with_state(ep, server::middleware));
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        tasks.push(server::spawn(
            arm_l,
            with_faults(arm::router(shared.clone()), endpoint(EndpointKind::Arm, vec![])),
            acceptor.clone(),
        ));
        tasks.push(server::spawn(
            entra_l,
            with_faults(
                entra::router(shared.clone()),
                endpoint(EndpointKind::Entra, vec![]),
            ),
            acceptor,
        ));
        tasks.push(server::spawn(
            admin_l,
            admin::router(Admin {
                shared: shared.clone(),
            }),
            None,
        ));

        // IMDS servers in world order, so endpoints are listed as the YAML lists them.
        let mut wanted: Vec<(String, usize, SocketAddr)> = Vec::new();
        let default_sub = w.default_subscription()?.to_string();
        for vm in &w.vms {
            let sub = vm.subscription.as_deref().unwrap_or(&default_sub);
            wanted.push((
                ids::key(&ids::vm_id(sub, &vm.resource_group, &vm.name)),
                0,
                vm.imds,
            ));
        }
        for ss in &w.vmss {
            let sub = ss.subscription.as_deref().unwrap_or(&default_sub);
            for (i, inst) in ss.instances.iter().enumerate() {
                wanted.push((
                    ids::key(&ids::vmss_id(sub, &ss.resource_group, &ss.name)),
                    i,
                    inst.imds,
                ));
            }
        }
        let mut imds_eps = Vec::new();
        for (key, idx, listen) in wanted {
            if !listen.ip().is_loopback() && !shared.world.allow_non_loopback {
                return Err(Error::Config(format!(
                    "IMDS address {listen} is not a loopback address (allow_non_loopback is off)"
                )));
            }
            let (instance, node, resource_id, name) = {
                let inner = lock(&shared.inner);
                let c = &inner.computes[&key];
                let inst = &c.instances[idx];
                (inst.name.clone(), inst.node.clone(), c.id.clone(), c.name.clone())
            };
            let l = server::bind(listen).await?;
            let addr = local(&l)?;
            let ctx = imds::ImdsCtx {
                shared: shared.clone(),
                compute_key: key,
                instance: idx,
                limiter: Arc::new(imds::Limiter::new(
                    w.imds.rate_limit,
                    w.imds.requests_per_second,
                    w.imds.max_concurrent,
                )),
            };
            let ep = endpoint(EndpointKind::Imds, vec![instance.clone(), node.clone(), name]);
            tasks.push(server::spawn(l, with_faults(imds::router(ctx), ep), None));
            imds_eps.push(ImdsEndpoint {
                node,
                instance,
                resource_id,
                addr,
            });
        }
        tracing::info!(arm = %arm_addr, entra = %entra_addr, admin = %admin_addr, imds = imds_eps.len(), "azure emulator serving");
        Ok(RunningEmulator {
            shared,
            tasks,
            arm_addr,
            entra_addr,
            admin_addr,
            imds: imds_eps,
            tls,
        })
    }
}

impl RunningEmulator {
    /// Base URL of ARM (stands for `https://management.azure.com`).
    pub fn arm_url(&self) -> String {
        lock(&self.shared.arm_url).clone()
    }

    /// Authority host of Entra (stands for `https://login.microsoftonline.com`).
    pub fn entra_url(&self) -> String {
        lock(&self.shared.entra_url).clone()
    }

    /// Base URL of the admin API (always plain http on loopback).
    pub fn admin_url(&self) -> String {
        url("http", self.admin_addr)
    }

    pub fn arm_addr(&self) -> SocketAddr {
        self.arm_addr
    }

    pub fn entra_addr(&self) -> SocketAddr {
        self.entra_addr
    }

    pub fn imds_endpoints(&self) -> &[ImdsEndpoint] {
        &self.imds
    }

    /// The IMDS address serving a node (or VM / instance name).
    pub fn imds_addr(&self, node_or_instance: &str) -> Option<SocketAddr> {
        self.imds
            .iter()
            .find(|e| e.node == node_or_instance || e.instance == node_or_instance)
            .map(|e| e.addr)
    }

    /// `http://addr` of a node's IMDS, the value for `AZURE_POD_IDENTITY_AUTHORITY_HOST`.
    pub fn imds_url(&self, node_or_instance: &str) -> Option<String> {
        self.imds_addr(node_or_instance).map(|a| url("http", a))
    }

    /// The CA certificate file clients must trust (None when TLS is off).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_path.as_path())
    }

    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// Issues a server certificate from the emulator's CA (PEM cert, PEM key), for other test
    /// servers (e.g. Azurite) that clients should trust through the same CA file.
    pub fn issue_server_cert(&self, names: &[&str], ips: &[IpAddr]) -> Result<(String, String)> {
        let tls = self
            .tls
            .as_ref()
            .ok_or_else(|| Error::Tls("TLS is disabled in this world".into()))?;
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let issued = issue(&tls.ca, &names, ips)?;
        Ok((issued.cert, issued.key))
    }

    pub fn tenant_id(&self) -> &str {
        &self.shared.tenant
    }

    /// The JWKS access tokens are signed with.
    pub fn jwks(&self) -> serde_json::Value {
        self.shared.key.jwks()
    }

    pub fn admin(&self) -> Admin {
        Admin {
            shared: self.shared.clone(),
        }
    }

    /// A JSON summary of where everything listens (the binary prints it at start).
    pub fn endpoints_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tenant_id": self.shared.tenant,
            "arm": self.arm_url(),
            "entra": self.entra_url(),
            "admin": self.admin_url(),
            "ca_cert": self.ca_cert_path(),
            "imds": self.imds.iter().map(|e| serde_json::json!({
                "node": e.node, "instance": e.instance, "resource_id": e.resource_id, "url": url("http", e.addr)
            })).collect::<Vec<_>>(),
        })
    }

    /// Stops every server (also done on drop).
    pub fn stop(self) {}
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
