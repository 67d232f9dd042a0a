//! AWS clients from the default chains: credentials and region as the AWS CLI finds them,
//! and `AWS_ENDPOINT_URL` honoured, which is how the sandbox points the very same code at
//! its emulator. The HTTP client is explicit because the SDK crates are built without
//! their default TLS stack (see the workspace manifest).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{Region, SdkConfig};
use cni_metrics_publisher::edge::aws_config_loader as loader;

/// Bounds on one AWS call: the SDK's default has only a connect timeout, so a stalled
/// answer would hang plan or deploy forever. Retries (throttling, 5xx) fit inside.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// Loads the shared SDK configuration for `region`, resolved before (see
/// [`region_from_chain`]): credentials from the default chain, no region lookup.
pub async fn load(region: &str) -> SdkConfig {
    bounded(loader(), region).load().await
}

/// `loader` in `region`, with the bounds on each call.
fn bounded(loader: aws_config::ConfigLoader, region: &str) -> aws_config::ConfigLoader {
    loader
        .region(Region::new(region.to_owned()))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
}

/// A profile named in a config file (or `--profile`) that gives no credentials.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot get credentials from the AWS profile {profile}: {cause}; check that ~/.aws/config or ~/.aws/credentials defines it, or fix this cluster's profile: key"
)]
pub struct ProfileError {
    pub profile: String,
    pub cause: String,
}

/// [`load`], with the credentials and settings of the AWS profile `profile` when given.
/// The profile's credentials win over the environment's (as `aws --profile` does), so
/// that each cluster of a fleet can name its own account's profile in its config file.
/// They are asked for once here, so that a missing or broken profile is reported by name
/// rather than as the SDK's "credentials not loaded" on the first call.
pub async fn load_with_profile(
    region: &str,
    profile: Option<&str>,
) -> Result<SdkConfig, ProfileError> {
    let mut loader = loader();
    if let Some(profile) = profile {
        // The provider resolves role chains and SSO with its own HTTP client: the same
        // rustls one as the loader's, since the SDK crates have no default TLS stack.
        let provider_config = aws_config::provider_config::ProviderConfig::default()
            .with_http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .with_region(Some(Region::new(region.to_owned())));
        let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .configure(&provider_config)
            .profile_name(profile)
            .build();
        use aws_sdk_iam::config::ProvideCredentials;
        provider
            .provide_credentials()
            .await
            .map_err(|error| ProfileError {
                profile: profile.to_owned(),
                cause: aws_sdk_iam::error::DisplayErrorContext(&error).to_string(),
            })?;
        loader = loader.profile_name(profile).credentials_provider(provider);
    }
    Ok(bounded(loader, region).load().await)
}

/// The region as the AWS CLI finds it when `--region` is not given: `AWS_REGION`, then the
/// profile, then the instance's metadata. (The SDK's default chain, run through the loader
/// because its instance-metadata step needs our HTTP client.)
pub async fn region_from_chain() -> Option<String> {
    loader().load().await.region().map(ToString::to_string)
}

/// The outcome of a read whose "no such resource" error is an answer, not a failure:
/// `Ok(None)` when `is_missing` says the service error means the resource does not exist,
/// the output otherwise; every other error is passed on.
pub fn missing_as_none<T, E, R>(
    result: Result<T, aws_sdk_iam::error::SdkError<E, R>>,
    is_missing: impl FnOnce(&E) -> bool,
) -> Result<Option<T>, aws_sdk_iam::error::SdkError<E, R>> {
    match result {
        Ok(output) => Ok(Some(output)),
        Err(error) if error.as_service_error().is_some_and(is_missing) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A failed AWS call: which service and operation, on which resource. The SDK's error is
/// kept as the source, displayed with its whole context (the SDK's own `Display` says only
/// "service error"), so `error: {:#}` prints one line that says what failed and why.
#[derive(Debug, thiserror::Error)]
#[error("{service}:{operation} on {resource} failed")]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    pub resource: String,
    #[source]
    pub cause: SdkCause,
}

/// The SDK's error, displayed with its cause chain on one line. It reports no source of
/// its own: the chain is already in its text, and printing it twice helps nobody.
#[derive(Debug)]
pub struct SdkCause(pub Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SdkCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            aws_sdk_iam::error::DisplayErrorContext(self.0.as_ref())
        )
    }
}

impl std::error::Error for SdkCause {}

impl AwsError {
    /// The `map_err` of one call: `.map_err(AwsError::call("iam", "GetRole", name))`.
    pub fn call<E>(
        service: &'static str,
        operation: &'static str,
        resource: impl Into<String>,
    ) -> impl FnOnce(E) -> AwsError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let resource = resource.into();
        move |error| AwsError {
            service,
            operation,
            resource,
            cause: SdkCause(Box::new(error)),
        }
    }
}

/// The error with its sources on one line, as `anyhow`'s `{:#}` prints it: for places that
/// show an error as text (a preflight check's detail) rather than return it.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
