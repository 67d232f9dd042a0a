//! AWS clients from the default chains: credentials and region as the AWS CLI finds them,
//! and `AWS_ENDPOINT_URL` honoured, which is how the sandbox points the very same code at
//! its emulator. The HTTP client is explicit because the SDK crates are built without
//! their default TLS stack (see the workspace manifest).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Loads the shared SDK configuration; `region` wins over the region chain.
pub async fn load(region: Option<&str>) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
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

/// An SDK error with its whole cause chain on one line: the SDK's own `Display` says only
/// "service error".
pub fn describe<E: std::error::Error>(error: &E) -> String {
    aws_sdk_iam::error::DisplayErrorContext(error).to_string()
}
