//! Someone removing identities behind MIC's back while pods come and go (`--remove-behind-ms`):
//! what `az vm identity remove`, `az vmss identity remove` or a node-image upgrade does to a VM
//! or scale set that MIC believes carries an identity. The pods that need it must still get
//! their tokens (NMI holds them and tells MIC, MIC puts the identity back), and the targets must
//! still end with exactly what is needed.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::moments::Moments;
use crate::cluster;

/// The targets, as ARM paths under the node resource group.
const TARGETS: [&str; 3] = [
    "virtualMachineScaleSets/ss-a",
    "virtualMachineScaleSets/ss-b",
    "virtualMachines/vm-c",
];

/// One removal done behind MIC's back.
#[derive(Debug)]
pub(super) struct Removal {
    pub target: &'static str,
    pub identity: usize,
}

/// How to reach ARM as an operator would: its URL, the emulator's CA, a bearer token.
pub(super) struct Operator {
    arm_url: String,
    http: reqwest::Client,
    token: String,
}

impl Operator {
    pub fn new(emulator: &azure_emulator::RunningEmulator) -> anyhow::Result<Self> {
        let token = emulator
            .admin()
            .app_token("mic", "https://management.azure.com/")
            .context("a token for the operator")?;
        let ca = reqwest::Certificate::from_pem(
            emulator
                .ca_cert_pem()
                .context("the emulator serves TLS")?
                .as_bytes(),
        )?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .build()?;
        Ok(Self {
            arm_url: emulator.arm_url(),
            http,
            token,
        })
    }
}

/// Until `deadline` or `stop`, every `mean` on average (drawn from `seed`), removes one identity from one
/// target with a delta PATCH, as the Azure CLI does. Returns the removals that took an identity
/// away (a target that did not carry it is left alone).
pub(super) async fn run(
    op: Operator,
    seed: u64,
    mean: Duration,
    deadline: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Removal>> {
    let Operator { arm_url, http, token } = op;
    let mut moments = Moments::new(seed ^ 0x6265_6869_6e64, mean, deadline, stop);
    let mut done = Vec::new();
    while moments.next().await {
        let rng = &mut moments.rng;
        let target = TARGETS[rng.usize(..TARGETS.len())];
        let identity = rng.usize(..super::IDENTITIES);
        let url = format!(
            "{}/subscriptions/{}/resourceGroups/node-rg/providers/Microsoft.Compute/{target}?api-version=2023-09-01",
            arm_url,
            cluster::SUB
        );
        let carried = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
        let carried: serde_json::Value = carried.json().await?;
        let rid = cluster::identity_resource_id(identity);
        let keys: Vec<String> = carried["identity"]["userAssignedIdentities"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if !keys.iter().any(|k| k.eq_ignore_ascii_case(&rid)) {
            continue;
        }
        // ARM refuses "UserAssigned" with none left: the last one goes with the type, as the
        // CLI does it.
        let system = carried["identity"]["type"]
            .as_str()
            .is_some_and(|t| t.contains("SystemAssigned"));
        let body = match (keys.len(), system) {
            (1, true) => json!({"identity": {"type": "SystemAssigned"}}),
            (1, false) => json!({"identity": {"type": "None"}}),
            _ => {
                json!({"identity": {"type": if system { "SystemAssigned, UserAssigned" } else { "UserAssigned" }, "userAssignedIdentities": {rid: null}}})
            }
        };
        let answer = http.patch(&url).bearer_auth(&token).json(&body).send().await?;
        let status = answer.status();
        if !status.is_success() {
            anyhow::bail!(
                "removing id{identity} from {target} behind MIC's back: ARM answered {status}: {}",
                answer.text().await.unwrap_or_default()
            );
        }
        done.push(Removal { target, identity });
    }
    Ok(done)
}
