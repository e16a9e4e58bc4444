//! The layering, checked over `cargo metadata` rather than described: the
//! core depends on no I/O crate, drivers on no adapter, adapters only on the
//! core, the media crate on nothing of ours, and nothing on the binary.

use std::collections::BTreeSet;

use serde_json::Value;

const CORE: &str = "buildpeer-core";
const BINARY: &str = "buildpeer";
const DRIVERS: &[&str] = &["buildpeer-api", "buildpeer-worker"];
const ADAPTERS: &[&str] = &[
    "buildpeer-db",
    "buildpeer-storage",
    "buildpeer-cache",
    "buildpeer-media-adapter",
];
/// Pure computation the media adapter wraps.
const MEDIA: &str = "buildpeer-media";

/// Crates that talk to the outside world: none of them belongs in the core.
const IO_CRATES: &[&str] = &[
    "sqlx",
    "reqwest",
    "hyper",
    "hyper-util",
    "axum",
    "tower-http",
    "object_store",
    "redis",
    "moka",
    "governor",
    "turbojpeg",
    "libheif-rs",
    "image",
    "mio",
    "socket2",
];
/// What the core may use of tokio: tasks, timers, synchronisation and the
/// `select!`/`join!` macros; no sockets, files, processes or signals.
const CORE_TOKIO_FEATURES: &[&str] = &["rt", "time", "sync", "macros"];

struct Package {
    /// Normal (not dev or build) dependencies: name → declared features.
    deps: Vec<(String, Vec<String>)>,
}

fn metadata() -> std::collections::BTreeMap<String, Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let mut packages = std::collections::BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let mut deps = Vec::new();
        for d in p["dependencies"].as_array().expect("dependencies") {
            let name = d["name"].as_str().expect("name").to_owned();
            // Normal dependencies only: dev and build ones are not linked
            // into what ships.
            if d["kind"].is_null() {
                let features = d["features"]
                    .as_array()
                    .expect("features")
                    .iter()
                    .map(|f| f.as_str().expect("feature").to_owned())
                    .collect();
                deps.push((name, features));
            }
        }
        packages.insert(
            p["name"].as_str().expect("name").to_owned(),
            Package { deps },
        );
    }
    packages
}

fn ours(name: &str) -> bool {
    name == BINARY || name.starts_with("buildpeer-")
}

/// Our crates `package` depends on (normal dependencies).
fn our_deps<'a>(
    packages: &'a std::collections::BTreeMap<String, Package>,
    package: &str,
) -> Vec<&'a str> {
    packages[package]
        .deps
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| ours(n))
        .collect()
}

#[test]
fn the_core_uses_no_io_crate_and_only_tokios_runtime_parts() {
    let packages = metadata();
    let core = &packages[CORE];
    for (name, features) in &core.deps {
        assert!(
            !IO_CRATES.contains(&name.as_str()),
            "the core depends on the I/O crate {name}"
        );
        assert!(!ours(name), "the core depends on {name}");
        if name == "tokio" {
            for f in features {
                assert!(
                    CORE_TOKIO_FEATURES.contains(&f.as_str()),
                    "the core asks for tokio's {f:?} feature"
                );
            }
        }
    }
}

#[test]
fn drivers_depend_on_the_core_and_no_adapter() {
    let packages = metadata();
    for driver in DRIVERS {
        assert_eq!(
            our_deps(&packages, driver),
            [CORE],
            "{driver}'s crates of ours"
        );
    }
}

#[test]
fn adapters_depend_only_on_the_core() {
    let packages = metadata();
    for adapter in ADAPTERS {
        let deps: Vec<&str> = our_deps(&packages, adapter)
            .into_iter()
            .filter(|d| !(*adapter == "buildpeer-media-adapter" && *d == MEDIA))
            .collect();
        assert_eq!(deps, [CORE], "{adapter}'s crates of ours");
    }
    assert!(
        our_deps(&packages, MEDIA).is_empty(),
        "the media crate is pure"
    );
}

#[test]
fn nothing_depends_on_the_binary_and_test_support_stays_in_tests() {
    let packages = metadata();
    for (name, package) in &packages {
        assert!(
            !package.deps.iter().any(|(d, _)| d == BINARY),
            "{name} depends on the binary crate"
        );
        for (dep, features) in &package.deps {
            assert!(
                dep != "buildpeer-testkit",
                "{name} depends on the test kit outside its tests"
            );
            assert!(
                !(dep == "buildpeer-db" && features.iter().any(|f| f == "testing")),
                "{name} ships the database's test support"
            );
        }
    }
    // Every crate of ours is in one of the layers above.
    let known: BTreeSet<&str> = [CORE, BINARY, MEDIA, "buildpeer-testkit"]
        .into_iter()
        .chain(DRIVERS.iter().copied())
        .chain(ADAPTERS.iter().copied())
        .collect();
    for name in packages.keys().filter(|n| ours(n)) {
        assert!(
            known.contains(name.as_str()),
            "{name} is in no layer of this test"
        );
    }
}
