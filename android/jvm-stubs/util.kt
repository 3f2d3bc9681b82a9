// Compile-only JVM stand-ins for the few Android SDK members the glue uses (android/netswitch/src/main/kotlin/dev/netswitch/android/*.kt, android/sample/*.kt), so scripts/android-glue-test can check that the glue still compiles against the current generated bindings. Never run; not part of the AAR. Signatures follow the Android SDK as far as the glue needs them.
@file:Suppress("unused", "UNUSED_PARAMETER")
package android.util
object Log { @JvmStatic fun w(t: String, m: String): Int = 0; @JvmStatic fun i(t: String, m: String): Int = 0; @JvmStatic fun d(t: String, m: String): Int = 0; @JvmStatic fun e(t: String, m: String): Int = 0 }
