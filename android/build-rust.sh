#!/usr/bin/env bash
# Builds libnetswitch.so for Android with cargo-ndk, for arm64-v8a, armeabi-v7a and x86_64, into
# android/netswitch/src/main/jniLibs/<abi>/ (where the AAR picks it up). The Gradle module runs
# this before every build; it can also be run by hand.
#
# Needs: rustup, `cargo install cargo-ndk` (v3+), the Android NDK (ANDROID_NDK_HOME, or
# ANDROID_HOME / ANDROID_SDK_ROOT with an ndk/<version> inside: cargo-ndk finds it).
#
# Usage: android/build-rust.sh [--debug] [--api LEVEL]
#   --debug      unoptimised build (default: release; cargo-ndk strips the copied .so)
#   --api LEVEL  minimum Android API level to link against (default 26, the AAR's minSdk)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="$HERE/netswitch/src/main/jniLibs"
ABIS=(arm64-v8a armeabi-v7a x86_64)
TARGETS=(aarch64-linux-android armv7-linux-androideabi x86_64-linux-android)
PROFILE_ARGS=(--release)
API=26

die() { printf 'build-rust.sh: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --debug) PROFILE_ARGS=() ;;
        --api) [ $# -ge 2 ] || die "--api needs a level"; API="$2"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
cargo ndk --version >/dev/null 2>&1 || die "cargo-ndk not found: cargo install cargo-ndk"
if [ -z "${ANDROID_NDK_HOME:-}" ] && [ -z "${ANDROID_NDK_ROOT:-}" ] \
    && [ -z "${ANDROID_HOME:-}" ] && [ -z "${ANDROID_SDK_ROOT:-}" ]; then
    die "no Android NDK: set ANDROID_NDK_HOME (or ANDROID_HOME with the NDK installed by sdkmanager)"
fi

if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup target list --installed)"
    for target in "${TARGETS[@]}"; do
        grep -qx "$target" <<<"$installed" || rustup target add "$target"
    done
fi

abi_args=()
for abi in "${ABIS[@]}"; do abi_args+=(-t "$abi"); done

cd "$ROOT"
mkdir -p "$OUT"
# --lib: only the library (not the desktop CLI); cargo-ndk copies libnetswitch.so into $OUT/<abi>/.
cargo ndk "${abi_args[@]}" --platform "$API" -o "$OUT" build --lib "${PROFILE_ARGS[@]}"

for abi in "${ABIS[@]}"; do
    [ -f "$OUT/$abi/libnetswitch.so" ] || die "cargo ndk did not write $OUT/$abi/libnetswitch.so"
done
echo "build-rust.sh: libnetswitch.so for ${ABIS[*]} in $OUT"
