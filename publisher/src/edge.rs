//! The process edge that this workspace's binaries share: how a command-line mistake becomes
//! one line on stderr and an exit code, and how the AWS SDK configuration is loaded. It
//! depends on nothing else in this crate, so that `xtask` can use it instead of keeping
//! copies of its own.

use std::process::ExitCode;

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_smithy_http_client::{Builder as HttpClientBuilder, tls};
use clap::error::ErrorKind;

/// An AWS SDK configuration loader with the default chains (credentials, region,
/// `AWS_ENDPOINT_URL`, which is how the sandbox points the same code at its emulator) and
/// one explicit rustls+ring HTTP client: the SDK crates are built without their default TLS
/// stack (see the workspace manifest), and this is the one kube uses too. Callers add what
/// they need, such as a region or timeouts, and load it.
pub fn aws_config_loader() -> ConfigLoader {
    let http_client = HttpClientBuilder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client)
}

/// What a failed command-line parse does: help and version go to stdout with exit code 0;
/// anything else is the first paragraph of clap's message on one stderr line, with a pointer
/// to `--help`, and exit code 1, the code of every other failure, rather than clap's 2.
pub fn usage_error(error: &clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Printing help can only fail when stdout is closed; nothing is left to report to.
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    eprintln!("{}", one_line_usage_error(error));
    ExitCode::FAILURE
}

/// The first paragraph of clap's message, joined into one line, with a pointer to `--help`.
fn one_line_usage_error(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let first_paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    format!("{} (see --help)", first_paragraph.join(" "))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long)]
        count: u32,
    }

    #[test]
    fn a_usage_mistake_is_one_line_pointing_to_help() {
        let error =
            Flags::try_parse_from(["tool", "--count", "many"]).expect_err("a word is not a count");
        let line = one_line_usage_error(&error);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains("--count"), "{line}");
        assert!(line.ends_with(" (see --help)"), "{line}");
    }
}
