//! Writes the OpenAPI document the server serves at `/openapi.json`, for
//! tools that want it without a running server:
//!
//! ```sh
//! cargo run -p buildpeer-api --example openapi > openapi.json
//! ```

use std::io::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json = buildpeer_api::openapi().to_pretty_json()?;
    writeln!(std::io::stdout().lock(), "{json}")?;
    Ok(())
}
