// swift-tools-version:5.9
// The netswitch Swift package for iOS: the Rust library as an XCFramework (binary target) and a
// Swift target with the generated bindings plus the glue (ApplePathMonitor, ApplePlatform).
// Run ./build-xcframework.sh first: it writes NetswitchFFI.xcframework and copies
// ../bindings/swift/Netswitch.swift into Sources/Netswitch/. Add this folder to an Xcode project
// as a local package and link the `Netswitch` library into the Network Extension target.
import PackageDescription

let package = Package(
    name: "Netswitch",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "Netswitch", targets: ["Netswitch"]),
    ],
    targets: [
        .binaryTarget(name: "NetswitchFFI", path: "NetswitchFFI.xcframework"),
        .target(
            name: "Netswitch",
            dependencies: ["NetswitchFFI"],
            path: "Sources/Netswitch"
        ),
    ]
)
