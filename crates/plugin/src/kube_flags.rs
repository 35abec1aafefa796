//! The connection flags kubectl users type without thinking: `--kubeconfig`, `--context`,
//! `--cluster`, `--user`, `-n`, `--as`, `--as-group`, `--as-uid`, `--request-timeout`.
//! kubectl does not hand its own global flags to a plugin (it runs `kubectl-pod_identity` with
//! the words after `pod-identity` and its environment), so the plugin takes them itself, with
//! kubectl's names and meanings, and maps them onto kube-rs's [`Config`].

mod timeout;

use std::{path::PathBuf, time::Duration};

use kube::{
    Config,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};

pub use self::timeout::{TIMEOUT_HINT, parse_request_timeout};
use crate::Error;

/// kubectl's connection and impersonation flags, global to every subcommand.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeFlags {
    /// The kubeconfig file (default: $KUBECONFIG, its files merged as kubectl merges them, else
    /// ~/.kube/config, else the in-cluster service account).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use, instead of the context's.
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use, instead of the context's.
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    /// The pod's namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Act as this user (a user name or system:serviceaccount:NAMESPACE:NAME).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Act as a member of this group; repeat it for several (needs --as).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_groups: Vec<String>,
    /// Act with this UID (needs --as).
    #[arg(long = "as-uid", global = true, value_name = "UID")]
    pub as_uid: Option<String>,
    /// How long to wait for each API request: 0 (no timeout), seconds, or a duration (30s, 1m).
    #[arg(long, global = true, default_value = "0", value_parser = RequestTimeout::parse)]
    pub request_timeout: RequestTimeout,
}

/// `--request-timeout`, parsed: `None` waits as long as kube-rs's defaults allow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTimeout(pub Option<Duration>);

impl RequestTimeout {
    /// clap's value parser: clap shows the error's message after its own "invalid value".
    fn parse(value: &str) -> Result<Self, Error> {
        parse_request_timeout(value).map(Self)
    }
}

impl KubeFlags {
    /// Which context, cluster and user of the kubeconfig to load.
    pub fn kubeconfig_options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }

    /// As kubectl: `--kubeconfig` alone, else `$KUBECONFIG` (merged), else `~/.kube/config`,
    /// else in-cluster; then the impersonation and timeout flags over what it says.
    pub async fn config(&self) -> Result<Config, Error> {
        let options = self.kubeconfig_options();
        let bad = |e: KubeconfigError| Error::Kubeconfig(e.to_string());
        let picks_from_kubeconfig =
            options.context.is_some() || options.cluster.is_some() || options.user.is_some();
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(bad)?;
                Config::from_custom_kubeconfig(kc, &options).await.map_err(bad)?
            }
            // Naming a context, cluster or user only makes sense of a kubeconfig: no in-cluster
            // fallback to hide a typo.
            None if picks_from_kubeconfig => Config::from_kubeconfig(&options).await.map_err(bad)?,
            None => Config::infer()
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?,
        };
        self.apply(&mut config)?;
        Ok(config)
    }

    /// The flags over a loaded config: a flag wins over the kubeconfig user's `as`, `as-groups`
    /// and `as-uid`, as in kubectl.
    pub fn apply(&self, config: &mut Config) -> Result<(), Error> {
        let auth = &mut config.auth_info;
        if let Some(user) = self.as_user.as_deref().filter(|u| !u.is_empty()) {
            auth.impersonate = Some(user.to_owned());
        }
        let groups: Vec<String> = self.as_groups.iter().filter(|g| !g.is_empty()).cloned().collect();
        if !groups.is_empty() {
            auth.impersonate_groups = Some(groups);
        }
        if let Some(uid) = self.as_uid.as_deref().filter(|u| !u.is_empty()) {
            auth.impersonate_uid = Some(uid.to_owned());
        }
        // The API server would refuse it with a less helpful message; client-go refuses it too.
        let groups_or_uid =
            auth.impersonate_groups.as_ref().is_some_and(|g| !g.is_empty()) || auth.impersonate_uid.is_some();
        if auth.impersonate.is_none() && groups_or_uid {
            return Err(Error::Usage(
                "--as-group and --as-uid need --as (or `as:` in the kubeconfig user): the API server \
                 impersonates groups and a UID only together with a user"
                    .into(),
            ));
        }
        if let RequestTimeout(Some(limit)) = self.request_timeout {
            // kubectl's timeout bounds the whole request; kube-rs bounds connecting, sending and
            // waiting for the answer separately, so each gets the limit (connecting no more than
            // kube-rs's own default).
            config.connect_timeout = Some(config.connect_timeout.map_or(limit, |c| c.min(limit)));
            config.write_timeout = Some(limit);
            config.read_timeout = Some(limit);
            // Else the time a pooled connection sat idle counts against the next answer.
            config.reset_reader_on_write = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        kube: KubeFlags,
    }

    fn flags(args: &[&str]) -> KubeFlags {
        Cli::try_parse_from(std::iter::once("p").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .kube
    }

    fn config() -> Config {
        Config::new("https://127.0.0.1:6443".parse().unwrap())
    }

    #[test]
    fn kubectl_s_flags_parse_under_kubectl_s_names() {
        let f = flags(&[
            "--kubeconfig=/tmp/kc",
            "--context",
            "ctx",
            "--cluster",
            "c",
            "--user",
            "u",
            "-n",
            "shop",
            "--as",
            "dev",
            "--as-group",
            "g1",
            "--as-group=g2",
            "--as-uid",
            "1234",
            "--request-timeout",
            "1m",
        ]);
        assert_eq!(f.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert_eq!(f.namespace.as_deref(), Some("shop"));
        assert_eq!(f.as_user.as_deref(), Some("dev"));
        assert_eq!(f.as_groups, ["g1", "g2"]);
        assert_eq!(f.as_uid.as_deref(), Some("1234"));
        assert_eq!(f.request_timeout, RequestTimeout(Some(Duration::from_secs(60))));
        let o = f.kubeconfig_options();
        assert_eq!(
            (o.context.as_deref(), o.cluster.as_deref(), o.user.as_deref()),
            (Some("ctx"), Some("c"), Some("u"))
        );
    }

    #[test]
    fn a_bad_timeout_is_a_usage_error_with_kubectl_s_hint() {
        let e = Cli::try_parse_from(["p", "--request-timeout", "soon"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(TIMEOUT_HINT), "{e}");
    }

    #[test]
    fn without_flags_the_kubeconfig_s_choices_stand() {
        let mut c = config();
        c.auth_info.impersonate = Some("from-kubeconfig".into());
        let before = (c.connect_timeout, c.read_timeout, c.write_timeout);
        flags(&[]).apply(&mut c).unwrap();
        assert_eq!(c.auth_info.impersonate.as_deref(), Some("from-kubeconfig"));
        assert_eq!((c.connect_timeout, c.read_timeout, c.write_timeout), before);
        assert!(!c.reset_reader_on_write);
    }

    #[test]
    fn impersonation_flags_set_kube_s_impersonation_headers() {
        let mut c = config();
        c.auth_info.impersonate_groups = Some(vec!["kubeconfig-group".into()]);
        flags(&[
            "--as",
            "dev",
            "--as-group",
            "a",
            "--as-group",
            "b",
            "--as-uid",
            "42",
        ])
        .apply(&mut c)
        .unwrap();
        assert_eq!(c.auth_info.impersonate.as_deref(), Some("dev"));
        assert_eq!(c.auth_info.impersonate_groups, Some(vec!["a".into(), "b".into()]));
        assert_eq!(c.auth_info.impersonate_uid.as_deref(), Some("42"));
    }

    #[test]
    fn groups_or_a_uid_without_a_user_are_refused() {
        for args in [&["--as-group", "a"][..], &["--as-uid", "42"]] {
            let e = flags(args).apply(&mut config()).unwrap_err();
            assert!(matches!(&e, Error::Usage(m) if m.contains("need --as")), "{e}");
        }
        // The kubeconfig user's `as:` is a user to go with them.
        let mut c = config();
        c.auth_info.impersonate = Some("dev".into());
        flags(&["--as-group", "a"]).apply(&mut c).unwrap();
    }

    #[test]
    fn a_request_timeout_bounds_each_phase_of_a_request() {
        let mut c = config();
        flags(&["--request-timeout", "5s"]).apply(&mut c).unwrap();
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            (c.connect_timeout, c.write_timeout, c.read_timeout),
            (five, five, five)
        );
        assert!(c.reset_reader_on_write);
        // A long one leaves connecting to kube-rs's shorter default.
        let mut c = config();
        let default_connect = c.connect_timeout;
        flags(&["--request-timeout", "1h"]).apply(&mut c).unwrap();
        assert_eq!(c.connect_timeout, default_connect);
        assert_eq!(c.read_timeout, Some(Duration::from_secs(3600)));
    }
}
