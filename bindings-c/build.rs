//! Generates `exoservice.h` from the crate's source with cbindgen, and sets
//! the shared library's soname.
//!
//! The header is written to `$OUT_DIR/exoservice.h` and copied next to the
//! built libraries (`target/<profile>/exoservice.h`). The committed copy in
//! `include/exoservice.h` is what users get; `make header` refreshes it and
//! `make check-header` (and the `header_is_current` test) fail when it
//! differs from the generated one. A stale committed header is also
//! reported as a build warning.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=include/exoservice.h");

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        // Installed as libexoservice.so.0 (see the Makefile); programs linked
        // against it record that name.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libexoservice.so.0");
    }

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cannot read cbindgen.toml: {e}"));
    // `with_src` parses the crate's files directly (following `mod`
    // declarations), without running `cargo metadata` inside the build.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src").join("lib.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen cannot generate exoservice.h: {e}"));
    let generated = out_dir.join("exoservice.h");
    bindings.write_to_file(&generated);

    // Next to the libraries: target/<profile>/exoservice.h.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        let _ = fs::copy(&generated, profile_dir.join("exoservice.h"));
    }

    let committed = crate_dir.join("include").join("exoservice.h");
    if read(&committed) != read(&generated) {
        println!(
            "cargo:warning=bindings-c/include/exoservice.h differs from the header generated from the source; run `make -C bindings-c header`"
        );
    }
}

fn read(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}
