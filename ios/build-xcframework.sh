#!/usr/bin/env bash
# Builds NetswitchFFI.xcframework (the Rust static library + the uniffi C header and module map)
# for iOS devices and the iOS simulator, and copies the generated Swift bindings into the Swift
# package's target, so that ios/Package.swift can be added to an Xcode project as a local package.
#
#   device:    aarch64-apple-ios
#   simulator: aarch64-apple-ios-sim + x86_64-apple-ios, joined with lipo
#
# Every slice is built for IPHONEOS_DEPLOYMENT_TARGET. The slices are static libraries, which are
# not linked here: -Wl,-application_extension belongs to the Network Extension target that links
# them (Xcode adds it when "Require Only App-Extension-Safe API" is set on that target).
#
# Needs macOS with Xcode (xcodebuild, lipo) and rustup. Run on the developer's Mac; the project's
# Linux build machine cannot run it.
#
# Usage: ios/build-xcframework.sh [--debug] [--deployment-target VERSION]
#   --debug                       unoptimised build (default: release)
#   --deployment-target VERSION   minimum iOS version (default 15.0: from iOS 15 a Network
#                                 Extension may use 50 MiB)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
LIB="libnetswitch.a"
FRAMEWORK="$HERE/NetswitchFFI.xcframework"
SWIFT_TARGET="$HERE/Sources/Netswitch"
PROFILE="release"
PROFILE_ARGS=(--release)
DEPLOYMENT_TARGET="15.0"
DEVICE_TARGET="aarch64-apple-ios"
SIM_TARGETS=(aarch64-apple-ios-sim x86_64-apple-ios)

die() { printf 'build-xcframework.sh: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --debug) PROFILE="debug"; PROFILE_ARGS=() ;;
        --deployment-target)
            [ $# -ge 2 ] || die "--deployment-target needs a version"
            DEPLOYMENT_TARGET="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

[ "$(uname -s)" = "Darwin" ] || die "needs macOS with Xcode (xcodebuild, lipo); this is $(uname -s)"
for tool in cargo xcodebuild lipo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
for file in NetswitchFFI.h NetswitchFFI.modulemap Netswitch.swift; do
    [ -f "$ROOT/bindings/swift/$file" ] || die "missing bindings/swift/$file (run scripts/gen-bindings)"
done

if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup target list --installed)"
    for target in "$DEVICE_TARGET" "${SIM_TARGETS[@]}"; do
        grep -qx "$target" <<<"$installed" || rustup target add "$target"
    done
fi

export IPHONEOS_DEPLOYMENT_TARGET="$DEPLOYMENT_TARGET"

cd "$ROOT"
for target in "$DEVICE_TARGET" "${SIM_TARGETS[@]}"; do
    echo "build-xcframework.sh: cargo build --lib --target $target ($PROFILE, iOS $DEPLOYMENT_TARGET)"
    cargo build --lib "${PROFILE_ARGS[@]}" --target "$target"
done

WORK="$ROOT/target/xcframework"
rm -rf "$WORK"
mkdir -p "$WORK/simulator"
lipo -create \
    "$ROOT/target/${SIM_TARGETS[0]}/$PROFILE/$LIB" \
    "$ROOT/target/${SIM_TARGETS[1]}/$PROFILE/$LIB" \
    -output "$WORK/simulator/$LIB"

# Headers in a NetswitchFFI/ subfolder: clang finds include/NetswitchFFI/module.modulemap for
# `import NetswitchFFI`, and the module map cannot clash with other XCFrameworks' module maps.
HEADERS="$WORK/headers"
mkdir -p "$HEADERS/NetswitchFFI"
cp "$ROOT/bindings/swift/NetswitchFFI.h" "$HEADERS/NetswitchFFI/"
cp "$ROOT/bindings/swift/NetswitchFFI.modulemap" "$HEADERS/NetswitchFFI/module.modulemap"

rm -rf "$FRAMEWORK"
xcodebuild -create-xcframework \
    -library "$ROOT/target/$DEVICE_TARGET/$PROFILE/$LIB" -headers "$HEADERS" \
    -library "$WORK/simulator/$LIB" -headers "$HEADERS" \
    -output "$FRAMEWORK"

# The Swift target compiles the generated bindings next to the glue. A copy (git-ignored), not a
# symlink: a link out of the package root breaks as soon as ios/ is vendored on its own.
cp "$ROOT/bindings/swift/Netswitch.swift" "$SWIFT_TARGET/Netswitch.swift"

echo "build-xcframework.sh: wrote $FRAMEWORK and $SWIFT_TARGET/Netswitch.swift"
