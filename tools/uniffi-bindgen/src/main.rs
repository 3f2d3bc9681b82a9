//! The `uniffi-bindgen` command line. scripts/gen-bindings runs it in library mode to generate the
//! Kotlin and Swift bindings. It is a workspace member of its own, not a binary of netswitch:
//! uniffi's `cli` feature then never changes how netswitch itself is built.

fn main() {
    uniffi::uniffi_bindgen_main()
}
