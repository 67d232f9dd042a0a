//! Our publisher's image in the account's own registry: the ECR repository
//! ([`ecr`]), logging in to its registry, and pushing an OCI image layout to it
//! ([`push`]). `cargo xtask image push` is built from these, and `deploy --publisher ours`
//! resolves the pushed image's digest with [`ecr::image_digest`].

pub mod ecr;
pub mod push;

use base64::Engine;

use crate::aws::AwsError;
use push::RegistryLogin;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "ECR's GetAuthorizationToken answer has no usable {what}; check the registry id and \
         the caller's ecr:GetAuthorizationToken permission"
    )]
    Token { what: &'static str },
}

/// Logs in to the account's registry with `GetAuthorizationToken`: its answer names the
/// registry's endpoint and carries `AWS:<password>` in base64.
pub async fn login(client: &aws_sdk_ecr::Client) -> Result<RegistryLogin, LoginError> {
    let answer = client
        .get_authorization_token()
        .send()
        .await
        .map_err(AwsError::call(
            "ecr",
            "GetAuthorizationToken",
            "the account's registry",
        ))?;
    let data = answer
        .authorization_data
        .and_then(|mut all| all.pop())
        .ok_or(LoginError::Token {
            what: "authorization data",
        })?;
    let endpoint = data.proxy_endpoint.ok_or(LoginError::Token {
        what: "proxy endpoint",
    })?;
    let token = data.authorization_token.ok_or(LoginError::Token {
        what: "authorization token",
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(LoginError::Token {
            what: "authorization token (not base64 text)",
        })?;
    let (username, password) = decoded.split_once(':').ok_or(LoginError::Token {
        what: "authorization token (no user:password)",
    })?;
    Ok(RegistryLogin {
        host: registry_host(&endpoint).to_owned(),
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// `host[:port]` of a registry endpoint such as `https://1.dkr.ecr.us-west-2.amazonaws.com`.
pub fn registry_host(endpoint: &str) -> &str {
    let without_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    without_scheme.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_host_drops_the_scheme_and_slash() {
        assert_eq!(
            registry_host("https://1.dkr.ecr.us-west-2.amazonaws.com"),
            "1.dkr.ecr.us-west-2.amazonaws.com"
        );
        assert_eq!(registry_host("http://127.0.0.1:5000/"), "127.0.0.1:5000");
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}

/// The image label naming the publisher version an image was built from.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";
/// The image label naming the source revision an image was built from.
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";

/// What `image push` is asked to do.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub repository: ecr::RepositorySpec,
    /// The OCI image layout `image build` wrote.
    pub layout_dir: std::path::PathBuf,
    /// Extra tags besides the image's version and revision.
    pub extra_tags: Vec<String>,
}

/// What `image push` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushOutcome {
    pub repository_uri: String,
    pub repository_changes: Vec<String>,
    #[serde(flatten)]
    pub report: push::PushReport,
}

#[derive(Debug, thiserror::Error)]
pub enum ImagePushError {
    #[error(transparent)]
    Layout(#[from] push::PushError),
    #[error(transparent)]
    Repository(#[from] ecr::EcrError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(
        "the image in {} has no {label} label to tag it with; build it with `cargo xtask image build`",
        dir.display()
    )]
    MissingLabel {
        dir: std::path::PathBuf,
        label: &'static str,
    },
}

/// Ensures the repository, logs in and pushes the layout, tagged with the version and the
/// revision the image's own labels name (so a tag always says what is inside), plus any
/// extra tags.
pub async fn push_image(
    sdk: &aws_config::SdkConfig,
    request: &PushRequest,
) -> Result<PushOutcome, ImagePushError> {
    let layout = push::Layout::read(&request.layout_dir)?;
    let labels = layout.labels()?;
    let label = |label: &'static str| {
        labels
            .get(label)
            .cloned()
            .ok_or_else(|| ImagePushError::MissingLabel {
                dir: request.layout_dir.clone(),
                label,
            })
    };
    let mut tags = vec![label(VERSION_LABEL)?, label(REVISION_LABEL)?];
    tags.extend(request.extra_tags.iter().cloned());
    tags.dedup();
    let client = aws_sdk_ecr::Client::new(sdk);
    let repository = ecr::ensure_repository(&client, &request.repository).await?;
    let login = login(&client).await?;
    let report = push::push(&layout, &login, &request.repository.name, &tags).await?;
    Ok(PushOutcome {
        repository_uri: repository.uri,
        repository_changes: repository.changes.iter().map(ToString::to_string).collect(),
        report,
    })
}
