//! OpenID discovery: the configuration document Entra publishes per tenant.

use serde_json::{Value, json};

use crate::state::Shared;

pub(super) fn openid_configuration(shared: &Shared, base: &str, v2: bool) -> Value {
    let t = &shared.tenant;
    let (oauth, issuer, keys) = if v2 {
        (
            "oauth2/v2.0",
            format!("{base}/{t}/v2.0"),
            format!("{base}/{t}/discovery/v2.0/keys"),
        )
    } else {
        ("oauth2", shared.issuer(), format!("{base}/common/discovery/keys"))
    };
    json!({
        "token_endpoint": format!("{base}/{t}/{oauth}/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": keys,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{base}/{t}/{oauth}/authorize"),
        "device_authorization_endpoint": format!("{base}/{t}/{oauth}/devicecode"),
        "end_session_endpoint": format!("{base}/{t}/{oauth}/logout"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}
