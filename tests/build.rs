//! Builds the guest components the integration tests load, from source, and
//! writes their paths to `$OUT_DIR/guests.rs` (included by `lib.rs`).
//!
//! Each guest workspace gets a nested `cargo build --release --target
//! wasm32-wasip2` into one shared directory, `<target dir>/wasm-guests`, where
//! `scripts/build-examples.sh` builds the examples too.

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};

const WASM_TARGET: &str = "wasm32-wasip2";

/// A guest workspace: its directory relative to the repository root, and the
/// crates in it that are components.
struct Workspace {
    dir: &'static str,
    crates: &'static [&'static str],
}

const WORKSPACES: [Workspace; 2] = [
    Workspace {
        dir: "tests/guests",
        crates: &["probe", "minimal"],
    },
    Workspace {
        dir: "guest-examples/rust",
        crates: &["counter", "limits"],
    },
];

/// Variables that the outer build sets or passes down and that would steer
/// the nested build wrongly (host flags, jobserver, this package's metadata).
const LEAKED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "DEBUG",
    "OPT_LEVEL",
    "PROFILE",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OUT_DIR",
];
const LEAKED_PREFIXES: &[&str] = &[
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
];

fn main() {
    let manifest_dir = PathBuf::from(required_var("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .unwrap_or_else(|| fail("tests/ has no parent directory"))
        .to_path_buf();
    let guests_dir = outer_target_dir(&root).join("wasm-guests");

    watch(&root);
    check_wasm_target();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let jobs = env::var_os("NUM_JOBS");
    for workspace in &WORKSPACES {
        build(
            &cargo,
            jobs.as_ref(),
            &root.join(workspace.dir),
            &guests_dir,
        );
    }

    let out_dir = PathBuf::from(required_var("OUT_DIR"));
    let source = guests_rs(&root, &guests_dir.join(WASM_TARGET).join("release"));
    fs::write(out_dir.join("guests.rs"), source)
        .unwrap_or_else(|e| fail(&format!("writing guests.rs: {e}")));
}

/// The outer build's target directory: `CARGO_TARGET_DIR` if set (a relative
/// one is taken from the repository root), else `<repo>/target`.
fn outer_target_dir(root: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Reruns this script when a guest's sources, manifests or the WIT change.
/// (Not the guest workspaces as a whole: one built on its own has a target/.)
fn watch(root: &Path) {
    let mut paths = vec![root.join("wit")];
    for workspace in &WORKSPACES {
        let dir = root.join(workspace.dir);
        paths.push(dir.join("Cargo.toml"));
        paths.push(dir.join("Cargo.lock"));
        for name in workspace.crates {
            paths.push(dir.join(name).join("Cargo.toml"));
            paths.push(dir.join(name).join("src"));
        }
    }
    for path in paths {
        // A directory is watched recursively, new files included.
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Fails with one clear message if the toolchain lacks the wasm target
/// (rather than a screenful of "can't find crate for `core`").
fn check_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .stderr(Stdio::inherit())
        .output();
    // If rustc cannot say, let the build itself report the problem.
    let Ok(output) = output else { return };
    if !output.status.success() {
        return;
    }
    let libdir = String::from_utf8_lossy(&output.stdout);
    if !Path::new(libdir.trim()).is_dir() {
        fail(&format!(
            "the {WASM_TARGET} target is not installed; run `rustup target add {WASM_TARGET}` \
             (or `scripts/test.sh`, which does it)"
        ));
    }
}

/// Builds one guest workspace into `guests_dir`.
fn build(cargo: &OsString, jobs: Option<&OsString>, workspace: &Path, guests_dir: &Path) {
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(guests_dir);
    if let Some(jobs) = jobs {
        command.arg("--jobs").arg(jobs);
    }
    for (name, _) in env::vars_os() {
        let leaked = name.to_str().is_some_and(|name| {
            LEAKED_VARS.contains(&name) || LEAKED_PREFIXES.iter().any(|p| name.starts_with(p))
        });
        if leaked {
            command.env_remove(name);
        }
    }
    // Cargo reads this script's stdout as directives: keep the nested
    // build's output on stderr, which cargo shows when the build fails.
    let status = command
        .stdout(Stdio::from(io::stderr()))
        .status()
        .unwrap_or_else(|e| fail(&format!("running cargo for {}: {e}", workspace.display())));
    if !status.success() {
        fail(&format!(
            "building the guests in {} failed ({status}); see the output above",
            workspace.display()
        ));
    }
}

/// The source of `guests.rs`: one path constant per guest and `foreach_guest!`.
fn guests_rs(root: &Path, artifacts: &Path) -> String {
    let mut source = String::from("// Generated by tests/build.rs.\n");
    let mut names = Vec::new();
    for workspace in &WORKSPACES {
        for krate in workspace.crates {
            let file = artifacts.join(format!("{}.wasm", krate.replace('-', "_")));
            if !file.is_file() {
                fail(&format!("the build did not produce {}", file.display()));
            }
            let path = file
                .to_str()
                .unwrap_or_else(|| fail(&format!("path is not UTF-8: {}", file.display())));
            let name = krate.replace('-', "_").to_uppercase();
            let crate_dir = root.join(workspace.dir).join(krate);
            writeln!(
                source,
                "\n/// Path of the `{krate}` guest component, built from `{}`.",
                crate_dir.strip_prefix(root).unwrap_or(&crate_dir).display()
            )
            .expect("writing to a String");
            writeln!(source, "pub const {name}: &str = {path:?};").expect("writing to a String");
            names.push(name);
        }
    }
    let calls: String = names
        .iter()
        .map(|name| format!("        $mac!({name});\n"))
        .collect();
    write!(
        source,
        "
/// Invokes `$mac!(NAME);` once for each guest path constant above
/// ({}), e.g. to generate one test per guest.
#[macro_export]
macro_rules! foreach_guest {{
    ($mac:ident) => {{
{calls}    }};
}}
",
        names
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .expect("writing to a String");
    source
}

fn required_var(name: &str) -> OsString {
    env::var_os(name)
        .unwrap_or_else(|| fail(&format!("{name} is not set (run this through cargo)")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    process::exit(1);
}
