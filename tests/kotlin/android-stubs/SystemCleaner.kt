// See AndroidStubs.kt: a JVM stand-in for android.system.SystemCleaner (never called on the JVM).

package android.system

object SystemCleaner {
    fun cleaner(): java.lang.ref.Cleaner = java.lang.ref.Cleaner.create()
}
