//! The real photos in ../shared/testdata/photos (see ATTRIBUTION.md there).

use crate::common;

use std::process::Command;

use buildpeer_media::{Format, Limits, default_sizes, process};
use common::*;

#[test]
fn orientation_sets_are_upright_and_alike() {
    for set in ["landscape", "portrait"] {
        let mut reference: Option<Vec<f64>> = None;
        for n in 1..=8 {
            let path = std::path::Path::new(PHOTOS).join(format!("jpeg/orientation/{set}_{n}.jpg"));
            let p = process(&read(&path), &default_sizes(), &Limits::default()).unwrap();
            assert_eq!(p.format, Format::Jpeg);
            assert_eq!(p.metadata.orientation, Some(n), "{}", path.display());
            let (w, h) = (p.metadata.width.unwrap(), p.metadata.height.unwrap());
            assert_eq!(
                set == "landscape",
                w > h,
                "{}: metadata {w}x{h}",
                path.display()
            );
            assert_eq!(p.derivatives.len(), 2);
            for d in &p.derivatives {
                let (dw, dh) = assert_clean_jpeg(&d.jpeg);
                assert_eq!((dw as u32, dh as u32), (d.width, d.height));
                if set == "landscape" {
                    assert!(
                        d.width > d.height,
                        "{} {}: {}x{}",
                        path.display(),
                        d.name,
                        d.width,
                        d.height
                    );
                } else {
                    assert!(
                        d.height > d.width,
                        "{} {}: {}x{}",
                        path.display(),
                        d.name,
                        d.width,
                        d.height
                    );
                }
            }
            let g = gray16(&p.derivatives[0].jpeg);
            match &reference {
                None => reference = Some(g),
                Some(r) => {
                    // The files of a set are not pixel-identical (about 13-15
                    // grey levels apart here); a wrong orientation is 40-60 apart.
                    let diff = mean_abs_diff(r, &g);
                    let mut turned = g.clone();
                    turned.reverse(); // the same picture rotated 180 degrees
                    let wrong = mean_abs_diff(r, &turned);
                    assert!(
                        diff < 20.0,
                        "{}: differs from {set}_1 by {diff:.1}",
                        path.display()
                    );
                    assert!(
                        wrong > 2.0 * diff,
                        "{}: too symmetric to tell ({diff:.1} vs {wrong:.1})",
                        path.display()
                    );
                }
            }
        }
    }
}

#[test]
fn gps_and_capture_time_match_exiftool() {
    // Debian: libimage-exiftool-perl (scripts/test installs it).
    let Some(exiftool) = buildpeer_testkit::required_tool("exiftool") else {
        return;
    };
    let files = photos("jpeg/gps");
    let out = Command::new(exiftool)
        .args([
            "-n",
            "-json",
            "-GPSLatitude",
            "-GPSLongitude",
            "-GPSAltitude",
            "-DateTimeOriginal",
        ])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exiftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oracle: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(oracle.len(), files.len());
    let mut with_gps = 0;
    for (file, o) in files.iter().zip(&oracle) {
        let p = process(&read(file), &default_sizes(), &Limits::default()).unwrap();
        let m = &p.metadata;
        let name = file.display();
        match (
            o.get("GPSLatitude").and_then(|v| v.as_f64()),
            o.get("GPSLongitude").and_then(|v| v.as_f64()),
        ) {
            (Some(lat), Some(lon)) => {
                let g = m
                    .gps
                    .unwrap_or_else(|| panic!("{name}: no GPS, exiftool says {lat},{lon}"));
                assert!(
                    (g.latitude - lat).abs() < 1e-6,
                    "{name}: lat {} vs {lat}",
                    g.latitude
                );
                assert!(
                    (g.longitude - lon).abs() < 1e-6,
                    "{name}: lon {} vs {lon}",
                    g.longitude
                );
                match o.get("GPSAltitude").and_then(|v| v.as_f64()) {
                    Some(alt) => {
                        let a = g.altitude.unwrap_or_else(|| panic!("{name}: no altitude"));
                        assert!((a - alt).abs() < 1e-3, "{name}: alt {a} vs {alt}");
                    }
                    None => assert_eq!(g.altitude, None, "{name}"),
                }
                with_gps += 1;
            }
            _ => assert_eq!(m.gps, None, "{name}: exiftool sees no GPS"),
        }
        match o.get("DateTimeOriginal").and_then(|v| v.as_str()) {
            Some(dt) => {
                // "2008:10:22 16:29:49" -> "2008-10-22T16:29:49"
                let want = format!("{}-{}-{}T{}", &dt[0..4], &dt[5..7], &dt[8..10], &dt[11..19]);
                let got = m
                    .taken_at
                    .as_deref()
                    .unwrap_or_else(|| panic!("{name}: no taken_at"));
                assert!(got.starts_with(&want), "{name}: {got} vs {want}");
            }
            None => assert_eq!(m.taken_at, None, "{name}"),
        }
    }
    assert!(with_gps >= 5, "only {with_gps} files had GPS");
}

fn check_sizes(sub: &str) {
    for file in photos(sub) {
        let name = file.display();
        let p = process(&read(&file), &default_sizes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e} ({})", e.code()));
        let m = &p.metadata;
        let (w, h) = (m.width.expect("width"), m.height.expect("height"));
        // The Reconyx trail camera writes no Make/Model/DateTimeOriginal (exiftool agrees).
        if sub == "jpeg/phone" && !name.to_string().contains("Reconyx") {
            assert!(
                m.camera_make.is_some() && m.camera_model.is_some(),
                "{name}: {m:?}"
            );
            assert!(m.taken_at.is_some(), "{name}: {m:?}");
        }
        let names: Vec<&str> = p.derivatives.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["thumb", "preview"], "{name}");
        for (d, max) in p.derivatives.iter().zip([256u32, 1280]) {
            let longest = d.width.max(d.height);
            assert_eq!(
                longest,
                max.min(w.max(h)),
                "{name} {}: {}x{}",
                d.name,
                d.width,
                d.height
            );
            // Same aspect ratio as the displayed image, within rounding.
            let want = f64::from(w) / f64::from(h);
            let got = f64::from(d.width) / f64::from(d.height);
            assert!(
                (want - got).abs() / want < 0.02,
                "{name} {}: aspect {got} vs {want}",
                d.name
            );
            let (dw, dh) = assert_clean_jpeg(&d.jpeg);
            assert_eq!((dw as u32, dh as u32), (d.width, d.height));
        }
    }
}

#[test]
fn phone_photos_make_both_sizes() {
    check_sizes("jpeg/phone");
}

#[test]
fn nokia_has_gps_and_iphone_has_camera() {
    let dir = std::path::Path::new(PHOTOS).join("jpeg/phone");
    let nokia = process(
        &read(&dir.join("HMD_Nokia_8.3_5G.jpg")),
        &default_sizes(),
        &Limits::default(),
    )
    .unwrap();
    assert!(nokia.metadata.gps.is_some(), "{:?}", nokia.metadata);
    assert_eq!(
        (nokia.metadata.width, nokia.metadata.height),
        (Some(4608), Some(1976))
    );
    let iphone = process(
        &read(&dir.join("iphone_hdr_NO.jpg")),
        &default_sizes(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(iphone.metadata.camera_make.as_deref(), Some("Apple"));
}

#[test]
fn heic_photos_make_both_sizes() {
    for file in photos("heic") {
        let r = process(&read(&file), &default_sizes(), &Limits::default());
        if cfg!(not(feature = "heif")) {
            assert_eq!(r.unwrap_err().code(), "heic_unavailable");
            continue;
        }
        assert_eq!(r.unwrap().format, Format::Heif, "{}", file.display());
    }
    if cfg!(feature = "heif") {
        check_sizes("heic");
        let iphone = std::path::Path::new(PHOTOS).join("heic/iphone_13_pro_max.HEIC");
        let p = process(&read(&iphone), &default_sizes(), &Limits::default()).unwrap();
        assert_eq!(
            p.metadata.camera_make.as_deref(),
            Some("Apple"),
            "{:?}",
            p.metadata
        );
        assert!(p.metadata.taken_at.is_some());
    }
}

#[test]
fn broken_photos_fail_cleanly_and_quickly() {
    for file in photos("jpeg/broken") {
        let bytes = read(&file);
        match without_hanging(move || process(&bytes, &default_sizes(), &Limits::default())) {
            Ok(p) => {
                for d in &p.derivatives {
                    assert_clean_jpeg(&d.jpeg);
                }
            }
            Err(e) => assert!(
                [
                    "corrupt_file",
                    "unsupported_type",
                    "image_too_large",
                    "limit_exceeded"
                ]
                .contains(&e.code()),
                "{}: {e} ({})",
                file.display(),
                e.code()
            ),
        }
    }
}
