//! Where the project's binaries and examples are, and the check that the
//! language bindings were set up before tests that need them.

use std::path::PathBuf;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_owned()
}

/// The directory cargo put this build's binaries in (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/<test> → target/debug
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_owned()
}

/// A binary of the workspace, built by `cargo build --workspace`; panics
/// with what to run when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

/// Checks that what the language bindings need is in place: the Python
/// venv with the package, the Node addon, the C library. Panics naming the
/// setup command to run.
pub fn ensure_setup() {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run bindings-python/dev-setup first",
        python.display()
    );
    let node_addon = root.join("bindings-node/exoservice_native.node");
    assert!(
        node_addon.is_file(),
        "{} is missing: run bindings-node/dev-setup first",
        node_addon.display()
    );
    let c_lib = bin_dir().join("libexoservice_c.a");
    assert!(
        c_lib.is_file(),
        "{} is missing: run `cargo build --workspace` first",
        c_lib.display()
    );
}
