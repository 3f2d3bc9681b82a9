// Plain Kotlin (no Android classes): coalesces bursts of network callbacks into few snapshot
// pushes. Unit-tested on the JVM with a fake scheduler by scripts/android-glue-test.

package dev.netswitch.android.core

/** A pending [Scheduler.schedule] task that can be cancelled. */
fun interface Cancellable {
    /** Stops the task if it has not started; harmless after it ran. */
    fun cancel()
}

/** Runs tasks later on one thread (Android: a `Handler`; tests: a fake clock). */
interface Scheduler {
    /** Monotonic milliseconds. */
    fun now(): Long

    /** Runs `task` on the scheduler's thread after `delayMillis` (>= 0). */
    fun schedule(delayMillis: Long, task: () -> Unit): Cancellable
}

/**
 * Debounces network-change notifications (Android reports one change as several callbacks, and
 * the first report after start is a burst, some of it about "phantom" networks).
 *
 * - [update] marks the state changed. [apply] runs once the updates have been quiet for
 *   `windowMillis`, or at the latest `maxWaitMillis` after the first unapplied update, so an
 *   endless stream of updates still gets applied.
 * - `windowMillis` after each apply, [apply] runs once more (the trailing re-apply), unless new
 *   updates arrived meanwhile (their own apply comes instead): state that settled late, such as an
 *   interface index that was not resolvable yet, is picked up without a new callback.
 *
 * So a burst of N updates within the window gives exactly two applies: one `windowMillis` after
 * the last update and the re-apply `windowMillis` after that. [apply] always runs on the
 * scheduler's thread; [update] and [close] may be called from any thread.
 */
class Debouncer(
    private val scheduler: Scheduler,
    private val windowMillis: Long = 1_000,
    private val maxWaitMillis: Long = 3 * windowMillis,
    private val apply: () -> Unit,
) {
    private val lock = Any()
    private var firstPending: Long? = null
    private var timer: Cancellable? = null
    private var generation = 0L
    private var closed = false

    init {
        require(windowMillis >= 0 && maxWaitMillis >= windowMillis) {
            "need 0 <= windowMillis ($windowMillis) <= maxWaitMillis ($maxWaitMillis)"
        }
    }

    /** Something changed: (re)starts the quiet-period timer. Ignored after [close]. */
    fun update() = synchronized(lock) {
        if (closed) return@synchronized
        val now = scheduler.now()
        val first = firstPending ?: now.also { firstPending = it }
        val due = minOf(now + windowMillis, first + maxWaitMillis)
        arm(maxOf(0, due - now), reapply = false)
    }

    /** Cancels pending applies; later [update]s do nothing. Idempotent. */
    fun close() = synchronized(lock) {
        closed = true
        generation++
        timer?.cancel()
        timer = null
        firstPending = null
    }

    private fun arm(delay: Long, reapply: Boolean) {
        timer?.cancel()
        val armed = ++generation
        timer = scheduler.schedule(delay) { fire(armed, reapply) }
    }

    private fun fire(armed: Long, reapply: Boolean) {
        synchronized(lock) {
            // A task that was cancelled after it had already started, or superseded: do nothing.
            if (closed || armed != generation) return
            timer = null
            if (!reapply) {
                firstPending = null
                arm(windowMillis, reapply = true)
            }
        }
        apply()
    }
}
