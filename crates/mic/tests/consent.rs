//! Hostile tenants against MIC, with a real kube-apiserver and the Azure emulator: a namespace
//! that may write AzureIdentity objects names identities it does not own. MIC assigns an
//! identity only where its owner allowed it in Azure (`arm::consent`), and the victim keeps
//! being served throughout.
//!
//! In the test world, id6's owner allows only namespace `victim`, id7's only `evil`.

#[allow(dead_code)] // each test binary uses some of the harness
mod support;

use std::{collections::BTreeMap, time::Duration};

use api::{
    AssignmentState::{Assigned, Created},
    AzureAssignedIdentity, AzureIdentity,
};
use kube::{Api, api::PostParams};
use serde_json::json;
use support::{Cluster, client_id, resource_id, settings, world};

const LIMIT: Duration = Duration::from_secs(30);

/// The status reason and message of an AzureAssignedIdentity, once it has a reason.
async fn refusal(c: &Cluster, ns: &str, name: &str) -> (String, String) {
    let api = Api::<AzureAssignedIdentity>::namespaced(c.client.clone(), ns);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(s) = api.get_opt(name).await.unwrap().and_then(|a| a.status)
            && let Some(reason) = s.reason
        {
            assert_eq!(s.status, Some(Created), "a refused assignment is never Assigned");
            return (reason, s.message.unwrap_or_default());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ns}/{name} got no refusal reason"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Identity `n`'s resource id as the AzureIdentity holds it.
fn written_id(n: usize) -> String {
    resource_id(n).replace("resourcegroups", "resourceGroups")
}

/// An AzureIdentity as a tenant may write it: any resourceID, any clientID.
async fn claim(c: &Cluster, ns: &str, name: &str, resource: usize, client: usize) {
    let id: AzureIdentity = serde_json::from_value(json!({
        "apiVersion": "aadpodidentity.k8s.io/v1", "kind": "AzureIdentity",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": 0, "resourceID": written_id(resource), "clientID": client_id(client)}
    }))
    .unwrap();
    Api::<AzureIdentity>::namespaced(c.client.clone(), ns)
        .create(&PostParams::default(), &id)
        .await
        .unwrap();
}

fn fast_recheck() -> mic::controller::Settings {
    let mut s = settings();
    s.consent = Some(mic::controller::ConsentSchedule {
        refresh: Duration::from_secs(300),
        recheck: Duration::from_millis(300),
    });
    s
}

/// `evil` names the victim's identity (its real clientID and resourceID) for a pod on the same
/// scale set: nothing is assigned for it, its object says why and how the owner would grant it,
/// and the victim's assignment is untouched. Once the owner grants `evil`, it is assigned.
#[tokio::test]
async fn naming_another_teams_identity_gets_nothing_until_its_owner_consents() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    for ns in ["victim", "evil"] {
        c.namespace(ns).await;
        claim(&c, ns, "id6", 6, 6).await;
        c.binding(ns, "b", "id6", "app").await;
    }
    c.start_mic(fast_recheck()).await;
    c.pod("victim", "web", "a-0", Some("app")).await;
    c.pod("evil", "thief", "a-1", Some("app")).await;

    let (reason, message) = refusal(&c, "evil", "thief-evil-id6").await;
    assert_eq!(reason, arm::consent::REASON_CONSENT_MISSING);
    let grant = format!(
        "az tag update --resource-id {} --operation Merge --tags pod-identity-namespaces=evil,victim",
        written_id(6)
    );
    assert!(
        message.contains("namespace evil") && message.ends_with(&grant),
        "{message}"
    );
    let wanted = |e: &str| e.starts_with("IdentityConsentMissing:") && e.contains(&grant);
    let events = c.events_until("evil", "thief", LIMIT, wanted).await;
    assert!(events.iter().any(|e| wanted(e)), "{events:?}");
    c.wait_assigned(
        &[("web-victim-id6", Assigned), ("thief-evil-id6", Created)],
        LIMIT,
    )
    .await;
    // The identity is on ss-a for the victim's pod; the thief's object stays refused while the
    // planner goes round again (a pod label change wakes it) and MIC re-reads the identity.
    assert_eq!(c.on_node("a-0"), [resource_id(6)]);
    for _ in 0..5 {
        c.pod("victim", "wake", "b-0", None).await;
        c.delete_pod("victim", "wake").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(c.assigned(Some("evil")).await["thief-evil-id6"], Some(Created));
    }
    assert_eq!(c.assigned(Some("victim")).await["web-victim-id6"], Some(Assigned));

    // The owner grants `evil` (as `az tag update … --operation Merge` would): assigned.
    c.azure
        .admin()
        .set_identity_tags(
            "id6",
            [("pod-identity-namespaces".into(), "victim,evil".into())].into(),
        )
        .unwrap();
    c.wait_assigned(
        &[("web-victim-id6", Assigned), ("thief-evil-id6", Assigned)],
        LIMIT,
    )
    .await;
    c.stop_mic().await;
}

/// `evil` writes its own identity (id7, which its owner lets `evil` use) as resourceID, with the
/// victim's clientID: NMI would ask IMDS for the victim's token by that client id. MIC checks
/// the clientID against ARM and assigns nothing; the victim's identity stays the victim's.
#[tokio::test]
async fn a_client_id_that_is_not_the_resource_ids_is_refused() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("victim").await;
    c.namespace("evil").await;
    claim(&c, "victim", "id6", 6, 6).await;
    c.binding("victim", "b", "id6", "app").await;
    claim(&c, "evil", "mine", 7, 6).await;
    c.binding("evil", "b", "mine", "app").await;
    c.start_mic(fast_recheck()).await;
    c.pod("victim", "web", "c-0", Some("app")).await;
    c.pod("evil", "thief", "c-0", Some("app")).await;

    let (reason, message) = refusal(&c, "evil", "thief-evil-mine").await;
    assert_eq!(reason, arm::consent::REASON_CLIENT_ID_MISMATCH);
    assert!(
        message.contains(&format!("set clientID to {}", client_id(7))),
        "{message}"
    );
    c.wait_assigned(
        &[("web-victim-id6", Assigned), ("thief-evil-mine", Created)],
        LIMIT,
    )
    .await;
    // Only the victim's identity went on the VM: id7 was never assigned.
    assert_eq!(c.on_node("c-0"), [resource_id(6)]);
    c.stop_mic().await;
}

/// A grant revoked by the owner takes the identity away: the object goes back to `Created`
/// with the reason, and the identity leaves the VM once no consenting pod needs it.
#[tokio::test]
async fn a_revoked_grant_takes_the_identity_away() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("victim").await;
    claim(&c, "victim", "id6", 6, 6).await;
    c.binding("victim", "b", "id6", "app").await;
    let mut s = fast_recheck();
    // The periodic re-read is what sees a revocation.
    s.consent = Some(mic::controller::ConsentSchedule {
        refresh: Duration::from_millis(500),
        recheck: Duration::from_millis(300),
    });
    c.start_mic(s).await;
    c.pod("victim", "web", "c-0", Some("app")).await;
    c.wait_assigned(&[("web-victim-id6", Assigned)], LIMIT).await;
    c.azure.admin().set_identity_tags("id6", BTreeMap::new()).unwrap();
    let (reason, _) = refusal(&c, "victim", "web-victim-id6").await;
    assert_eq!(reason, arm::consent::REASON_CONSENT_MISSING);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !c.on_node("c-0").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the identity stayed on vm-c"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop_mic().await;
}

/// `--identity-consent=false`: every identity a namespace names is assigned, as upstream did.
#[tokio::test]
async fn without_consent_checks_any_named_identity_is_assigned() {
    let mut c = Cluster::start(world(&BTreeMap::new())).await;
    c.namespace("evil").await;
    claim(&c, "evil", "id6", 6, 6).await;
    c.binding("evil", "b", "id6", "app").await;
    let mut s = settings();
    s.consent = None;
    c.start_mic(s).await;
    c.pod("evil", "thief", "c-0", Some("app")).await;
    c.wait_assigned(&[("thief-evil-id6", Assigned)], LIMIT).await;
    let reads = c.azure.admin().counters().arm_reads;
    assert!(!reads.contains_key("identity"), "no identity was read: {reads:?}");
    c.stop_mic().await;
}
