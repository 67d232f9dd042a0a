//! `cargo xtask render`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::catalog::catalog;
use crate::decide::decide;
use crate::facts::Facts;
use crate::flags::{OutputFormat, RenderFlags};
use crate::render::render;
use crate::settings::{self, ConfigFile, DeployInput, ImageChoice};

pub fn run(flags: RenderFlags) -> anyhow::Result<ExitCode> {
    let file = match &flags.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let catalog = catalog()?;
    // Offline: the account and the issuer are what the flags say.
    let settings = settings::resolve(
        &flags.target.or(file.target()),
        &DeployInput::default(),
        None,
        catalog,
    )?;
    let mut facts = Facts::offline(&settings)?;
    // Everything render needs is in the flags, except the digest of our pushed image with
    // --publisher ours: that one read goes to ECR.
    if let ImageChoice::Ours { .. } = settings.image {
        facts.publisher_image = crate::terminal::runtime()?.block_on(async {
            let sdk = crate::aws::load(&settings.region.name).await;
            crate::facts::publisher_image(&settings, &sdk).await
        })?;
    }
    let target = decide(&settings, &facts)?;
    let rendered = render(&target)?;
    if flags.output == OutputFormat::Json {
        let text = serde_json::to_string_pretty(&rendered.to_json())
            .context("serialising the rendered artifacts")?;
        println!("{text}");
        return Ok(crate::exit::code(crate::exit::SUCCESS));
    }
    let out = flags
        .out
        .or(file.out)
        .unwrap_or_else(|| PathBuf::from("rendered"));
    let written = rendered.write_to_dir(&out)?;
    tracing::info!(
        cluster = %target.cluster,
        region = %target.region,
        version = %target.version,
        identity = target.identity.as_str(),
        image = %rendered.image,
        "rendered {} files into {}",
        written.len(),
        out.display()
    );
    for path in written {
        println!("{}", path.display());
    }
    Ok(crate::exit::code(crate::exit::SUCCESS))
}
