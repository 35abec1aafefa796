use api::{
    AssignmentState, AzureAssignedIdentity, AzureAssignedIdentitySpec, AzureAssignedIdentityStatus,
    AzureIdentity, AzureIdentityBinding, AzureIdentityBindingSpec, AzureIdentitySpec,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{CustomResourceExt, api::ObjectMeta};

use super::*;
use crate::report::Verdict;

const NOW: i64 = 1_800_000_000;
const RID: &str =
    "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn node(name: &str, scale_set: &str) -> NodeView {
    NodeView {
        name: name.into(),
        provider_id: Some(format!(
            "azure:///subscriptions/s/resourceGroups/mc/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}/virtualMachines/0"
        )),
        ready: true,
    }
}

fn nmi(node: &str, ready: bool) -> NmiPod {
    NmiPod {
        namespace: "kube-system".into(),
        name: format!("nmi-{node}"),
        node: node.into(),
        ready,
        stale_since: None,
        detail: if ready {
            String::new()
        } else {
            "ContainersNotReady".into()
        },
    }
}

fn identity(name: &str, rid: &str) -> AzureIdentity {
    AzureIdentity {
        metadata: meta("shop", name),
        spec: AzureIdentitySpec {
            resource_id: Some(rid.into()),
            client_id: Some("00000000-0000-0000-0000-000000000001".into()),
            ..Default::default()
        },
        status: None,
    }
}

fn aai(name: &str, age: i64, state: AssignmentState, reason: Option<&str>) -> AzureAssignedIdentity {
    let mut meta = meta("shop", name);
    meta.creation_timestamp = Some(Time(Timestamp::from_second(NOW - age).unwrap()));
    AzureAssignedIdentity {
        metadata: meta,
        spec: AzureAssignedIdentitySpec {
            azure_identity_ref: Some(identity("app", RID)),
            pod: "web".into(),
            pod_namespace: "shop".into(),
            node_name: "n0".into(),
            ..Default::default()
        },
        status: Some(AzureAssignedIdentityStatus {
            status: Some(state),
            reason: reason.map(Into::into),
            message: reason.map(|_| "… The client 'mic' with object id 'mic-oid' …".into()),
            ..Default::default()
        }),
    }
}

struct World {
    crds: Vec<CustomResourceDefinition>,
    lease: LeaseState,
    nodes: Vec<NodeView>,
    nmi: Vec<NmiPod>,
    cloud: CloudConfigState,
    identities: Vec<AzureIdentity>,
    bindings: Vec<AzureIdentityBinding>,
    assigned: Vec<AzureAssignedIdentity>,
    consent: ConsentReads,
}

impl World {
    fn good() -> Self {
        Self {
            crds: api::crds(),
            lease: LeaseState::Found {
                holder: Some("mic-0".into()),
                renewed_ago: Some(3),
                duration: Some(15),
            },
            nodes: vec![node("n0", "ss"), node("n1", "ss")],
            nmi: vec![nmi("n0", true), nmi("n1", true)],
            cloud: CloudConfigState::Readable("AzurePublicCloud".into()),
            identities: vec![identity("app", RID)],
            bindings: vec![AzureIdentityBinding {
                metadata: meta("shop", "b"),
                spec: AzureIdentityBindingSpec {
                    azure_identity: Some("app".into()),
                    selector: Some("app".into()),
                    ..Default::default()
                },
                status: None,
            }],
            assigned: vec![aai("a1", 600, AssignmentState::Assigned, None)],
            consent: owner_allows("shop"),
        }
    }

    fn check(&self) -> Report {
        check(&Input {
            now: NOW,
            crds: &self.crds,
            lease: &self.lease,
            nodes: &self.nodes,
            nmi_pods: &self.nmi,
            nmi_selector: "app.kubernetes.io/component=nmi",
            nmi_logs_unread: None,
            cloud_config: &self.cloud,
            identities: &self.identities,
            bindings: &self.bindings,
            assigned: &self.assigned,
            events: &[],
            consent: &self.consent,
        })
    }

    fn failed(&self) -> Vec<(&'static str, String)> {
        self.check()
            .links
            .into_iter()
            .filter(|l| l.verdict == Verdict::Fail)
            .map(|l| {
                (
                    l.id,
                    format!("{}\n{}\nfix: {}", l.title, l.facts.join("\n"), l.fix.unwrap()),
                )
            })
            .collect()
    }
}

#[test]
fn a_healthy_cluster_passes_every_check() {
    let r = World::good().check();
    assert!(r.ok(), "{}", r.text());
    assert!(
        r.text().contains("scale set ss: 2 of 1000 instances"),
        "{}",
        r.text()
    );
}

#[test]
fn missing_crds_and_upstream_s_single_spelling_crds() {
    let mut w = World::good();
    w.crds.remove(0);
    assert_eq!(w.failed()[0].0, "crds");
    assert!(w.failed()[0].1.contains("azureidentities.aadpodidentity.k8s.io"));
    let mut w = World::good();
    let mut upstream = api::AzureIdentity::crd();
    for v in &mut upstream.spec.versions {
        let spec = v.schema.as_mut().unwrap().open_api_v3_schema.as_mut().unwrap();
        let spec = spec.properties.as_mut().unwrap().get_mut("spec").unwrap();
        spec.properties.as_mut().unwrap().remove("ResourceID");
    }
    w.crds[0] = upstream;
    let failed = w.failed();
    assert!(
        failed[0].1.contains("do not declare both spellings"),
        "{failed:?}"
    );
}

#[test]
fn an_expired_or_missing_lease_means_no_mic_leads() {
    let mut w = World::good();
    w.lease = LeaseState::Found {
        holder: Some("mic-0".into()),
        renewed_ago: Some(120),
        duration: Some(15),
    };
    assert!(
        w.failed()[0]
            .1
            .contains("MIC leader mic-0: lease expired, renewed 120s ago (lease 15s)")
    );
    w.lease = LeaseState::Missing("default/aad-pod-identity-mic".into());
    assert!(w.failed()[0].1.contains("no Lease default/aad-pod-identity-mic"));
}

#[test]
fn nodes_without_a_ready_nmi_are_named() {
    let mut w = World::good();
    w.nmi = vec![nmi("n0", false)];
    let failed = w.failed();
    assert_eq!(failed[0].0, "nmi");
    assert!(failed[0].1.contains("NMI not serving on 2 of 2 node(s)"));
    assert!(
        failed[0]
            .1
            .contains("n0: kube-system/nmi-n0 not Ready: ContainersNotReady")
    );
    assert!(failed[0].1.contains("n1: no NMI pod"));
}

#[test]
fn an_unreadable_cloud_config_fails_and_none_is_unchecked() {
    let mut w = World::good();
    w.cloud = CloudConfigState::Unreadable("reading azure.json: No such file".into());
    assert_eq!(w.failed()[0].0, "cloud-config");
    w.cloud = CloudConfigState::NotGiven;
    assert!(w.check().ok());
}

#[test]
fn unusable_identities_and_dangling_bindings() {
    let mut w = World::good();
    w.identities.push(identity("bad", "not-an-id"));
    w.bindings[0].spec.azure_identity = Some("gone".into());
    let failed = w.failed();
    assert_eq!(
        failed.iter().map(|f| f.0).collect::<Vec<_>>(),
        ["identities", "bindings"]
    );
    assert!(
        failed[0].1.contains("shop/bad: type 0, resourceID \"not-an-id\""),
        "{failed:?}"
    );
    assert!(
        failed[1]
            .1
            .contains("shop/b → AzureIdentity \"gone\", not in its namespace"),
        "{failed:?}"
    );
}

#[test]
fn assignments_stuck_in_created_for_a_minute_are_listed_with_the_fix() {
    let mut w = World::good();
    w.assigned.push(aai("young", 10, AssignmentState::Created, None));
    assert!(w.check().ok(), "10 s is not stuck");
    w.assigned.push(aai(
        "old",
        300,
        AssignmentState::Created,
        Some("LinkedAuthorizationFailed"),
    ));
    let failed = w.failed();
    assert_eq!(failed[0].0, "stuck");
    assert!(
        failed[0]
            .1
            .contains("shop/old (pod web): LinkedAuthorizationFailed"),
        "{failed:?}"
    );
    assert!(failed[0].1.contains(
        "az role assignment create --role \"Managed Identity Operator\" --assignee mic-oid --scope"
    ));
}

#[test]
fn a_target_over_150_identities_is_over_the_limit() {
    let mut w = World::good();
    for i in 0..=MAX_IDENTITIES_PER_TARGET {
        let mut a = aai(&format!("a{i}"), 600, AssignmentState::Assigned, None);
        a.spec.azure_identity_ref = Some(identity("x", &format!("{RID}{i}")));
        w.assigned.push(a);
    }
    let failed = w.failed();
    assert_eq!(failed[0].0, "limits");
    assert!(failed[0].1.contains("ss needs 152 identities"), "{failed:?}");
}

#[test]
fn a_ready_nmi_with_a_stale_view_is_not_serving() {
    let mut w = World::good();
    w.nmi[1].stale_since = Some("2026-01-01T00:00:01Z".into());
    let failed = w.failed();
    assert_eq!(failed[0].0, "nmi");
    assert!(
        failed[0].1.contains(
            "n1: kube-system/nmi-n1 Ready, but its view of the cluster is stale since 2026-01-01T00:00:01Z"
        ),
        "{failed:?}"
    );
}

/// ARM's read of `RID`: its client id is the AzureIdentity's, and its owner allows `namespaces`.
fn owner_allows(namespaces: &str) -> ConsentReads {
    let body = serde_json::json!({
        "properties": {"clientId": "00000000-0000-0000-0000-000000000001"},
        "tags": {arm::consent::NAMESPACES_TAG: namespaces},
    });
    let facts = arm::consent::IdentityFacts::from_arm(&body).unwrap();
    ConsentReads::Read([(RID.to_ascii_lowercase(), arm::consent::Read::Facts(facts))].into())
}

#[test]
fn identities_in_use_that_mic_would_refuse_are_listed_with_the_owners_command() {
    let mut w = World::good();
    assert!(w.failed().is_empty(), "{:?}", w.failed());
    w.consent = owner_allows("other-team");
    let failed = w.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (id, text) = &failed[0];
    assert_eq!(*id, "consent");
    assert!(
        text.contains("shop/app (pods in shop): IdentityConsentMissing"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "az tag update --resource-id {RID} --operation Merge --tags pod-identity-namespaces=other-team,shop"
        )),
        "{text}"
    );
    assert!(text.contains("--identity-consent=false"), "{text}");
}

#[test]
fn without_arm_consent_is_unchecked_not_failed() {
    let mut w = World::good();
    w.consent = ConsentReads::NotRead("no --cloud-config given".into());
    assert!(w.failed().is_empty());
}
