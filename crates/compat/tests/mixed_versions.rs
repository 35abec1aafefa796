//! Mixed versions: upstream aad-pod-identity v1.8.17's own NMI and MIC beside ours, on the same
//! CRDs, against a real kube-apiserver, the Azure emulator and Azurite, with nodes and pods in
//! network namespaces (see the crate's documentation for the layout). The pods run the
//! walkthrough's Python (`ManagedIdentityCredential()`, `BlobServiceClient`).
//!
//! The tests run one at a time (each has its own apiserver, emulator and processes, and the
//! machines have two cores), and each prints its wall time.

use std::time::{Duration, Instant};

use compat::{
    Cluster, Version,
    cluster::{APP_NAMESPACE, Spelling},
    pods::{self, Attempt, Poller},
    world::{NodeIdentity, PRINCIPAL_ID},
};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The walkthrough's pod on `pod`: gets a token for its own identity, then reads the blob.
fn walkthrough(c: &Cluster, pod: usize, versions: &str) {
    let ca = &c.cloud.ca;
    let p = &c.pods[pod];
    let oid = blocking(|| pods::token_oid(&c.python, p, ca))
        .unwrap_or_else(|e| panic!("{versions}: the pod got no token: {e}\n{}", c.logs()));
    assert_eq!(
        oid, PRINCIPAL_ID,
        "{versions}: a token for the pod's own identity"
    );
    let text = blocking(|| pods::read_blob(&c.python, p, ca, &c.account_url()))
        .unwrap_or_else(|e| panic!("{versions}: the blob read failed: {e}\n{}", c.logs()));
    assert_eq!(text, "hello from the pod", "{versions}");
}

/// How long the scale set takes to take an identity in the two pairings: long enough that the
/// pod asks while MIC's AzureAssignedIdentity exists and the identity is not on the scale set yet
/// (real scale sets take 20 to 60 s), and under the 5 s after which our MIC writes `Created` for
/// a slow operation.
const SLOW_SCALE_SET_MS: u64 = 4000;

fn report(test: &str, started: Instant) {
    println!("{test}: wall time {:.1} s", started.elapsed().as_secs_f64());
}

/// Upstream's MIC writes the AzureAssignedIdentities (in `default`, with their status in the
/// create's body, then JSON-patched); our NMI reads them. The pod asks as soon as MIC has
/// recorded its identity, while the scale set is still taking it: NMI holds the request until
/// upstream's MIC says `Assigned`, and the pod gets its own identity's token and reads the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mic_with_our_nmi_serves_the_walkthrough_pod() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut c = Cluster::start(1, NodeIdentity::SystemAssigned, Spelling::Upstream).await;
    blocking(|| c.start_nmi(0, Version::Ours));
    c.start_mic(Version::Upstream);
    c.slow_scale_set(SLOW_SCALE_SET_MS);
    let pod = c.pod(0, "myapp").await;
    c.wait_recorded("myapp").await;
    walkthrough(&c, pod, "upstream MIC + our NMI");

    let (ns, _) = c.wait_assigned("myapp").await;
    assert_eq!(ns, "default", "upstream's MIC keeps its objects in `default`");
    assert_eq!(c.imds_calls_bypassing_nmi(0), Vec::<String>::new());
    report("upstream MIC + our NMI", started);
}

/// Our MIC writes the AzureAssignedIdentities (in the pod's namespace); upstream's NMI reads
/// them, and serves the walkthrough's pod its own identity. The pod asks as soon as MIC has
/// recorded its identity, while the scale set is still taking it: upstream's NMI must not read
/// that object as already assigned (its legacy rule for objects without a status), or it asks
/// IMDS too early and hands the pod a final `Identity not found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_mic_with_upstream_nmi_serves_the_walkthrough_pod() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut c = Cluster::start(1, NodeIdentity::SystemAssigned, Spelling::Upstream).await;
    blocking(|| c.start_nmi(0, Version::Upstream));
    c.start_mic(Version::Ours);
    c.slow_scale_set(SLOW_SCALE_SET_MS);
    let pod = c.pod(0, "myapp").await;
    c.wait_recorded("myapp").await;
    walkthrough(&c, pod, "our MIC + upstream NMI");

    let (ns, _) = c.wait_assigned("myapp").await;
    assert_eq!(
        ns, APP_NAMESPACE,
        "our MIC keeps its objects in the pod's namespace"
    );
    assert_eq!(c.imds_calls_bypassing_nmi(0), Vec::<String>::new());
    report("our MIC + upstream NMI", started);
}

/// The walkthrough's YAML as written (`ClientID`, `ResourceID`, `AzureIdentity`, `Selector`),
/// which our CRD keeps and our MIC reads. Upstream's NMI reads only camelCase, so our MIC's copy
/// of the identity in the AzureAssignedIdentity must be in camelCase: from a copy saying
/// `ClientID` upstream's NMI gets no client id and asks IMDS for the node's own identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_mic_gives_upstream_nmi_the_identity_of_the_walkthroughs_own_yaml() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut c = Cluster::start(1, NodeIdentity::SystemAssigned, Spelling::Seed).await;
    blocking(|| c.start_nmi(0, Version::Upstream));
    c.start_mic(Version::Ours);
    let pod = c.pod(0, "myapp").await;
    c.wait_assigned("myapp").await;
    walkthrough(&c, pod, "our MIC + upstream NMI, the seed's spelling");
    report("our MIC + upstream NMI, the seed's spelling", started);
}

/// What the pollers saw: (failures, tokens for another identity).
fn bad(attempts: &[Attempt]) -> (Vec<&Attempt>, Vec<&Attempt>) {
    let failed = attempts.iter().filter(|a| a.error.is_some()).collect();
    let wrong = attempts
        .iter()
        .filter(|a| a.oid.as_deref().is_some_and(|o| o != PRINCIPAL_ID))
        .collect();
    (failed, wrong)
}

/// A rolling migration on two nodes, under load: upstream's MIC and NMIs serve two pods (one per
/// node) that each ask for a token every 100 ms; MIC is replaced with ours, then each node's NMI
/// in turn, as a Deployment and a DaemonSet rollout do (SIGTERM, its grace period, then the new
/// one). No attempt fails (after the SDK's own retries) and every token is the pod's own.
///
/// Upstream's NMI removes its iptables rules when it gets SIGTERM and exits 10 s later; ours can
/// only listen once it has. For those seconds the node's pods reach IMDS directly (upstream's
/// fail-open): here the scale set carries only the pods' identity, as in the walkthrough, so
/// IMDS hands them that one. The test counts those calls, and checks that they happen during
/// those windows only: none while MIC is swapped, none once our NMI runs on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_migration_from_upstream_loses_no_token_request() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let phase = |what: &str| {
        println!(
            "rolling migration: {what} at {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };
    let mut c = Cluster::start(2, NodeIdentity::Without, Spelling::Upstream).await;
    for i in 0..2 {
        blocking(|| c.start_nmi(i, Version::Upstream));
    }
    c.start_mic(Version::Upstream);
    let (a, b) = (c.pod(0, "myapp-0").await, c.pod(1, "myapp-1").await);
    walkthrough(&c, a, "upstream MIC + upstream NMI");
    c.wait_assigned("myapp-1").await;
    phase("upstream's MIC and NMIs serve both pods");

    let pollers: Vec<Poller> = [a, b]
        .iter()
        .map(|&p| Poller::start(&c.python, &c.pods[p], &c.cloud.ca, c.dir.path()))
        .collect();
    let settle = || std::thread::sleep(Duration::from_secs(2));
    blocking(settle);

    // MIC first: upstream's stops, ours takes over its objects (moves them to the pods'
    // namespace) without taking the identity off the scale set.
    let before_mic = c.call_seq();
    c.stop_mic();
    c.start_mic(Version::Ours);
    for pod in ["myapp-0", "myapp-1"] {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let objects = c.assigned(pod).await;
            if objects.iter().all(|(ns, _, _)| ns == APP_NAMESPACE)
                && objects
                    .iter()
                    .any(|(_, _, s)| *s == api::AssignmentState::Assigned)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "our MIC did not take over {pod}'s objects: {objects:?}\n{}",
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    blocking(settle);
    assert_eq!(
        c.imds_calls_bypassing_nmi(before_mic),
        Vec::<String>::new(),
        "swapping MIC"
    );
    phase("our MIC has taken over");

    // Then NMI, node by node.
    let mut windows = Vec::new();
    for i in 0..2 {
        let before = c.call_seq();
        blocking(|| {
            c.stop_nmi(i);
            c.start_nmi(i, Version::Ours);
        });
        let after = c.call_seq();
        windows.push(c.imds_calls_bypassing_nmi(before).len());
        blocking(settle);
        assert_eq!(
            c.imds_calls_bypassing_nmi(after),
            Vec::<String>::new(),
            "once our NMI runs on node {i}"
        );
        phase(&format!("our NMI serves node {i}"));
    }

    let attempts: Vec<Vec<Attempt>> = blocking(|| pollers.into_iter().map(Poller::stop).collect());
    for (pod, attempts) in ["myapp-0", "myapp-1"].iter().zip(&attempts) {
        let (failed, wrong) = bad(attempts);
        let slowest = attempts.iter().map(|a| a.ms).max().unwrap_or_default();
        println!(
            "rolling migration: {pod}: {} token requests, {} failed, {} for another identity, slowest {slowest} ms",
            attempts.len(),
            failed.len(),
            wrong.len()
        );
        assert!(attempts.len() > 50, "{pod} asked {} times", attempts.len());
        assert!(failed.is_empty(), "{pod}: failures {failed:#?}\n{}", c.logs());
        assert!(wrong.is_empty(), "{pod}: another identity's tokens {wrong:#?}");
    }
    println!(
        "rolling migration: IMDS calls past NMI while upstream's NMI shut down: {windows:?} (node 0, node 1)"
    );
    walkthrough(&c, b, "our MIC + our NMI");
    report("rolling migration", started);
}
