//! `cargo xtask sandbox up`: the whole tool's world on one machine — an AWS emulator with an
//! EKS cluster and its OIDC provider, a Kubernetes API server with aws-node pods, and the
//! simulated nodes behind them — running until interrupted.

use std::process::ExitCode;

use anyhow::Context;
use sandbox::environment::{Sandbox, SandboxOptions};
use sandbox::python_tools::{PythonTools, workspace_root};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::flags::SandboxUpFlags;

pub fn up(flags: SandboxUpFlags) -> anyhow::Result<ExitCode> {
    crate::terminal::runtime()?.block_on(run(flags))
}

async fn run(flags: SandboxUpFlags) -> anyhow::Result<ExitCode> {
    // Listen for the signals before anything is started or printed: a supervisor (or a
    // test) may send SIGTERM as soon as it reads the usage, and a signal that arrives
    // before the handler exists would kill the process without stopping the sandbox.
    let mut interrupts = Interrupts::listen()?;
    // An endpoint in the environment means the user brought their own emulator.
    let aws_endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|endpoint| !endpoint.is_empty());
    let tools = PythonTools::ensure(&workspace_root()).context("installing the AWS emulator")?;
    // A registry behind the emulator's ECR, for `image push`; only in front of our own
    // emulator, and only where Debian's docker-registry is installed.
    let registry = aws_endpoint.is_none() && sandbox::registry::available();
    if aws_endpoint.is_none() && !registry {
        tracing::warn!(
            "no OCI registry behind the emulated ECR: {} is not installed (apt-get install \
             docker-registry); everything but `image push` works",
            sandbox::registry::REGISTRY_BINARY
        );
    }
    let options = SandboxOptions {
        nodes: flags.nodes,
        cluster: flags.cluster,
        region: flags.region,
        dir: flags.dir,
        aws_endpoint,
        pod_identity_agent: flags.pod_identity_agent,
        registry,
        // Every node listens on its own address, so `--scrape-via direct` works too.
        node_listeners: sandbox::fleet::NodeListeners::PerNode,
    };
    let sandbox = Sandbox::start(&tools, options)
        .await
        .context("starting the sandbox")?;
    print_usage(&sandbox);
    interrupts.wait().await;
    tracing::info!("stopping the sandbox");
    sandbox.shutdown().await;
    Ok(crate::exit::code(crate::exit::SUCCESS))
}

fn print_usage(sandbox: &Sandbox) {
    let env = sandbox.env_path();
    let emulator = match sandbox.emulator() {
        Some(emulator) => format!("started here, pid {}", emulator.pid()),
        None => "from AWS_ENDPOINT_URL".to_owned(),
    };
    let registry = match sandbox.registry() {
        Some(registry) => format!("{} (behind ECR)", registry.endpoint()),
        None => "none".to_owned(),
    };
    println!(
        "The sandbox is up: EKS cluster {cluster} in {region}, account {account}, {nodes} aws-node pods.\n\
         \n  AWS endpoint     {aws} ({emulator}; EKS, IAM, STS, CloudWatch, ECR)\
         \n  OCI registry     {registry}\
         \n  Kubernetes API   {kube}\
         \n  OIDC issuer      {issuer}\
         \n  kubeconfig       {kubeconfig}\
         \n\nIn another shell:\
         \n  source {env}\
         \n  kubectl get pods,nodes -A\
         \n  cargo xtask render --region {region} --cluster {cluster} --account {account} --oidc-issuer {issuer}\
         \n\nPress Ctrl-C to stop everything.",
        cluster = sandbox.cluster(),
        region = sandbox.region(),
        account = sandbox.account(),
        nodes = sandbox.fleet().len(),
        aws = sandbox.aws_endpoint(),
        kube = sandbox.api().url(),
        issuer = sandbox.oidc_issuer(),
        kubeconfig = sandbox.kubeconfig_path().display(),
        env = env.display(),
    );
}

/// Ctrl-C from a terminal, or SIGTERM from a supervisor or a test.
struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

impl Interrupts {
    fn listen() -> anyhow::Result<Interrupts> {
        Ok(Interrupts {
            interrupt: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
