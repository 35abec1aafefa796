//! Issue 7 §1: the authorization matrix. Several namespaces, pods, bindings and identities on a real
//! kube-apiserver, every identity present on the node's VM in the Azure emulator (so only NMI stands
//! between a pod and any of them). Every request must get exactly the expected identity's token
//! (checked by the JWT's `appid` and `xms_mirid`) or a refusal; the test prints the counts and
//! asserts that no token was wrong and that every expected success succeeded.

mod common;

use std::collections::BTreeSet;

use api::{AzureIdentity, AzureIdentityBinding};
use common::{Answer, Env, Opts, Uami, env, resource_id, uami};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use nmi::state::PodLookup;
use serde_json::json;
use testbed::ApiServer;

const ID_A: Uami = uami(0);
const ID_B: Uami = uami(1);
const ID_C: Uami = uami(2);
const ID_E: Uami = uami(4);
/// On the node's VM, declared as an AzureIdentity nowhere: only an honoured exception reaches it.
const NODE_ID: Uami = uami(5);

#[derive(Default)]
struct Tally {
    requests: usize,
    issued: usize,
    refusals: usize,
    wrong: Vec<String>,
    missed: Vec<String>,
    bad_refusals: Vec<String>,
}

impl Tally {
    /// Sends one request and scores it: `expect` is the only identity whose token is acceptable,
    /// `None` meaning the request must be refused.
    async fn ask(&mut self, env: &Env, case: &str, from: &str, query: &str, expect: Option<Uami>) {
        let a: Answer = env.ask(from, query).await;
        self.requests += 1;
        let what = format!("{case} [{from}{query}] -> {} {}", a.status, a.body);
        match (a.who(), expect) {
            (Some((appid, mirid)), Some(u)) => {
                self.issued += 1;
                let ok = appid == u.client() && mirid == resource_id(u.name).to_ascii_lowercase();
                if !ok {
                    self.wrong.push(format!("{what}: wanted {}", u.name));
                }
            }
            (Some(_), None) => {
                self.issued += 1;
                self.wrong.push(format!("{what}: wanted a refusal"));
            }
            (None, Some(u)) => {
                self.refusals += 1;
                self.missed.push(format!("{what}: wanted {}", u.name));
            }
            (None, None) => {
                self.refusals += 1;
                // A refusal is a definite "no" (403/404), never a 5xx an SDK would retry forever.
                if a.status != 403 && a.status != 404 {
                    self.bad_refusals.push(what);
                }
            }
        }
    }
}

fn q(key: &str, value: &str) -> String {
    format!(
        "&{key}={}",
        form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
    )
}

/// Every way of naming an identity, for each identity in `ids`.
fn selectors(ids: &[Uami]) -> Vec<(String, Uami)> {
    ids.iter()
        .flat_map(|u| {
            [
                (q("client_id", &u.client()), *u),
                (q("client_id", &u.client().to_ascii_uppercase()), *u),
                (q("object_id", &u.principal()), *u),
                (q("msi_res_id", &resource_id(u.name)), *u),
                (q("mi_res_id", &resource_id(u.name).to_ascii_lowercase()), *u),
            ]
        })
        .collect()
}

#[tokio::test]
async fn authorization_matrix_gives_no_wrong_token() {
    let shared = ApiServer::shared();
    let (client, a) = shared.namespace("matrix-a").await.expect("a namespace");
    let (_, b) = shared.namespace("matrix-b").await.expect("a namespace");
    let (_, c) = shared.namespace("matrix-c").await.expect("a namespace");
    // Exceptions are honoured in namespace A only (`--exception-namespaces=A`).
    let policy = matching::Policy {
        namespaced: true,
        exception_namespaces: Some(BTreeSet::from([a.clone()])),
    };
    let env = env(
        client.clone(),
        a.clone(),
        Opts {
            policy,
            // Unknown and hostNetwork sources are refused after this wait; keep the matrix quick.
            pod_wait: std::time::Duration::from_millis(100),
            ..Opts::default()
        },
    )
    .await;

    // Namespace A: id-a for `app-a`, id-b for `app-a2`, id-e for `app-e`; an exception for `noaad`.
    env.identity_in(&a, ID_A).await;
    env.identity_in(&a, ID_B).await;
    env.identity_in(&a, ID_E).await;
    env.binding_in(&a, "bind-a", ID_A.name, "app-a").await;
    env.binding_in(&a, "bind-a2", ID_B.name, "app-a2").await;
    env.binding_in(&a, "bind-e", ID_E.name, "app-e").await;
    env.exception_in(&a, "system", json!({"noaad": "true"})).await;
    // Namespace B: id-c for `app-b`; a binding naming A's identity (cross-namespace attempt); its
    // own exception, in a namespace not allowed to use exceptions.
    env.identity_in(&b, ID_C).await;
    env.binding_in(&b, "bind-b", ID_C.name, "app-b").await;
    env.binding_in(&b, "steal", ID_A.name, "steal").await;
    env.exception_in(&b, "bypass", json!({"bypass": "yes"})).await;
    // Namespace C: an identity object copying A's id-a (same name and client id) without a binding,
    // and a binding to A's selector text.
    env.binding_in(&c, "bind-c", ID_A.name, "app-a").await;

    let ip = |n: u8| format!("127.0.40.{n}");
    env.pod_in(&a, "a-good", &ip(1), json!({"aadpodidbinding": "app-a"}), false)
        .await;
    env.pod_in(&a, "a-two", &ip(2), json!({"aadpodidbinding": "app-a2"}), false)
        .await;
    env.pod_in(&b, "rogue", &ip(3), json!({"aadpodidbinding": "app-a"}), false)
        .await;
    env.pod_in(&b, "b-good", &ip(4), json!({"aadpodidbinding": "app-b"}), false)
        .await;
    env.pod_in(&b, "b-steal", &ip(5), json!({"aadpodidbinding": "steal"}), false)
        .await;
    env.pod_in(&a, "unlabelled", &ip(6), json!({}), false).await;
    env.pod_in(&a, "host", &ip(7), json!({"aadpodidbinding": "app-a"}), true)
        .await;
    env.pod_in(&a, "a-except", &ip(8), json!({"noaad": "TRUE"}), false)
        .await;
    env.pod_in(&b, "b-except", &ip(9), json!({"noaad": "true"}), false)
        .await;
    env.pod_in(&b, "b-bypass", &ip(10), json!({"bypass": "yes"}), false)
        .await;
    env.pod_in(&c, "c-rogue", &ip(11), json!({"aadpodidbinding": "app-a"}), false)
        .await;
    env.pod_in(&a, "a-e", &ip(12), json!({"aadpodidbinding": "app-e"}), false)
        .await;
    env.pod_in(&a, "a-reuse", &ip(13), json!({"aadpodidbinding": "app-a"}), false)
        .await;

    let everyone = [ID_A, ID_B, ID_C, ID_E, NODE_ID];
    let mut t = Tally::default();
    // Each static case twice: the second answer comes from NMI's warm token cache.
    for round in 0..2 {
        let r = |s: &str| format!("{s} (round {round})");
        // Bound pods: their identity by default and by any of its names; no other identity by any name.
        for (pod, n, own) in [("a-good", 1, ID_A), ("a-two", 2, ID_B), ("b-good", 4, ID_C)] {
            t.ask(&env, &r(&format!("{pod} default")), &ip(n), "", Some(own))
                .await;
            for (sel, u) in selectors(&everyone) {
                let expect = (u == own).then_some(own);
                t.ask(&env, &r(&format!("{pod} names {}", u.name)), &ip(n), &sel, expect)
                    .await;
            }
        }
        // Label reuse in another namespace, a binding naming another namespace's identity, a
        // third namespace binding A's identity name, an unlabelled pod, a hostNetwork pod with a
        // bound label: refused whatever they ask for.
        for (pod, n) in [
            ("rogue (label reuse, ns B)", 3),
            ("b-steal (cross-namespace binding)", 5),
            ("unlabelled", 6),
            ("hostNetwork", 7),
            ("c-rogue (ns C binding to A's identity name)", 11),
        ] {
            t.ask(&env, &r(&format!("{pod} default")), &ip(n), "", None).await;
            for (sel, u) in selectors(&everyone) {
                t.ask(&env, &r(&format!("{pod} names {}", u.name)), &ip(n), &sel, None)
                    .await;
            }
        }
        // An honoured exception (its own namespace, allowed) reaches the node's identity, as IMDS would.
        t.ask(
            &env,
            &r("a-except names the node identity"),
            &ip(8),
            &q("client_id", &NODE_ID.client()),
            Some(NODE_ID),
        )
        .await;
        // The same label in namespace B, where A's exception does not apply: refused.
        // B's own exception: B is not in --exception-namespaces: refused.
        for (pod, n) in [
            ("b-except (exception of another ns)", 9),
            ("b-bypass (ns not allowed)", 10),
        ] {
            t.ask(&env, &r(pod), &ip(n), &q("client_id", &NODE_ID.client()), None)
                .await;
            t.ask(
                &env,
                &r(pod),
                &ip(n),
                &q("msi_res_id", &resource_id(ID_A.name)),
                None,
            )
            .await;
            t.ask(&env, &r(pod), &ip(n), "", None).await;
        }
    }

    // An IP reused right after a pod is deleted: the new pod (unbound, then bound elsewhere) is refused
    // although a token for the IP's previous owner is cached.
    t.ask(&env, "a-reuse before deletion", &ip(13), "", Some(ID_A))
        .await;
    Api::<Pod>::namespaced(client.clone(), &a)
        .delete("a-reuse", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    env.until("NMI sees a-reuse go", |s| {
        s.pods.by_ip(&ip(13)) == PodLookup::NotFound
    })
    .await;
    env.pod_in(
        &b,
        "intruder",
        &ip(13),
        json!({"aadpodidbinding": "app-a"}),
        false,
    )
    .await;
    t.ask(&env, "intruder on a reused IP", &ip(13), "", None).await;
    t.ask(
        &env,
        "intruder on a reused IP",
        &ip(13),
        &q("client_id", &ID_A.client()),
        None,
    )
    .await;

    // An identity deleted while its token is cached.
    t.ask(
        &env,
        "a-e before its identity is deleted",
        &ip(12),
        "",
        Some(ID_E),
    )
    .await;
    Api::<AzureIdentity>::namespaced(client.clone(), &a)
        .delete(ID_E.name, &DeleteParams::default())
        .await
        .unwrap();
    let ns = a.clone();
    env.until("NMI sees id-e go", |s| s.identities.get(&ns, ID_E.name).is_none())
        .await;
    t.ask(&env, "a-e after its identity is deleted", &ip(12), "", None)
        .await;
    t.ask(
        &env,
        "a-e after its identity is deleted",
        &ip(12),
        &q("client_id", &ID_E.client()),
        None,
    )
    .await;

    // A binding deleted while its token is cached.
    t.ask(
        &env,
        "a-two before its binding is deleted",
        &ip(2),
        "",
        Some(ID_B),
    )
    .await;
    Api::<AzureIdentityBinding>::namespaced(client.clone(), &a)
        .delete("bind-a2", &DeleteParams::default())
        .await
        .unwrap();
    env.until("NMI sees bind-a2 go", |s| {
        s.bindings.get(&ns, "bind-a2").is_none()
    })
    .await;
    t.ask(&env, "a-two after its binding is deleted", &ip(2), "", None)
        .await;
    t.ask(
        &env,
        "a-two after its binding is deleted",
        &ip(2),
        &q("object_id", &ID_B.principal()),
        None,
    )
    .await;
    // The other bound pod is unaffected throughout.
    t.ask(&env, "a-good at the end", &ip(1), "", Some(ID_A)).await;

    println!(
        "authorization matrix: requests {}, tokens issued {}, refusals {}, wrong tokens {}",
        t.requests,
        t.issued,
        t.refusals,
        t.wrong.len()
    );
    assert!(t.wrong.is_empty(), "wrong tokens:\n{}", t.wrong.join("\n"));
    assert!(
        t.missed.is_empty(),
        "expected tokens not issued:\n{}",
        t.missed.join("\n")
    );
    assert!(
        t.bad_refusals.is_empty(),
        "refusals that were not a definite 403/404:\n{}",
        t.bad_refusals.join("\n")
    );
    assert_eq!(t.requests, t.issued + t.refusals);
    assert!(
        t.issued >= 40 && t.refusals >= 100,
        "the matrix exercised both sides"
    );
}
