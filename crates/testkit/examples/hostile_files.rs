//! Writes the hostile-file set (`buildpeer_testkit::hostile::set`) into a
//! directory, one file each, with `manifest.json` (name, file, declared
//! type), for `bench/memory`:
//!
//! ```text
//! cargo run --release -p buildpeer-testkit --example hostile_files -- DIR
//! ```

use std::io::Write as _;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".to_owned()));
    std::fs::create_dir_all(&dir)?;
    let mut manifest = String::from("[\n");
    let set = buildpeer_testkit::hostile::set();
    for (i, h) in set.iter().enumerate() {
        let file = h.filename();
        std::fs::write(dir.join(&file), &h.bytes)?;
        let sep = if i + 1 < set.len() { "," } else { "" };
        manifest.push_str(&format!(
            "  {{\"name\": {:?}, \"file\": {:?}, \"declared_type\": {:?}}}{sep}\n",
            h.name, file, h.declared_type
        ));
    }
    manifest.push_str("]\n");
    std::fs::write(dir.join("manifest.json"), manifest)?;
    writeln!(
        std::io::stdout(),
        "{} files in {}",
        set.len(),
        dir.display()
    )
}
