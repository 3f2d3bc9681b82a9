//! Build script: links the `netswitch` binary's startup code first, so that a fresh process maps
//! far fewer of its code pages (see `layout/README.md`). Only for release builds for
//! x86_64-unknown-linux-gnu with rustc's own LLD, the linker that understands
//! `--symbol-ordering-file`; every other build is left as it is.

use std::env;
use std::path::Path;
use std::process::Command;

/// The file that lists the startup functions, one symbol per line.
const ORDER_FILE: &str = "layout/startup-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if !links_with_rust_lld() {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&manifest).join(ORDER_FILE);
    if !order.is_file() {
        return;
    }
    println!("cargo:rustc-link-arg-bin=netswitch=-Wl,--symbol-ordering-file={}", order.display());
    // A symbol of the list that the optimiser inlined or renamed is not an error.
    println!("cargo:rustc-link-arg-bin=netswitch=-Wl,--no-warn-symbol-ordering");
}

/// True for a release build for x86_64-unknown-linux-gnu by a toolchain that links with its own
/// LLD (rustup's, since Rust 1.90) and no linker chosen by the user.
fn links_with_rust_lld() -> bool {
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || env::var("PROFILE").as_deref() != Ok("release") {
        return false;
    }
    if env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if rustflags.contains("linker") || rustflags.contains("link-self-contained") {
        return false;
    }
    // Distribution-built compilers often leave the bundled LLD out and link with the system's
    // `ld`, which does not know the ordering option.
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = match Command::new(rustc).args(["--print", "sysroot"]).output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        _ => return false,
    };
    Path::new(&sysroot).join("lib/rustlib").join(&target).join("bin/gcc-ld/ld.lld").is_file()
}
