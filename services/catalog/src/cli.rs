//! `catalog rebuild`: starts a rebuild over gRPC and shows its progress
//! until searches read the new generation.

use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use orderflow_proto::catalog::v1::{self as pb, catalog_service_client::CatalogServiceClient};
use tonic::{Request, metadata::MetadataValue};

/// How often the progress is read.
const POLL: Duration = Duration::from_millis(250);

/// Asks the catalog at `addr` for a rebuild (or follows the one running)
/// and waits until it serves.
///
/// # Errors
/// When the server cannot be reached, refuses the token, or the rebuild is
/// replaced by another.
pub async fn rebuild(addr: &str, token: Option<&str>, quiet: bool) -> anyhow::Result<()> {
    let mut client = CatalogServiceClient::connect(addr.to_owned())
        .await
        .with_context(|| format!("cannot reach the catalog at {addr} (--addr)"))?;
    let auth: Option<MetadataValue<_>> = token
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("GRPC_ADMIN_TOKEN is not a valid header value")?;
    fn request<T>(body: T, auth: Option<&MetadataValue<tonic::metadata::Ascii>>) -> Request<T> {
        let mut r = Request::new(body);
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.clone());
        }
        r
    }
    let started = client
        .rebuild_catalog(request(pb::RebuildCatalogRequest {}, auth.as_ref()))
        .await
        .context("RebuildCatalog (an admin RPC: set GRPC_ADMIN_TOKEN)")?
        .into_inner();
    let rebuild = started
        .rebuild
        .context("RebuildCatalog answered no rebuild")?;
    let id = rebuild.rebuild_id.clone();
    eprintln!(
        "{} rebuild {id} into generation {}",
        if started.started {
            "started"
        } else {
            "following the running"
        },
        rebuild.generation
    );
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} products  {per_sec}  ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    loop {
        let now = client
            .get_catalog_rebuild(request(
                pb::GetCatalogRebuildRequest {
                    rebuild_id: id.clone(),
                },
                auth.as_ref(),
            ))
            .await
            .context("GetCatalogRebuild")?
            .into_inner()
            .rebuild
            .context("GetCatalogRebuild answered no rebuild")?;
        if now.products_total > 0 {
            bar.set_length(u64::try_from(now.products_total).unwrap_or(0));
        }
        bar.set_position(u64::try_from(now.products_applied).unwrap_or(0));
        match pb::RebuildState::try_from(now.state) {
            Ok(pb::RebuildState::Serving) => {
                bar.finish();
                eprintln!(
                    "rebuilt: {} products in {} pages; searches read generation {}",
                    now.products_applied, now.pages_applied, now.generation
                );
                return Ok(());
            }
            Ok(pb::RebuildState::Retired) => {
                anyhow::bail!("rebuild {id} was replaced by a later one before it finished")
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}
