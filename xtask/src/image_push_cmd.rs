//! `cargo xtask image push`: the image `image build` wrote, into the account's own ECR
//! registry (see [`crate::registry`]).

use std::process::ExitCode;

use anyhow::Context;
use sandbox::python_tools::workspace_root;

use crate::flags::{EncryptionFlag, ImagePushFlags, OutputFormat};
use crate::registry::ecr::{Encryption, RepositorySpec};
use crate::registry::{PushOutcome, PushRequest, push_image};
use crate::settings::{is_image_tag, is_repository_name};

pub fn run(flags: ImagePushFlags) -> anyhow::Result<ExitCode> {
    let request = request(&flags)?;
    let outcome = crate::terminal::runtime()?.block_on(async {
        let region = match &flags.region {
            Some(region) => region.clone(),
            None => crate::aws::region_from_chain()
                .await
                .context("no region: pass --region, or set AWS_REGION or a profile's region")?,
        };
        let sdk = crate::aws::load(&region).await;
        push_image(&sdk, &request).await.with_context(|| {
            format!(
                "pushing the image to ECR repository {} in {region}",
                request.repository.name
            )
        })
    })?;
    print(&outcome, flags.output)?;
    Ok(crate::exit::code(crate::exit::SUCCESS))
}

/// The flags, validated before any call is made.
fn request(flags: &ImagePushFlags) -> anyhow::Result<PushRequest> {
    anyhow::ensure!(
        is_repository_name(&flags.repository),
        "invalid --repository '{}': an ECR repository name is 2-256 lowercase letters, digits and ._-/ , starting with a letter or digit",
        flags.repository
    );
    if let Some(tag) = flags.tags.iter().find(|tag| !is_image_tag(tag)) {
        anyhow::bail!(
            "invalid --tag '{tag}': an image tag is 1-128 letters, digits and ._- , not starting with . or -"
        );
    }
    anyhow::ensure!(
        flags.keep_images >= 1,
        "invalid --keep-images 0: the lifecycle policy must keep at least the newest image"
    );
    let encryption = match (flags.encryption, &flags.kms_key) {
        (EncryptionFlag::Aes256, None) => Encryption::Aes256,
        (EncryptionFlag::Aes256, Some(_)) => {
            anyhow::bail!("--kms-key needs --encryption kms")
        }
        (EncryptionFlag::Kms, key) => Encryption::Kms(key.clone()),
    };
    Ok(PushRequest {
        repository: RepositorySpec {
            name: flags.repository.clone(),
            encryption,
            keep_images: flags.keep_images,
            adopt: flags.adopt,
        },
        layout_dir: flags
            .layout
            .clone()
            .unwrap_or_else(|| crate::image::default_out(&workspace_root())),
        extra_tags: flags.tags.clone(),
    })
}

fn print(outcome: &PushOutcome, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(outcome).context("serialising the push")?;
            println!("{text}");
        }
        OutputFormat::Human => {
            let report = &outcome.report;
            for change in &outcome.repository_changes {
                eprintln!("repository {}: {change}", outcome.repository_uri);
            }
            eprintln!(
                "blobs: {} uploaded, {} already there; tags: pushed [{}], unchanged [{}], kept on another image [{}]",
                report.blobs_uploaded,
                report.blobs_present,
                report.tags_pushed.join(", "),
                report.tags_unchanged.join(", "),
                report.tags_kept.join(", "),
            );
            println!("{}", report.reference);
        }
    }
    Ok(())
}
