//! Every command-line flag of `cargo xtask`, in one place.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::plan::{DeployOptions, Scope};
use crate::settings::{ConfigFile, DeployInput, SettingsError, TargetInput};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Render, deploy and operate the Amazon VPC CNI metrics helper on EKS",
    after_help = crate::exit::HELP,
    disable_version_flag = true
)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Command,
    /// More logging on stderr (-v debug, -vv trace); RUST_LOG overrides it
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

// Parsed once per process, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write iam-policy.json, trust-policy.json, manifests.yaml, dashboard.json and alarms.json for one cluster, offline
    #[command(after_help = RENDER_EXAMPLES)]
    Render(RenderFlags),
    /// Show what deploy would change (IAM, Kubernetes, alarms, dashboard), reading live state only
    Plan(PlanFlags),
    /// Plan, then apply: converge IAM, the Kubernetes objects, the CloudWatch alarms and the dashboard
    Deploy(DeployFlags),
    /// Remove what this tool created (tagged or labelled as ours), plan first
    Destroy(DestroyFlags),
    /// Check everything a deploy needs (credentials, cluster, identity provider or agent, kube context, RBAC)
    Preflight(ClusterFlags),
    /// Upgrade the running helper one minor version at a time, waiting for each rollout
    Upgrade(UpgradeFlags),
    /// Live and pinned version, next upgrade step, identity mode, drift and last rollout
    Status(StatusFlags),
    /// The whole flow on this machine, no AWS account: sandbox, deploy, publisher rounds, CloudWatch read-back
    Demo(DemoFlags),
    /// Install the tools the tests need (a project-local Python virtualenv) and run every test
    Test(TestFlags),
    /// The local sandbox: an AWS emulator, a Kubernetes API server and simulated aws-node pods
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// The publisher's container image, built without a container engine
    #[command(subcommand)]
    Image(ImageCommand),
    /// The benchmarks (rounds at scale, parser, CloudWatch calls, soak, deploy, binary size), with ratios side by side
    Bench(BenchFlags),
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Start the sandbox, write DIR/kubeconfig and DIR/env, and run until interrupted
    Up(SandboxUpFlags),
}

#[derive(Debug, clap::Args)]
pub struct SandboxUpFlags {
    /// Number of simulated nodes, each with an aws-node pod serving ipamd metrics
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Name of the EKS cluster created in the emulator
    #[arg(long, default_value = "sandbox")]
    pub cluster: String,
    /// Region of the emulated cluster
    #[arg(long, default_value = "us-west-2")]
    pub region: String,
    /// Where to write kubeconfig and env
    #[arg(long, default_value = ".sandbox")]
    pub dir: std::path::PathBuf,
    /// Install the eks-pod-identity-agent add-on on the emulated cluster (for --identity pod-identity or auto)
    #[arg(long)]
    pub pod_identity_agent: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the publisher's image as a reproducible OCI image layout, no Docker needed: the release binary, its loader and libraries from Debian packages, CA certificates
    #[command(after_help = IMAGE_BUILD_EXAMPLES)]
    Build(ImageBuildFlags),
    /// Push the built image to the account's ECR registry: the repository converged (scan on push, immutable tags, encryption, lifecycle policy, our tag), only missing blobs uploaded, tagged with its version and revision
    #[command(after_help = IMAGE_PUSH_EXAMPLES)]
    Push(ImagePushFlags),
}

const IMAGE_PUSH_EXAMPLES: &str = "Examples:\n  cargo xtask image push --region eu-west-1\n  cargo xtask image push --region eu-west-1 --repository platform/cni-metrics-publisher --encryption kms --kms-key alias/ecr\n  cargo xtask deploy --region eu-west-1 --cluster prod --publisher ours\n\nPrints <registry>/<repository>@sha256:...; a second push of the same image uploads nothing.";

/// How `image push` encrypts a repository it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncryptionFlag {
    Aes256,
    Kms,
}

#[derive(Debug, clap::Args)]
pub struct ImagePushFlags {
    /// AWS region of the registry [default: the AWS CLI's region chain]
    #[arg(long)]
    pub region: Option<String>,
    /// ECR repository name
    #[arg(long, default_value = crate::settings::DEFAULT_PUBLISHER_REPOSITORY, value_name = "NAME")]
    pub repository: String,
    /// The OCI image layout `image build` wrote [default: <target dir>/image/oci]
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// Another tag besides the image's version and git revision (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Encryption at rest of a repository this creates (ECR cannot change it later)
    #[arg(long, value_enum, default_value_t = EncryptionFlag::Aes256)]
    pub encryption: EncryptionFlag,
    /// With --encryption kms: the KMS key (ARN, ID or alias) [default: the AWS managed key]
    #[arg(long, value_name = "KEY")]
    pub kms_key: Option<String>,
    /// Images the lifecycle policy keeps; older ones expire
    #[arg(long, default_value_t = crate::registry::ecr::DEFAULT_KEEP_IMAGES, value_name = "N")]
    pub keep_images: u32,
    /// Take over a same-named repository that lacks our managed-by tag
    #[arg(long)]
    pub adopt: bool,
    /// human: the pushed reference and what changed; json: one JSON object
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

const IMAGE_BUILD_EXAMPLES: &str = "Examples:\n  cargo xtask image build\n  cargo xtask image build --out image/oci --archive image/cni-metrics-publisher.tar --output json\n  skopeo inspect oci:target/image/oci\n\nThe same commit and binary give the same digests; SOURCE_DATE_EPOCH overrides the commit time.";

#[derive(Debug, clap::Args)]
pub struct ImageBuildFlags {
    /// Platforms to build, repeatable or comma-separated; only linux/amd64 can be built on this machine (linux/arm64 needs the aarch64-unknown-linux-gnu target)
    #[arg(
        long,
        value_name = "OS/ARCH",
        value_delimiter = ',',
        default_value = "linux/amd64"
    )]
    pub platform: Vec<crate::image::Platform>,
    /// Build around this binary instead of running `cargo build --release -p cni-metrics-publisher --locked`
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// The OCI image layout directory to write (replaced whole when it holds a layout) [default: <target dir>/image/oci]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write the layout as an oci-archive tarball (`podman pull oci-archive:FILE`)
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// human: digests and sizes; json: digests, sizes, the layer's files and the runtime's packages as one JSON object
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

const RENDER_EXAMPLES: &str = "Example:\n  cargo xtask render --region eu-west-1 --cluster prod --account 111122223333 \\\n      --oidc-issuer https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE --out rendered/prod";

#[derive(Debug, clap::Args)]
pub struct RenderFlags {
    #[command(flatten)]
    pub target: TargetInput,
    /// YAML file with the same keys as the flags (region, cluster, oidc-issuer, ...); flags win
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory to write the five files into (created when missing) [default: rendered]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// human: write the files and list them; json: print the five artifacts as one JSON object on stdout and write nothing
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// What `plan`, `deploy` and `destroy` share.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterFlags {
    #[command(flatten)]
    pub target: TargetInput,
    #[command(flatten)]
    pub deploy: DeployInput,
    /// YAML file with the same keys as the flags (region, cluster, policy-name, tags, context, profile, ...); flags win. plan, deploy, status and upgrade take several, or a directory of *.yaml/*.yml: a fleet, one config per cluster
    #[arg(long, value_name = "FILE")]
    pub config: Vec<std::path::PathBuf>,
    /// Only these scopes, comma-separated: iam,kubernetes,alarms,dashboard [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scope>,
    /// Take over same-named resources this tool did not create (IAM role and policy, alarms, dashboard, Kubernetes objects, Pod Identity association): plan shows each as an adoption; deploy marks them ours and converges them
    #[arg(long, alias = "force-conflicts")]
    pub adopt: bool,
    /// How long to wait for the Deployment's rollout, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub rollout_timeout: u64,
    /// Allow a version older than the one running in the cluster
    #[arg(long)]
    pub allow_downgrade: bool,
    /// human: a readable plan; json: the plan as one JSON object
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// The inputs of a cluster command: the flags over the config file.
pub struct ClusterInputs {
    pub target: TargetInput,
    pub deploy: DeployInput,
    pub options: DeployOptions,
    pub output: OutputFormat,
}

impl ClusterFlags {
    /// Reads `--config` and lays the flags over it. One cluster only: several configs, or a
    /// directory, are a fleet (see [`crate::fleet`]).
    pub fn inputs(self) -> Result<ClusterInputs, SettingsError> {
        let file = match self.config.as_slice() {
            [] => ConfigFile::default(),
            [path] if !path.is_dir() => ConfigFile::load(path)?,
            [..] => return Err(SettingsError::OneClusterOnly),
        };
        Ok(self.over(file))
    }

    /// The flags laid over one config file.
    pub fn over(self, file: ConfigFile) -> ClusterInputs {
        let scopes = if self.only.is_empty() {
            Scope::ALL.to_vec()
        } else {
            self.only.clone()
        };
        ClusterInputs {
            target: self.target.or(file.target()),
            deploy: self.deploy.or(file.deploy()),
            options: DeployOptions {
                scopes,
                adopt: self.adopt,
                rollout_timeout: std::time::Duration::from_secs(self.rollout_timeout),
                allow_downgrade: self.allow_downgrade,
            },
            output: self.output,
        }
    }
}

/// How a fleet (several `--config`) is worked on.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct FleetFlags {
    /// With several --config (a fleet): how many clusters to work on at once
    #[arg(long, value_name = "N", default_value_t = crate::fleet::DEFAULT_PARALLEL, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit codes with --detailed-exitcode: 0 no changes, 1 error, 2 changes.")]
pub struct PlanFlags {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub fleet: FleetFlags,
    /// Exit 2 when the plan has changes (a drift check for CI); for a fleet: 1 if any cluster failed, else 2 if any has changes
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, clap::Args)]
pub struct DeployFlags {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub fleet: FleetFlags,
    /// Apply without asking (required when stdin is not a terminal)
    #[arg(long, alias = "approve")]
    pub yes: bool,
    /// Only show the plan, as `plan` does
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct DestroyFlags {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// Delete without asking (required when stdin is not a terminal)
    #[arg(long, alias = "approve")]
    pub yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct UpgradeFlags {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub fleet: FleetFlags,
    /// The release to end on, vX.Y.Z
    #[arg(long, value_name = "vX.Y.Z")]
    pub to: String,
    /// Upgrade without asking (required when stdin is not a terminal)
    #[arg(long, alias = "approve")]
    pub yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusFlags {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub fleet: FleetFlags,
    /// Also save each metric widget of the dashboard as a PNG in DIR (CloudWatch's GetMetricWidgetImage)
    #[arg(long, value_name = "DIR")]
    pub widgets: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DemoFlags {
    /// Simulated nodes, each with an aws-node pod
    #[arg(long, default_value_t = 20)]
    pub nodes: usize,
    /// Publisher rounds to run (2 s apart)
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Keep the sandbox files and the dashboard body here [default: a temporary directory]
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct TestFlags {
    /// Extra arguments for `cargo test` (after --), e.g. a test name filter
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct BenchFlags {
    /// Smaller runs of every scenario (about 3 minutes after the build)
    #[arg(long)]
    pub quick: bool,
    /// Also measure a clean debug build of the workspace in a scratch target directory (minutes)
    #[arg(long)]
    pub clean_build: bool,
    /// Use the release binaries already built instead of running cargo build first
    #[arg(long)]
    pub no_build: bool,
    /// Only these scenarios, comma-separated [default: all]; deploy and fleet need no release build
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<BenchScenario>,
    /// human: a table; json: one JSON object on stdout
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// The scenarios of `cargo xtask bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchScenario {
    BinarySize,
    CleanBuild,
    Parser,
    Scale,
    /// Rounds at 20,000 to 100,000 nodes through the pods proxy
    Large,
    Cloudwatch,
    Soak,
    Deploy,
    /// One cluster's plan against a ten-cluster fleet's
    Fleet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}
