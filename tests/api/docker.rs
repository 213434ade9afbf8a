//! `deploy/Dockerfile` builds from a copy of only some of the repository: its build
//! stage must copy every file `cargo build` reads. Twice a file the build needs was
//! added outside what it copied (the PostgreSQL migrations, the built-in templates,
//! then the patched fjall under `vendor/`) and the image stopped building while
//! everything else passed. This reads what the build reads and checks that each is
//! under a path the build stage copies.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sources a path given in the build stage's `COPY` lines covers, relative to the
/// repository (the image's WORKDIR holds the same layout).
fn copied() -> Vec<PathBuf> {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let build_stage = dockerfile.split("FROM ").nth(1).expect("a build stage");
    let mut paths = Vec::new();
    for line in build_stage.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).filter(|w| !w.starts_with("--")).collect();
        let (dest, sources) = words.split_last().expect("COPY SRC... DEST");
        assert!(
            dest.starts_with("./") || *dest == "./",
            "the build stage copies into its WORKDIR as the repository lays out: {line}"
        );
        paths.extend(sources.iter().map(PathBuf::from));
    }
    paths
}

/// Files named in `include_str!`, `include_bytes!` and `sqlx::migrate!` by code that
/// is not a test (the part of each file before its first `#[cfg(test)]`).
fn embedded(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            embedded(&path, out);
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (mac, relative_to_file) in [("include_str!(\"", true), ("include_bytes!(\"", true), ("migrate!(\"", false)]
        {
            for piece in code.split(mac).skip(1) {
                let named = piece.split('"').next().unwrap();
                let base = if relative_to_file { path.parent().unwrap().to_path_buf() } else { repo() };
                let full = base.join(named).canonicalize().unwrap_or_else(|e| panic!("{named} in {path:?}: {e}"));
                out.push(full.strip_prefix(repo().canonicalize().unwrap()).unwrap().to_path_buf());
            }
        }
    }
}

#[test]
fn the_image_build_stage_copies_every_file_the_build_reads() {
    let copied = copied();
    let mut read = vec![PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock"), PathBuf::from("src/main.rs")];
    embedded(&repo().join("src"), &mut read);
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    for (_, patched) in manifest["patch"]["crates-io"].as_table().unwrap() {
        read.push(PathBuf::from(patched["path"].as_str().unwrap()).join("Cargo.toml"));
    }
    for bench in manifest["bench"].as_array().unwrap() {
        read.push(PathBuf::from(format!("benches/{}.rs", bench["name"].as_str().unwrap())));
    }
    assert!(read.iter().any(|p| p.starts_with("config/templates")), "the templates are embedded: {read:?}");
    assert!(read.iter().any(|p| p.starts_with("migrations")), "the migrations are embedded: {read:?}");
    for file in &read {
        assert!(repo().join(file).exists(), "{file:?} exists");
        assert!(
            copied.iter().any(|c| file.starts_with(c)),
            "deploy/Dockerfile's build stage does not copy {file:?}, which the build reads (copied: {copied:?})"
        );
    }
}
