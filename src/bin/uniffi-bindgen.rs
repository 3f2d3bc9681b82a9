//! The `uniffi-bindgen` command line, built with `--features bindgen`; scripts/gen-bindings runs it
//! in library mode to generate the Kotlin and Swift bindings.

fn main() {
    uniffi::uniffi_bindgen_main()
}
