package dev.netswitch.android.core

import kotlin.test.Test
import kotlin.test.assertEquals

class DebouncerTest {
    private val applies = ArrayList<Long>()

    private fun debouncer(s: FakeScheduler) = Debouncer(s, windowMillis = 1_000, maxWaitMillis = 3_000) { applies += s.now() }

    @Test
    fun aBurstGivesOneApplyPlusTheTrailingReapply() {
        val s = FakeScheduler()
        val d = debouncer(s)
        repeat(10) {
            d.update()
            s.advanceBy(50)          // 10 updates, 50 ms apart: all inside the window
        }
        assertEquals(emptyList(), applies, "nothing applied during the burst")
        s.advanceBy(10_000)
        // Last update at t=450: apply at 1450, re-apply at 2450, then nothing more.
        assertEquals(listOf(1_450L, 2_450L), applies)
        assertEquals(0, s.pending())
    }

    @Test
    fun aSingleUpdateIsAppliedAfterTheWindowAndReappliedOnce() {
        val s = FakeScheduler()
        val d = debouncer(s)
        s.advanceBy(5_000)
        d.update()
        s.advanceBy(999)
        assertEquals(emptyList(), applies)
        s.advanceBy(1)
        assertEquals(listOf(6_000L), applies)
        s.advanceBy(60_000)
        assertEquals(listOf(6_000L, 7_000L), applies)
    }

    @Test
    fun anUpdateBeforeTheReapplyReplacesIt() {
        val s = FakeScheduler()
        val d = debouncer(s)
        d.update()
        s.advanceBy(1_500)           // applied at 1000, re-apply due at 2000
        d.update()                   // t=1500: a new change
        s.advanceBy(10_000)
        assertEquals(listOf(1_000L, 2_500L, 3_500L), applies)
    }

    @Test
    fun anEndlessStreamIsStillAppliedEveryMaxWait() {
        val s = FakeScheduler()
        val d = debouncer(s)
        repeat(20) {                 // an update every 500 ms for 10 s: never quiet for 1 s
            d.update()
            s.advanceBy(500)
        }
        assertEquals(listOf(3_000L, 6_000L, 9_000L), applies)
    }

    @Test
    fun closeCancelsPendingAppliesAndLaterUpdates() {
        val s = FakeScheduler()
        val d = debouncer(s)
        d.update()
        s.advanceBy(500)
        d.close()
        d.update()
        s.advanceBy(10_000)
        assertEquals(emptyList(), applies)
    }

    @Test
    fun aCancelledTaskThatRunsAnywayDoesNothing() {
        val s = FakeScheduler(honourCancel = false)   // cancel() has no effect: every armed task runs
        val d = debouncer(s)
        repeat(5) {
            d.update()
            s.advanceBy(100)
        }
        s.advanceBy(10_000)
        assertEquals(listOf(1_400L, 2_400L), applies)
    }

    @Test
    fun applyRunsWithTheLatestStateAfterTheBurst() {
        val s = FakeScheduler()
        var state = 0
        val seen = ArrayList<Int>()
        val d = Debouncer(s, windowMillis = 1_000) { seen += state }
        for (i in 1..5) {
            state = i
            d.update()
            s.advanceBy(10)
        }
        s.advanceBy(5_000)
        assertEquals(listOf(5, 5), seen)
    }
}
