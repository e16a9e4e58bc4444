//! `buildpeer media thumbnails FILE... --out DIR [--sizes 256,1280]`: runs
//! exactly `buildpeer_media::process` on local files, writes
//! `<stem>.<name>.jpg` into DIR and prints one JSON line per file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use buildpeer_media::{DerivativeSpec, Limits, Processed};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Make JPEG derivatives of local files and print their metadata, one JSON
    /// line per file (exit 1 if any failed).
    Thumbnails(ThumbnailsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ThumbnailsArgs {
    /// Files to process.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Directory for `<stem>.<name>.jpg` (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Longest sides, comma-separated: `N` (256 is named thumb, 1280 preview,
    /// others N) or `name:N`, as BUILDPEER_THUMBNAIL_SIZES.
    #[arg(long, default_value = "256,1280")]
    pub sizes: String,
    /// Add `ms`, the time `process` took (reading and writing excluded).
    #[arg(long)]
    pub timing: bool,
}

pub fn run(cmd: &MediaCommand) -> ExitCode {
    match cmd {
        MediaCommand::Thumbnails(args) => thumbnails(args),
    }
}

fn thumbnails(args: &ThumbnailsArgs) -> ExitCode {
    let sizes = match buildpeer_media_adapter::parse_sizes(&args.sizes) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            eprintln!("buildpeer: --sizes is empty");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("buildpeer: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("buildpeer: {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    let limits = Limits::default();
    let mut failed = false;
    for file in &args.files {
        let line = match one(file, &args.out, &sizes, &limits, args.timing) {
            Ok(v) => v,
            Err(v) => {
                failed = true;
                v
            }
        };
        #[allow(clippy::print_stdout)] // the command's output
        {
            println!("{line}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn one(
    file: &Path,
    out: &Path,
    sizes: &[DerivativeSpec],
    limits: &Limits,
    timing: bool,
) -> Result<Value, Value> {
    let name = file.display().to_string();
    let io_err =
        |e: std::io::Error| json!({ "file": name, "error": "io_error", "message": e.to_string() });
    let bytes = std::fs::read(file).map_err(io_err)?;
    let start = Instant::now();
    let result = buildpeer_media::process(&bytes, sizes, limits);
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let Processed {
        format,
        metadata: m,
        derivatives,
    } = result.map_err(|e| json!({ "file": name, "error": e.code(), "message": e.to_string() }))?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let mut written = Vec::new();
    for d in &derivatives {
        let path = out.join(format!("{stem}.{}.jpg", d.name));
        std::fs::write(&path, &d.jpeg).map_err(io_err)?;
        written.push(json!({
            "name": d.name, "width": d.width, "height": d.height,
            "bytes": d.jpeg.len(), "path": path.display().to_string(),
        }));
    }
    let gps = m.gps.map(
        |g| json!({ "latitude": g.latitude, "longitude": g.longitude, "altitude": g.altitude }),
    );
    let mut v = json!({
        "file": name,
        "format": format.mime(),
        "width": m.width, "height": m.height,
        "taken_at": m.taken_at, "gps": gps,
        "camera_make": m.camera_make, "camera_model": m.camera_model,
        "orientation": m.orientation, "page_count": m.page_count,
        "derivatives": written,
    });
    if timing && let Some(obj) = v.as_object_mut() {
        obj.insert("ms".to_owned(), json!((ms * 1000.0).round() / 1000.0));
    }
    Ok(v)
}
