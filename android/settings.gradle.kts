// Gradle build of the netswitch Android library (AAR). Not run on the project's build machine
// (no Android SDK there); see the "Android" section of ../README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "netswitch-android"
include(":netswitch")
