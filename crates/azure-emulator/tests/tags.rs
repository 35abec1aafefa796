//! Tags of user-assigned identities: in the identity's ARM body, written as `az identity update`
//! (GET then PUT of the whole resource) and SDKs' PATCH do, through the tags resource as `az tag`
//! does (Merge/Replace/Delete, create, show, delete), under Azure's limits with ARM's error codes,
//! and counted apart from compute reads.

mod common;

use azure_emulator::world::IdentitySpec;
use common::*;
use serde_json::{Value, json};

const MSI_API: &str = "api-version=2023-01-31";
const TAGS_API: &str = "api-version=2021-04-01";
const CONSENT: &str = "pod-identity-namespaces";

impl Arm {
    async fn send(&self, method: reqwest::Method, path_and_query: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| serde_json::to_vec(&b).expect("JSON serialises"));
        self.request(method, path_and_query, body).await
    }

    async fn identity(&self, method: reqwest::Method, name: &str, body: Option<Value>) -> Reply {
        self.send(method, &format!("{}?{MSI_API}", identity_id(name)), body)
            .await
    }

    async fn tags(&self, method: reqwest::Method, name: &str, body: Option<Value>) -> Reply {
        let path = format!(
            "{}/providers/Microsoft.Resources/tags/default?{TAGS_API}",
            identity_id(name)
        );
        self.send(method, &path, body).await
    }

    async fn merge(&self, name: &str, tags: Value) -> Reply {
        let body = json!({"operation": "Merge", "properties": {"tags": tags}});
        self.tags(reqwest::Method::PATCH, name, Some(body)).await
    }
}

#[tokio::test]
async fn get_shows_the_world_files_tags() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let r = arm.identity(reqwest::Method::GET, "app-identity", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["tags"], json!({CONSENT: "*"}));
    let r = arm.identity(reqwest::Method::GET, "storage-reader", None).await;
    assert_eq!(r.body["tags"], json!({}));
}

#[tokio::test]
async fn az_identity_update_and_sdk_patch_replace_the_tags() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    // az identity update -g identity-rg -n app-identity --tags pod-identity-namespaces=web team=a:
    // a GET, then a PUT of what it read with the tags replaced (read-only fields go too).
    let mut resource = arm
        .identity(reqwest::Method::GET, "app-identity", None)
        .await
        .body;
    resource["tags"] = json!({CONSENT: "web", "team": "a"});
    let r = arm
        .identity(reqwest::Method::PUT, "app-identity", Some(resource))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["tags"], json!({CONSENT: "web", "team": "a"}));
    assert_eq!(r.body["clientId"], APP_IDENTITY_CLIENT, "the same identity");

    // Update-AzUserAssignedIdentity / SDK update: PATCH {tags} replaces the whole map.
    let r = arm
        .identity(
            reqwest::Method::PATCH,
            "app-identity",
            Some(json!({"tags": {CONSENT: "web,api"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["tags"], json!({CONSENT: "web,api"}));
    let r = arm
        .identity(
            reqwest::Method::PATCH,
            "app-identity",
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(
        r.body["tags"],
        json!({CONSENT: "web,api"}),
        "a PATCH without tags keeps them"
    );
    assert_eq!(
        arm.identity(reqwest::Method::GET, "app-identity", None)
            .await
            .body["tags"],
        json!({CONSENT: "web,api"})
    );
    // A PUT states the whole resource: without tags, it has none.
    let r = arm
        .identity(
            reqwest::Method::PUT,
            "app-identity",
            Some(json!({"location": "eastus"})),
        )
        .await;
    assert_eq!(r.body["tags"], json!({}));

    // az identity create --tags: a PUT creating the identity with them.
    let r = arm
        .identity(
            reqwest::Method::PUT,
            "tagged-at-birth",
            Some(json!({"location": "eastus", "tags": {CONSENT: "*"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["tags"], json!({CONSENT: "*"}));

    let r = arm
        .identity(
            reqwest::Method::PATCH,
            "app-identity",
            Some(json!({"tags": {"a/b": "x"}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidTagNameCharacters"));
    let r = arm
        .identity(
            reqwest::Method::PATCH,
            "app-identity",
            Some(json!({"tags": {"k": 1}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestContent"));
    let r = arm
        .identity(reqwest::Method::PATCH, "missing", Some(json!({"tags": {}})))
        .await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
}

#[tokio::test]
async fn the_tags_resource_merges_replaces_deletes_and_shows() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let id = identity_id("app-identity");

    // az tag list --resource-id <id>
    let r = arm.tags(reqwest::Method::GET, "app-identity", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({
            "id": format!("{id}/providers/Microsoft.Resources/tags/default"),
            "name": "default",
            "type": "Microsoft.Resources/tags",
            "properties": {"tags": {CONSENT: "*"}},
        })
    );

    // az tag update --operation Merge: adds names, updates existing ones whatever their case,
    // keeping the casing first written; values keep theirs.
    let r = arm
        .merge(
            "app-identity",
            json!({"Pod-Identity-Namespaces": "Web", "team": "a"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers
            .contains_key("x-ms-ratelimit-remaining-subscription-writes")
    );
    assert_eq!(r.body["properties"]["tags"], json!({CONSENT: "Web", "team": "a"}));
    assert_eq!(
        arm.identity(reqwest::Method::GET, "app-identity", None)
            .await
            .body["tags"],
        json!({CONSENT: "Web", "team": "a"}),
        "the identity shows what the tags resource wrote"
    );

    // --operation Delete: by name (`--tags team` sends an empty value), or by exact name/value.
    let delete = |tags: Value| json!({"operation": "Delete", "properties": {"tags": tags}});
    let r = arm
        .tags(
            reqwest::Method::PATCH,
            "app-identity",
            Some(delete(json!({CONSENT: "web"}))),
        )
        .await;
    assert_eq!(
        r.body["properties"]["tags"][CONSENT], "Web",
        "values compare with case"
    );
    let r = arm
        .tags(
            reqwest::Method::PATCH,
            "app-identity",
            Some(delete(json!({"TEAM": ""}))),
        )
        .await;
    assert_eq!(r.body["properties"]["tags"], json!({CONSENT: "Web"}));

    // --operation Replace, and az tag create (PUT): the whole set.
    let replace = json!({"operation": "Replace", "properties": {"tags": {"only": "this"}}});
    let r = arm
        .tags(reqwest::Method::PATCH, "app-identity", Some(replace))
        .await;
    assert_eq!(r.body["properties"]["tags"], json!({"only": "this"}));
    let r = arm
        .tags(
            reqwest::Method::PUT,
            "app-identity",
            Some(json!({"properties": {"tags": {CONSENT: "default,web"}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["tags"], json!({CONSENT: "default,web"}));

    // az tag delete --resource-id <id>: all gone; an untagged resource shows empty properties.
    let r = arm.tags(reqwest::Method::DELETE, "app-identity", None).await;
    assert_eq!(r.status, 200);
    let r = arm.tags(reqwest::Method::GET, "app-identity", None).await;
    assert_eq!(r.body["properties"], json!({}));

    let r = arm
        .tags(
            reqwest::Method::PATCH,
            "app-identity",
            Some(json!({"operation": "Squash", "properties": {}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestContent"));
    let r = arm.tags(reqwest::Method::GET, "missing", None).await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
    let r = arm
        .send(
            reqwest::Method::GET,
            &format!(
                "{}/providers/Microsoft.Resources/tags/default?{TAGS_API}",
                vm_path("aks-agent-0")
            ),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "InvalidResourceType"),
        "only identities keep tags here"
    );
    let r = arm
        .send(
            reqwest::Method::GET,
            &format!("{id}/providers/Microsoft.Resources/tags/default?api-version=2019-01-01"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidApiVersionParameter"));
}

#[tokio::test]
async fn each_limit_is_refused_with_arms_code_and_nothing_changes() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    for name in ["a<b", "a>b", "a%b", "a&b", "a\\b", "a?b", "a/b"] {
        let r = arm.merge("app-identity", json!({name: "v"})).await;
        assert_eq!((r.status, r.code()), (400, "InvalidTagNameCharacters"), "{name}");
        assert!(r.body["error"]["message"].as_str().unwrap().contains(name));
    }
    let r = arm.merge("app-identity", json!({"n".repeat(513): "v"})).await;
    assert_eq!((r.status, r.code()), (400, "InvalidTagName"));
    let r = arm
        .merge("app-identity", json!({"n".repeat(512): "v".repeat(256)}))
        .await;
    assert_eq!(r.status, 200, "512 and 256 characters are allowed");
    let r = arm.merge("app-identity", json!({"k": "v".repeat(257)})).await;
    assert_eq!((r.status, r.code()), (400, "InvalidTagValueLength"));
    let r = arm.merge("app-identity", json!({"": "v"})).await;
    assert_eq!((r.status, r.code()), (400, "InvalidTagName"));

    // 50 at the end of the operation: two tags are there, 48 more fit, a 49th does not.
    let fill: serde_json::Map<String, Value> = (0..48).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = arm.merge("app-identity", Value::Object(fill)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = arm.merge("app-identity", json!({"one-too-many": "v"})).await;
    assert_eq!((r.status, r.code()), (400, "InvalidTags"));
    let r = arm.merge("app-identity", json!({"K0": "updated"})).await;
    assert_eq!(r.status, 200, "updating an existing name adds none");
    let tags = &arm.tags(reqwest::Method::GET, "app-identity", None).await.body["properties"]["tags"];
    assert_eq!(tags.as_object().unwrap().len(), 50);
    assert_eq!(tags["k0"], "updated");
}

#[tokio::test]
async fn tests_count_identity_reads_apart_from_compute_reads() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    emu.admin().reset_counters();
    arm.identity(reqwest::Method::GET, "app-identity", None).await;
    arm.identity(reqwest::Method::GET, "missing", None).await;
    arm.send(
        reqwest::Method::GET,
        &format!("{}?api-version=2019-12-01", vm_path("aks-agent-0")),
        None,
    )
    .await;
    arm.tags(reqwest::Method::GET, "app-identity", None).await;
    arm.merge("app-identity", json!({"k": "v"})).await;
    let reads = emu.admin().counters().arm_reads;
    assert_eq!(reads.get("identity"), Some(&2), "{reads:?}");
    assert_eq!(reads.get("vm"), Some(&1));
    assert_eq!(reads.get("tags"), Some(&1), "the PATCH is no read");
    let labels: Vec<(String, String)> = emu
        .admin()
        .calls()
        .into_iter()
        .filter(|c| c.endpoint == azure_emulator::EndpointKind::Arm)
        .map(|c| (c.method, c.label))
        .collect();
    assert!(labels.contains(&("GET".into(), "identity".into())), "{labels:?}");
    assert!(labels.contains(&("PATCH".into(), "tags".into())), "{labels:?}");
    assert!(
        emu.admin().counters().arm_writes.is_empty(),
        "tag writes start no operation"
    );
}

#[tokio::test]
async fn admin_sets_tags_directly() {
    let emu = start(example_world()).await;
    let arm = Arm::new(&emu).await;
    let tags = [(CONSENT.to_owned(), "ns-a".to_owned())].into();
    let i = emu.admin().set_identity_tags("storage-reader", tags).unwrap();
    assert_eq!(i.tags[CONSENT], "ns-a");
    assert_eq!(
        arm.identity(reqwest::Method::GET, "storage-reader", None)
            .await
            .body["tags"],
        json!({CONSENT: "ns-a"})
    );
    let bad = [("a/b".to_owned(), String::new())].into();
    assert!(emu.admin().set_identity_tags("storage-reader", bad).is_err());

    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/admin/identities/tags", emu.admin_url()))
        .json(&json!({"identity": identity_id("storage-reader"), "tags": {CONSENT: "*"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!({CONSENT: "*"}));
    // The demo scripts' request, without tags, and one with them.
    let post = |body: Value| {
        http.post(format!("{}/admin/identities", emu.admin_url()))
            .json(&body)
            .send()
    };
    let r = post(json!({"name": "plain", "resource_group": "identity-rg"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!({}));
    let r = post(json!({"name": "consenting", "resource_group": "identity-rg", "tags": {CONSENT: "web"}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!({CONSENT: "web"}));
    let r = post(json!({"name": "refused", "resource_group": "identity-rg", "tags": {"a?": ""}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_world_file_is_held_to_the_same_limits() {
    let mut w = example_world();
    w.identities.push(IdentitySpec {
        name: "bad-tags".into(),
        resource_group: "identity-rg".into(),
        client_id: "2f5a3c4d-0000-4000-8000-0000000000ff".into(),
        principal_id: "9b1e7d2a-0000-4000-8000-0000000000ff".into(),
        tags: [("a%b".to_owned(), String::new())].into(),
        ..Default::default()
    });
    let e = azure_emulator::Emulator::start(w).await.err().expect("refused");
    assert!(e.to_string().contains("InvalidTagNameCharacters"), "{e}");
}
