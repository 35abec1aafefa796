//! `kubectl-pod_identity`, run as `kubectl pod-identity ...` once on the PATH.
//!
//! Exit codes: 0 every link holds; 1 at least one is broken (✘); 2 bad usage or the cluster
//! (or the kubeconfig) could not be read.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use matching::Policy;
use mic::{
    arm::{ArmClient, RetryPolicy},
    cloud::{CloudConfig, EndpointOverrides},
};
use plugin::{
    Error,
    check::CloudConfigState,
    gather::{self, DEFAULT_LEASE, Options},
    report::{EXIT_ERROR, Report},
};

/// Explains why a pod does or does not get its Azure token, and checks pod identity's health.
#[derive(Parser, Debug)]
#[command(name = "kubectl pod-identity", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The pod's namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    output: Output,
    /// The cloud config (azure.json) whose credentials read the VM or scale set from ARM; without
    /// it, whether the identity is on the VM is not checked.
    #[arg(long, global = true, env = "POD_IDENTITY_CLOUD_CONFIG")]
    cloud_config: Option<PathBuf>,
    /// ARM's URL, overriding the cloud's (as MIC's flag).
    #[arg(long, global = true)]
    arm_endpoint: Option<String>,
    /// Entra's URL, overriding the cloud's (as MIC's flag).
    #[arg(long, global = true)]
    aad_endpoint: Option<String>,
    /// A PEM CA bundle to trust for ARM and Entra, besides the system's.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// Label selector of NMI's pods.
    #[arg(long, global = true, default_value = "app.kubernetes.io/component=nmi")]
    nmi_selector: String,
    /// How far back NMI's log is searched for refusals, in seconds.
    #[arg(long, global = true, default_value_t = 3600)]
    nmi_log_since: i64,
    /// MIC's leader-election Lease: NAMESPACE/NAME, or a NAME looked for in every namespace.
    #[arg(long, global = true, default_value = DEFAULT_LEASE)]
    mic_lease: String,
    /// Match pods with bindings of every namespace, as MIC and NMI do with --allow-cross-namespace.
    #[arg(long, global = true)]
    allow_cross_namespace: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Walks the chain from a pod to its token: pod, exceptions, bindings, identity,
    /// AzureAssignedIdentity and MIC's Events, the VM or scale set (ARM), NMI on the node.
    Explain {
        /// The pod's name.
        pod: String,
    },
    /// The cluster's health: CRDs, MIC's leader, NMI on every node, the cloud config, identities,
    /// bindings, stuck assignments, Azure's limits.
    Check,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(report) => {
            match args.output {
                Output::Text => print!("{}", report.text()),
                Output::Json => println!("{}", report.json()),
            }
            ExitCode::from(report.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("kubectl pod-identity: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

async fn run(args: &Args) -> Result<Report, Error> {
    let config = kube_config(args).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let opts = options(args)?;
    match &args.command {
        Command::Explain { pod } => gather::explain(&client, &opts, &namespace, pod).await,
        Command::Check => gather::check(&client, &opts).await,
    }
}

/// As kubectl: `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`, else in-cluster;
/// `--context` picks the context.
async fn kube_config(args: &Args) -> Result<Config, Error> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let bad = |e: kube::config::KubeconfigError| Error::Kubeconfig(e.to_string());
    match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(bad)?;
            Config::from_custom_kubeconfig(kc, &options).await.map_err(bad)
        }
        None if args.context.is_some() => Config::from_kubeconfig(&options).await.map_err(bad),
        None => Config::infer()
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string())),
    }
}

fn options(args: &Args) -> Result<Options, Error> {
    let (arm, cloud_config) = match &args.cloud_config {
        None => (None, CloudConfigState::NotGiven),
        Some(path) => match arm_client(args, path) {
            Ok((arm, summary)) => (Some(arm), CloudConfigState::Readable(summary)),
            Err(e) => (None, CloudConfigState::Unreadable(e)),
        },
    };
    if args.nmi_log_since <= 0 {
        return Err(Error::Usage("--nmi-log-since must be positive".into()));
    }
    Ok(Options {
        policy: Policy {
            namespaced: !args.allow_cross_namespace,
            exception_namespaces: None,
        },
        nmi_selector: args.nmi_selector.clone(),
        nmi_log_seconds: args.nmi_log_since,
        lease: args.mic_lease.clone(),
        arm,
        cloud_config,
    })
}

/// An ARM client from the cloud config, as MIC builds its own, and a summary of what it selects.
fn arm_client(args: &Args, path: &std::path::Path) -> Result<(ArmClient, String), String> {
    let env = |k: &str| std::env::var(k).ok();
    let cloud = CloudConfig::from_file(path).map_err(|e| e.to_string())?;
    let overrides = EndpointOverrides {
        arm: args.arm_endpoint.clone(),
        aad: args.aad_endpoint.clone(),
    };
    let connection = cloud
        .connection(&overrides, "http://169.254.169.254", env)
        .map_err(|e| e.to_string())?;
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(20));
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("reading --ca-file {}: {e}", ca.display()))?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("--ca-file {}: {e}", ca.display()))?;
        http = http.add_root_certificate(cert);
    }
    let summary = format!(
        "{}: cloud {}, subscription {}, ARM {}, as {}",
        path.display(),
        cloud.cloud.as_deref().unwrap_or("AzurePublicCloud"),
        cloud.subscription_id.as_deref().unwrap_or("(none)"),
        connection.endpoint,
        if cloud.use_managed_identity_extension {
            "the managed identity".to_owned()
        } else {
            format!("client {}", cloud.aad_client_id.as_deref().unwrap_or("(none)"))
        }
    );
    // A diagnosis must not wait out MIC's production retries (six attempts, 30 s apart).
    let retry = RetryPolicy {
        attempts: 2,
        base: Duration::from_millis(200),
        max: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    let http = http.build().map_err(|e| e.to_string())?;
    Ok((
        ArmClient::connect(http, connection, retry, Default::default()),
        summary,
    ))
}
