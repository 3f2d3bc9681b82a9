// Compile-time stand-ins for the three Android APIs the generated bindings reference because
// uniffi.toml sets `android_cleaner = true` (the committed bindings are the Android ones). On the
// JVM, SDK_INT = 0 makes the bindings take their java.lang.ref.Cleaner path, as on old Android.
// Only scripts/kotlin-test uses these; an Android app has the real classes.

@file:Suppress("unused")

package android.os

object Build {
    object VERSION {
        @JvmField val SDK_INT: Int = 0
    }

    object VERSION_CODES {
        const val UPSIDE_DOWN_CAKE: Int = 34
    }
}
