package dev.netswitch.android.core

/**
 * A virtual clock for tests: tasks run only inside [advanceBy], in due order, with [now] set to
 * their due time. With `honourCancel = false` cancelled tasks still run (as when a Handler task
 * had already started), to check that the code under test guards against that itself.
 */
class FakeScheduler(private val honourCancel: Boolean = true) : Scheduler {
    private class Task(val due: Long, val seq: Long, val body: () -> Unit) {
        var cancelled = false
    }

    private var clock = 0L
    private var seq = 0L
    private val tasks = ArrayList<Task>()

    override fun now(): Long = clock

    override fun schedule(delayMillis: Long, task: () -> Unit): Cancellable {
        require(delayMillis >= 0) { "negative delay $delayMillis" }
        val t = Task(clock + delayMillis, seq++, task)
        tasks += t
        return Cancellable { t.cancelled = true }
    }

    /** Tasks that would still run (not cancelled). */
    fun pending(): Int = tasks.count { !it.cancelled || !honourCancel }

    /** Moves the clock forward by `millis`, running every task that falls due on the way. */
    fun advanceBy(millis: Long) {
        val end = clock + millis
        while (true) {
            val next = tasks.filter { it.due <= end }.minWithOrNull(compareBy({ it.due }, { it.seq })) ?: break
            tasks.remove(next)
            clock = next.due
            if (!next.cancelled || !honourCancel) next.body()
        }
        clock = end
    }
}
