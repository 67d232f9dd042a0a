//! The whole sandbox as one value: an AWS endpoint with an EKS cluster and its IAM OIDC
//! provider, a fake Kubernetes API server holding the cluster's aws-node pods and nodes, and
//! the simulated fleet behind those pods. The cluster's endpoint, as DescribeCluster
//! reports it, is the fake API server's URL, i.e. the kubeconfig's server, as on a real
//! EKS cluster; optionally the `eks-pod-identity-agent` add-on is installed, for Pod
//! Identity. `cargo xtask sandbox up`, `cargo xtask demo` and
//! the end-to-end tests all start it the same way, so what a user tries on a laptop is what
//! the tests exercise.

use std::fs;
use std::path::PathBuf;

use aws_config::SdkConfig;
use aws_sdk_eks::error::DisplayErrorContext;

use crate::aws_emulator::{
    ACCESS_KEY_ID, AwsEmulator, EmulatorError, EmulatorOptions, SECRET_ACCESS_KEY, sdk_config_for,
    set_cluster_endpoint_at,
};
use crate::fleet::{Fleet, FleetError, FleetOptions, NodeListeners};
use crate::kube_api::{FakeApiServer, KubeApiError};
use crate::python_tools::PythonTools;
use crate::registry::{LocalRegistry, RegistryError};

/// The audience EKS's pod identity webhook uses; the sandbox's OIDC provider lists it.
const IRSA_AUDIENCE: &str = "sts.amazonaws.com";

/// The EKS add-on that Pod Identity needs on the cluster.
pub const POD_IDENTITY_AGENT_ADDON: &str = "eks-pod-identity-agent";

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Simulated nodes, each with an aws-node pod.
    pub nodes: usize,
    pub cluster: String,
    pub region: String,
    /// Where `kubeconfig` and `env` are written.
    pub dir: PathBuf,
    /// An AWS endpoint to use instead of starting an emulator (e.g. `AWS_ENDPOINT_URL`).
    pub aws_endpoint: Option<String>,
    /// Whether to install the `eks-pod-identity-agent` add-on at start, which is what
    /// makes `--identity auto` choose Pod Identity. Off by default, as on a new cluster.
    pub pod_identity_agent: bool,
    /// Whether to start a local OCI registry behind the emulator's ECR (needs the emulator
    /// and Debian's docker-registry). Off by default: most tests push no image.
    pub registry: bool,
    /// One listener per simulated node (the default: scrapers can reach the nodes directly),
    /// or one for the whole fleet, reachable only through the API server's pods proxy, for
    /// fleets larger than the open-file limit.
    pub node_listeners: NodeListeners,
}

impl SandboxOptions {
    pub fn new(dir: impl Into<PathBuf>) -> SandboxOptions {
        SandboxOptions {
            nodes: 3,
            cluster: "sandbox".to_owned(),
            region: "us-west-2".to_owned(),
            dir: dir.into(),
            aws_endpoint: None,
            pod_identity_agent: false,
            registry: false,
            node_listeners: NodeListeners::PerNode,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the AWS emulator failed")]
    Emulator(#[from] EmulatorError),
    #[error("{step} failed against the AWS endpoint {endpoint}: {message}")]
    Aws {
        step: &'static str,
        endpoint: String,
        message: String,
    },
    #[error("the fake Kubernetes API server failed")]
    KubeApi(#[from] KubeApiError),
    #[error("starting the simulated aws-node fleet failed")]
    Fleet(#[from] FleetError),
    #[error("starting the local OCI registry failed")]
    Registry(#[from] RegistryError),
    #[error(
        "a registry was asked for, but the sandbox uses the AWS endpoint {0} instead of its \
         emulator, whose ECR it cannot point at a local registry"
    )]
    RegistryWithoutEmulator(String),
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A running sandbox. Dropping it stops everything it started.
pub struct Sandbox {
    emulator: Option<AwsEmulator>,
    aws_endpoint: String,
    api: FakeApiServer,
    fleet: Fleet,
    registry: Option<LocalRegistry>,
    options: SandboxOptions,
    account: String,
    oidc_issuer: String,
    cluster_arn: String,
}

impl Sandbox {
    /// Starts every part. `tools` is needed only when no `aws_endpoint` is given.
    pub async fn start(
        tools: &PythonTools,
        options: SandboxOptions,
    ) -> Result<Sandbox, SandboxError> {
        let (emulator, aws_endpoint) = match options.aws_endpoint.clone() {
            Some(endpoint) => (None, endpoint),
            None => {
                let emulator = AwsEmulator::start(tools, EmulatorOptions::default()).await?;
                let endpoint = emulator.endpoint_url();
                (Some(emulator), endpoint)
            }
        };
        let config = sdk_config_for(&aws_endpoint, &options.region);
        let account = caller_account(&config, &aws_endpoint).await?;
        let (cluster_arn, oidc_issuer) =
            ensure_cluster(&config, &aws_endpoint, &options.cluster, &account).await?;
        ensure_oidc_provider(&config, &aws_endpoint, &oidc_issuer).await?;

        let api = FakeApiServer::start().await?;
        register_cluster_endpoint(
            emulator.as_ref(),
            &aws_endpoint,
            &options.cluster,
            &options.region,
            &api.url(),
        )
        .await?;
        if options.pod_identity_agent {
            install_addon(
                &config,
                &aws_endpoint,
                &options.cluster,
                POD_IDENTITY_AGENT_ADDON,
            )
            .await?;
        }
        let fleet = Fleet::start(FleetOptions {
            nodes: options.nodes,
            region: options.region.clone(),
            zones: ["a", "b", "c"]
                .iter()
                .map(|zone| format!("{}{zone}", options.region))
                .collect(),
            listeners: options.node_listeners,
            ..FleetOptions::default()
        })
        .await?;
        api.host_fleet(&fleet)?;
        let registry = match (options.registry, emulator.as_ref()) {
            (false, _) => None,
            (true, None) => return Err(SandboxError::RegistryWithoutEmulator(aws_endpoint)),
            (true, Some(emulator)) => {
                let registry = LocalRegistry::start(&options.dir).await?;
                emulator
                    .register_registry(Some(&registry.endpoint()))
                    .await?;
                Some(registry)
            }
        };
        let sandbox = Sandbox {
            emulator,
            aws_endpoint,
            api,
            fleet,
            registry,
            options,
            account,
            oidc_issuer,
            cluster_arn,
        };
        sandbox.write_files()?;
        Ok(sandbox)
    }

    fn write_files(&self) -> Result<(), SandboxError> {
        let dir = &self.options.dir;
        let write = |path: PathBuf, text: String| {
            fs::create_dir_all(dir)
                .and_then(|()| fs::write(&path, text))
                .map_err(|error| SandboxError::Write { path, error })
        };
        write(self.kubeconfig_path(), self.api.kubeconfig_yaml())?;
        let env: String = self
            .env_vars()
            .iter()
            .map(|(name, value)| format!("export {name}='{value}'\n"))
            .collect();
        write(self.env_path(), env)
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.options.dir.join("kubeconfig")
    }

    pub fn env_path(&self) -> PathBuf {
        self.options.dir.join("env")
    }

    /// What a process needs to use this sandbox through the default AWS and kubeconfig
    /// chains: our binaries, the AWS CLI, kubectl.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.aws_endpoint.clone()),
            ("AWS_REGION", self.options.region.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("KUBECONFIG", self.kubeconfig_path().display().to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    pub fn aws_endpoint(&self) -> &str {
        &self.aws_endpoint
    }

    /// The emulator this sandbox started, if it started one.
    pub fn emulator(&self) -> Option<&AwsEmulator> {
        self.emulator.as_ref()
    }

    pub fn api(&self) -> &FakeApiServer {
        &self.api
    }

    /// The local OCI registry behind ECR, when [`SandboxOptions::registry`] asked for one.
    pub fn registry(&self) -> Option<&LocalRegistry> {
        self.registry.as_ref()
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    pub fn cluster(&self) -> &str {
        &self.options.cluster
    }

    pub fn region(&self) -> &str {
        &self.options.region
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn cluster_arn(&self) -> &str {
        &self.cluster_arn
    }

    pub fn oidc_issuer(&self) -> &str {
        &self.oidc_issuer
    }

    /// An SDK configuration pointed at this sandbox's AWS endpoint.
    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.aws_endpoint, &self.options.region)
    }

    /// Installs the `eks-pod-identity-agent` add-on on the cluster (EKS CreateAddon, which
    /// the sandbox's emulator answers with an ACTIVE add-on at once). Installing it again
    /// is not an error.
    pub async fn install_pod_identity_agent(&self) -> Result<(), SandboxError> {
        install_addon(
            &self.sdk_config(),
            &self.aws_endpoint,
            &self.options.cluster,
            POD_IDENTITY_AGENT_ADDON,
        )
        .await
    }

    /// Replaces node `index`'s aws-node pod, in the fleet and in the API server alike, as
    /// the DaemonSet does when a pod is deleted or upgraded.
    pub fn replace_node(&self, index: usize) -> Result<(), SandboxError> {
        let old = self.fleet.node(index).pod_name();
        self.api
            .remove("v1", "Pod", Some(crate::fleet::AWS_NODE_NAMESPACE), &old);
        self.fleet.replace_node(index);
        self.api.insert(&self.fleet.pod_object(index))?;
        Ok(())
    }

    /// Stops every part, the emulator process included.
    pub async fn shutdown(self) {
        self.api.shutdown().await;
        self.fleet.shutdown().await;
        if let Some(emulator) = self.emulator
            && let Err(error) = emulator.stop()
        {
            tracing::warn!("stopping the AWS emulator: {error}");
        }
    }
}

async fn caller_account(config: &SdkConfig, endpoint: &str) -> Result<String, SandboxError> {
    let identity = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|error| SandboxError::Aws {
            step: "sts:GetCallerIdentity",
            endpoint: endpoint.to_owned(),
            message: DisplayErrorContext(&error).to_string(),
        })?;
    identity.account.ok_or_else(|| SandboxError::Aws {
        step: "sts:GetCallerIdentity",
        endpoint: endpoint.to_owned(),
        message: "the reply has no account".to_owned(),
    })
}

/// Creates the EKS cluster unless it exists, and returns its ARN and OIDC issuer.
async fn ensure_cluster(
    config: &SdkConfig,
    endpoint: &str,
    cluster: &str,
    account: &str,
) -> Result<(String, String), SandboxError> {
    let eks = aws_sdk_eks::Client::new(config);
    let aws_error = |step: &'static str, message: String| SandboxError::Aws {
        step,
        endpoint: endpoint.to_owned(),
        message,
    };
    let created = eks
        .create_cluster()
        .name(cluster)
        .role_arn(format!(
            "arn:aws:iam::{account}:role/sandbox-eks-cluster-role"
        ))
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .subnet_ids("subnet-0sandbox0a")
                .subnet_ids("subnet-0sandbox0b")
                .build(),
        )
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(cluster, "created the EKS cluster"),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service| service.is_resource_in_use_exception()) =>
        {
            tracing::info!(cluster, "the EKS cluster already exists; using it as it is");
        }
        Err(error) => {
            return Err(aws_error(
                "eks:CreateCluster",
                DisplayErrorContext(&error).to_string(),
            ));
        }
    }
    let described = eks
        .describe_cluster()
        .name(cluster)
        .send()
        .await
        .map_err(|error| {
            aws_error(
                "eks:DescribeCluster",
                DisplayErrorContext(&error).to_string(),
            )
        })?;
    let cluster = described
        .cluster
        .ok_or_else(|| aws_error("eks:DescribeCluster", "the reply has no cluster".to_owned()))?;
    let issuer = cluster
        .identity
        .and_then(|identity| identity.oidc)
        .and_then(|oidc| oidc.issuer)
        .ok_or_else(|| {
            aws_error(
                "eks:DescribeCluster",
                "the cluster has no OIDC issuer".to_owned(),
            )
        })?;
    let arn = cluster
        .arn
        .ok_or_else(|| aws_error("eks:DescribeCluster", "the cluster has no ARN".to_owned()))?;
    Ok((arn, issuer))
}

/// Makes DescribeCluster report the fake API server's URL as the cluster's endpoint, so
/// that the kubeconfig's server and the EKS endpoint agree, as on a real cluster.
///
/// An endpoint the sandbox did not start may be an emulator without our control API (a
/// plain moto, or one not on loopback); then the sandbox still works, only a check that
/// compares the two endpoints would fail, so this is a warning rather than an error.
async fn register_cluster_endpoint(
    emulator: Option<&AwsEmulator>,
    aws_endpoint: &str,
    cluster: &str,
    region: &str,
    api_url: &str,
) -> Result<(), SandboxError> {
    let registered = set_cluster_endpoint_at(aws_endpoint, cluster, Some(region), api_url).await;
    match registered {
        Ok(()) => Ok(()),
        Err(error @ (EmulatorError::NotLoopback { .. } | EmulatorError::ControlRefused { .. }))
            if emulator.is_none() =>
        {
            tracing::warn!(
                "DescribeCluster will not report the sandbox's Kubernetes endpoint: {error}"
            );
            Ok(())
        }
        Err(error) => Err(SandboxError::Emulator(error)),
    }
}

/// Installs an EKS add-on unless it is installed already.
async fn install_addon(
    config: &SdkConfig,
    endpoint: &str,
    cluster: &str,
    addon: &str,
) -> Result<(), SandboxError> {
    let created = aws_sdk_eks::Client::new(config)
        .create_addon()
        .cluster_name(cluster)
        .addon_name(addon)
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(cluster, addon, "installed the EKS add-on"),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service| service.is_resource_in_use_exception()) =>
        {
            tracing::info!(cluster, addon, "the EKS add-on is installed already");
        }
        Err(error) => {
            return Err(SandboxError::Aws {
                step: "eks:CreateAddon",
                endpoint: endpoint.to_owned(),
                message: DisplayErrorContext(&error).to_string(),
            });
        }
    }
    Ok(())
}

/// Registers the cluster's OIDC issuer as an IAM identity provider unless it exists.
async fn ensure_oidc_provider(
    config: &SdkConfig,
    endpoint: &str,
    issuer: &str,
) -> Result<(), SandboxError> {
    let created = aws_sdk_iam::Client::new(config)
        .create_open_id_connect_provider()
        .url(issuer)
        .client_id_list(IRSA_AUDIENCE)
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(issuer, "created the IAM OIDC provider"),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|service| service.is_entity_already_exists_exception()) =>
        {
            tracing::info!(
                issuer,
                "the IAM OIDC provider already exists; using it as it is"
            );
        }
        Err(error) => {
            return Err(SandboxError::Aws {
                step: "iam:CreateOpenIDConnectProvider",
                endpoint: endpoint.to_owned(),
                message: DisplayErrorContext(&error).to_string(),
            });
        }
    }
    Ok(())
}
