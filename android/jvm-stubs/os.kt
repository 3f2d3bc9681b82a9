// Compile-only JVM stand-ins for the few Android SDK members the glue uses (android/netswitch/src/main/kotlin/dev/netswitch/android/*.kt, android/sample/*.kt), so scripts/android-glue-test can check that the glue still compiles against the current generated bindings. Never run; not part of the AAR. Signatures follow the Android SDK as far as the glue needs them.
@file:Suppress("unused", "UNUSED_PARAMETER")
package android.os
object Build { object VERSION { @JvmField val SDK_INT: Int = 0 }
  object VERSION_CODES { const val UPSIDE_DOWN_CAKE: Int = 34; const val S: Int = 31 } }
open class Handler(l: Looper) { fun postDelayed(r: Runnable, d: Long): Boolean = true; fun removeCallbacks(r: Runnable) {} }
class Looper
class HandlerThread(n: String) : Thread() { val looper: Looper = Looper(); fun quitSafely(): Boolean = true }
object SystemClock { @JvmStatic fun uptimeMillis(): Long = 0 }
class ParcelFileDescriptor : java.io.Closeable {
  val fileDescriptor: java.io.FileDescriptor = java.io.FileDescriptor(); val fd: Int = 0
  fun detachFd(): Int = -1
  override fun close() {}
  companion object {
    @JvmStatic @Throws(java.io.IOException::class) fun fromFd(fd: Int): ParcelFileDescriptor = ParcelFileDescriptor()
    @JvmStatic fun adoptFd(fd: Int): ParcelFileDescriptor = ParcelFileDescriptor()
  }
}
