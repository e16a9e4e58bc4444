//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the
//! migrations folder, but cargo only watches files it knows about.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
