//! Which Azure cloud: the `cloud` name of the cloud config selects the ARM endpoint, the Entra
//! authority and the audience of MIC's ARM tokens, as go-autorest's `EnvironmentFromName` did for
//! upstream (names compared without regard to case). `AzureStackCloud` reads its endpoints from the
//! go-autorest environment file named by `AZURE_ENVIRONMENT_FILEPATH`.

use serde::Deserialize;

use crate::Error;

/// The variable naming an Azure Stack environment file (go-autorest's `EnvironmentFilepathName`).
pub const ENVIRONMENT_FILEPATH: &str = "AZURE_ENVIRONMENT_FILEPATH";

/// The endpoints of one cloud that MIC uses. URLs as the cloud publishes them (with their
/// trailing slash); callers trim it where they join paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEndpoints {
    /// The cloud's name as configured (or `AzurePublicCloud` when none was).
    pub name: String,
    /// ARM, e.g. `https://management.azure.com/`.
    pub resource_manager: String,
    /// Entra's authority host, e.g. `https://login.microsoftonline.com/`.
    pub active_directory: String,
    /// The resource (audience) of ARM tokens.
    pub token_audience: String,
}

fn known(name: &str, arm: &str, aad: &str) -> CloudEndpoints {
    CloudEndpoints {
        name: name.to_owned(),
        resource_manager: arm.to_owned(),
        active_directory: aad.to_owned(),
        token_audience: arm.to_owned(),
    }
}

/// The clouds go-autorest knows by name (upstream's list, including its aliases).
pub fn known_cloud(name: &str) -> Option<CloudEndpoints> {
    let public = (
        "https://management.azure.com/",
        "https://login.microsoftonline.com/",
    );
    let china = (
        "https://management.chinacloudapi.cn/",
        "https://login.chinacloudapi.cn/",
    );
    let usgov = (
        "https://management.usgovcloudapi.net/",
        "https://login.microsoftonline.us/",
    );
    // Closed in 2021; kept because upstream accepted the name.
    let german = (
        "https://management.microsoftazure.de/",
        "https://login.microsoftonline.de/",
    );
    let (arm, aad) = match name.to_ascii_uppercase().as_str() {
        "AZUREPUBLICCLOUD" | "AZURECLOUD" => public,
        "AZURECHINACLOUD" => china,
        "AZUREUSGOVERNMENTCLOUD" | "AZUREUSGOVERNMENT" => usgov,
        "AZUREGERMANCLOUD" => german,
        _ => return None,
    };
    Some(known(name, arm, aad))
}

/// The fields of a go-autorest environment file that MIC reads (the file has many more).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    resource_manager_endpoint: String,
    #[serde(default)]
    active_directory_endpoint: String,
    #[serde(default)]
    token_audience: String,
}

/// Reads an Azure Stack environment file, `text` read from `path` (named in errors). The token
/// audience is its `tokenAudience` (Azure Stack Hub's ARM audience); without one, the ARM endpoint
/// itself, as upstream asked for.
pub fn from_environment_file(path: &str, text: &str) -> Result<CloudEndpoints, Error> {
    let env: EnvironmentFile = serde_json::from_str(text).map_err(|source| Error::EnvironmentFileSyntax {
        path: path.to_owned(),
        source,
    })?;
    let need = |v: &str, field: &'static str| {
        if v.trim().is_empty() {
            Err(Error::EnvironmentFileField {
                path: path.to_owned(),
                field,
            })
        } else {
            Ok(v.trim().to_owned())
        }
    };
    let resource_manager = need(&env.resource_manager_endpoint, "resourceManagerEndpoint")?;
    let active_directory = need(&env.active_directory_endpoint, "activeDirectoryEndpoint")?;
    let token_audience = match env.token_audience.trim() {
        "" => resource_manager.clone(),
        a => a.to_owned(),
    };
    Ok(CloudEndpoints {
        name: if env.name.is_empty() {
            "AzureStackCloud".into()
        } else {
            env.name
        },
        resource_manager,
        active_directory,
        token_audience,
    })
}

/// Selects the cloud named `name` (none or empty: the public cloud). For `AzureStackCloud`,
/// `environment_file` gives the path in `AZURE_ENVIRONMENT_FILEPATH` and `read` the file's text.
pub fn select(
    name: Option<&str>,
    environment_file: Option<&str>,
    read: impl FnOnce(&str) -> std::io::Result<String>,
) -> Result<CloudEndpoints, Error> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("AzurePublicCloud");
    if name.eq_ignore_ascii_case("AzureStackCloud") {
        let path = environment_file
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::NoEnvironmentFile {
                name: name.to_owned(),
            })?;
        let text = read(path).map_err(|source| Error::ReadEnvironmentFile {
            path: path.to_owned(),
            source,
        })?;
        return from_environment_file(path, &text);
    }
    known_cloud(name).ok_or_else(|| Error::UnknownCloud {
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_file(_: &str) -> std::io::Result<String> {
        Err(std::io::Error::other("no file expected"))
    }

    #[test]
    fn names_select_the_sovereign_clouds_in_any_case() {
        let c = select(Some("azurechinacloud"), None, no_file).unwrap();
        assert_eq!(c.resource_manager, "https://management.chinacloudapi.cn/");
        assert_eq!(c.active_directory, "https://login.chinacloudapi.cn/");
        assert_eq!(c.token_audience, "https://management.chinacloudapi.cn/");
        let c = select(Some("AzureUSGovernmentCloud"), None, no_file).unwrap();
        assert_eq!(
            (c.resource_manager.as_str(), c.active_directory.as_str()),
            (
                "https://management.usgovcloudapi.net/",
                "https://login.microsoftonline.us/"
            )
        );
        assert_eq!(
            select(Some("AZUREUSGOVERNMENT"), None, no_file)
                .unwrap()
                .resource_manager,
            c.resource_manager
        );
        for public in [None, Some(""), Some("AzurePublicCloud"), Some("azurecloud")] {
            let c = select(public, None, no_file).unwrap();
            assert_eq!(c.resource_manager, "https://management.azure.com/");
            assert_eq!(c.active_directory, "https://login.microsoftonline.com/");
            assert_eq!(c.token_audience, "https://management.azure.com/");
        }
        let e = select(Some("AzureMoonCloud"), None, no_file)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AzureMoonCloud") && e.contains("AzureChinaCloud"),
            "{e}"
        );
    }

    #[test]
    fn azure_stack_reads_the_environment_file() {
        let file = r#"{"name": "AzureStackCloud", "resourceManagerEndpoint": "https://management.local.azurestack.external/",
            "activeDirectoryEndpoint": "https://login.microsoftonline.com/", "serviceManagementEndpoint": "https://management.azurestackci.onmicrosoft.com/abc",
            "tokenAudience": "https://management.azurestackci.onmicrosoft.com/abc", "graphEndpoint": "https://graph.windows.net/"}"#;
        let c = select(
            Some("azurestackcloud"),
            Some("/etc/kubernetes/akscustom.json"),
            |p| {
                assert_eq!(p, "/etc/kubernetes/akscustom.json");
                Ok(file.to_owned())
            },
        )
        .unwrap();
        assert_eq!(
            c.resource_manager,
            "https://management.local.azurestack.external/"
        );
        assert_eq!(
            c.token_audience,
            "https://management.azurestackci.onmicrosoft.com/abc"
        );
        // Without tokenAudience, upstream's audience: the ARM endpoint.
        let c = from_environment_file(
            "/x.json",
            r#"{"resourceManagerEndpoint": "https://arm.example/", "activeDirectoryEndpoint": "https://aad.example/"}"#,
        )
        .unwrap();
        assert_eq!(c.token_audience, "https://arm.example/");
    }

    #[test]
    fn azure_stack_errors_say_what_is_missing() {
        let e = select(Some("AzureStackCloud"), None, no_file)
            .unwrap_err()
            .to_string();
        assert!(e.contains(ENVIRONMENT_FILEPATH), "{e}");
        let e = select(Some("AzureStackCloud"), Some("/x.json"), |_| {
            Err(std::io::Error::other("No such file"))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("/x.json") && e.contains("No such file"), "{e}");
        let e = select(Some("AzureStackCloud"), Some("/x.json"), |_| {
            Ok(r#"{"activeDirectoryEndpoint": "https://aad/"}"#.into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("resourceManagerEndpoint") && e.contains("/x.json"),
            "{e}"
        );
        let e = from_environment_file("/x.json", "not json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("go-autorest") && e.contains("/x.json"), "{e}");
    }
}
