// See AndroidStubs.kt: a JVM stand-in for androidx.annotation.RequiresApi.

package androidx.annotation

annotation class RequiresApi(val value: Int)
