// The netswitch AAR: the generated Kotlin bindings (../../bindings/kotlin, used in place), the
// Android glue (src/main/kotlin), JNA, and libnetswitch.so for three ABIs built by
// ../build-rust.sh (cargo ndk) into src/main/jniLibs before every build.
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.netswitch.android"
    compileSdk = 35

    defaultConfig {
        // 26: NetworkCallback registration and requestNetwork with a Handler, java.time (the
        // bindings' timestamps); Network.bindSocket(FileDescriptor) is 23. Nothing needs more: the
        // bindings use android.system.SystemCleaner only on API 34+ and JNA's cleaner below (see
        // the annotation dependency). Permissions per API level: src/main/AndroidManifest.xml.
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            // The generated bindings stay where scripts/gen-bindings writes them: not copied.
            java.srcDirs("src/main/kotlin", "../../bindings/kotlin")
            jniLibs.srcDirs("src/main/jniLibs")
        }
        getByName("test") {
            java.srcDirs("src/test/kotlin")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_17)
    }
}

dependencies {
    // uniffi's Kotlin bindings call the Rust library through JNA; @aar brings JNA's own
    // libjnidispatch.so for every ABI. 5.13.0 is the version the bindings are tested with.
    implementation("net.java.dev.jna:jna:5.13.0@aar")
    // The bindings' async methods (startSocks) are suspend functions.
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.0")
    // @RequiresApi(UPSIDE_DOWN_CAKE) in the bindings: they free Rust objects through
    // android.system.SystemCleaner from API 34 on (it exists since 33, but uniffi skips 33, where
    // some builds do not support it) and through JNA's cleaner on API 26-33.
    implementation("androidx.annotation:annotation:1.9.1")

    // The same JVM unit tests scripts/android-glue-test runs (plain Kotlin core only).
    testImplementation("junit:junit:4.13.2")
    testImplementation("org.jetbrains.kotlin:kotlin-test-junit:2.1.0")
}

// Build the Rust library for every ABI before each build (cargo is incremental).
val buildRust by tasks.registering(Exec::class) {
    description = "Builds libnetswitch.so with cargo ndk into src/main/jniLibs"
    // android/ (this module's parent), also when an app includes the module into its own build.
    workingDir = projectDir.parentFile
    commandLine("./build-rust.sh")
}
tasks.named("preBuild") { dependsOn(buildRust) }
