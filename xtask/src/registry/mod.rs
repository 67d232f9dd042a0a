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
