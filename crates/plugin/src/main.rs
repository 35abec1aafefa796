//! `kubectl-pod_identity`, run as `kubectl pod-identity ...` once on the PATH.
//!
//! Exit codes: 0 every link holds; 1 at least one is broken (✘); 2 bad usage or the cluster
//! (or the kubeconfig) could not be read, or the API server refused (403).

use std::{io::Write, process::ExitCode, sync::Arc, time::Duration};

use arm::{
    ArmClient, RetryPolicy, Unobserved,
    cloud::{CloudConfig, EndpointOverrides},
};
use clap::{CommandFactory, Parser};
use kube::Client;
use matching::Policy;
use plugin::{
    Error,
    check::CloudConfigState,
    cli::{Args, Command},
    completion::{self, COMPLETE},
    gather::{self, Options},
    output,
    report::{EXIT_ERROR, EXIT_OK, Report},
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // kubectl's completion protocol passes the words being typed, flags and all, which clap must
    // not read as this run's own.
    let words: Vec<String> = std::env::args().skip(1).collect();
    if let Some((first, rest)) = words.split_first()
        && first == COMPLETE
    {
        print!("{}", completion::complete(Args::command(), rest).protocol());
        return ExitCode::from(EXIT_OK as u8);
    }
    let args = Args::parse();
    if let Command::Completion { shell } = args.command {
        let mut stdout = std::io::stdout().lock();
        completion::script(shell, Args::command(), &mut stdout);
        let _ = stdout.flush();
        return ExitCode::from(EXIT_OK as u8);
    }
    match run(&args).await {
        Ok(report) => {
            print!("{}", output::render(&report, args.output));
            ExitCode::from(report.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("kubectl pod-identity: {e}");
            ExitCode::from(EXIT_ERROR as u8)
        }
    }
}

async fn run(args: &Args) -> Result<Report, Error> {
    let config = args.kube.config().await?;
    let namespace = args
        .kube
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let opts = options(args)?;
    match &args.command {
        Command::Explain { pod } => gather::explain(&client, &opts, &namespace, pod).await,
        Command::Check => gather::check(&client, &opts).await,
        // Answered in `main`, before any kubeconfig is read: a completion script needs no cluster.
        Command::Completion { .. } => Err(Error::Usage("completion asks no cluster".into())),
    }
}

fn options(args: &Args) -> Result<Options, Error> {
    let (arm, cloud_config) = match &args.cloud_config {
        None => (None, CloudConfigState::NotGiven),
        Some(path) => match arm_client(args, path) {
            Ok((arm, summary)) => (Some(arm), CloudConfigState::Readable(summary)),
            Err(e) => (None, CloudConfigState::Unreadable(e.to_string())),
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
fn arm_client(args: &Args, path: &std::path::Path) -> Result<(ArmClient, String), Error> {
    let env = |k: &str| std::env::var(k).ok();
    let cloud = CloudConfig::from_file(path).map_err(Error::CloudConfig)?;
    let overrides = EndpointOverrides {
        arm: args.arm_endpoint.clone(),
        aad: args.aad_endpoint.clone(),
    };
    let connection = cloud
        .connection(&overrides, "http://169.254.169.254", env)
        .map_err(Error::CloudConfig)?;
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(20));
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).map_err(|source| Error::ReadCaFile {
            path: ca.clone(),
            source,
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| Error::CaFile {
            path: ca.clone(),
            source,
        })?;
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
    let http = http.build().map_err(Error::Http)?;
    // The plugin counts no ARM calls: it exports no metrics.
    Ok((
        ArmClient::connect(http, connection, retry, Arc::new(Unobserved)),
        summary,
    ))
}
