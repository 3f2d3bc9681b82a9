// Subscriptions: several listeners each get every event (connection opened / closed, network
// changes, logs); a listener that throws or blocks holds up nobody; cancel() and the handle's
// garbage collection; setLogLevel at runtime.

import dev.netswitch.*
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.AfterTest
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking

class EventsTest {
    @AfterTest fun restoreLogLevel() = setLogLevel(LogLevel.INFO)

    /** Throws from every callback, counting the calls. */
    private class ThrowingListener : EventListener {
        val calls = AtomicInteger(0)
        override fun onConnectionOpened(info: ConnectionInfo) { calls.incrementAndGet(); throw IllegalStateException("opened") }
        override fun onConnectionClosed(closed: ClosedConnection) { calls.incrementAndGet(); throw RuntimeException("closed") }
        override fun onNetworkChanged(change: NetworkChange) { calls.incrementAndGet(); throw RuntimeException("network") }
        override fun onLog(records: List<LogRecord>, dropped: ULong) { throw RuntimeException("log") }
    }

    /** Blocks in every callback until `release` opens. */
    private class BlockingListener(private val release: CountDownLatch) : EventListener {
        val entered = AtomicInteger(0)
        private fun block() { entered.incrementAndGet(); release.await(60, TimeUnit.SECONDS) }
        override fun onConnectionOpened(info: ConnectionInfo) = block()
        override fun onConnectionClosed(closed: ClosedConnection) = block()
        override fun onNetworkChanged(change: NetworkChange) = block()
        override fun onLog(records: List<LogRecord>, dropped: ULong) = block()
    }

    @Test fun everySubscriberGetsEveryEventWhileOthersThrowOrBlock() {
        EchoServer().use { echo ->
            val release = CountDownLatch(1)
            val blocking = BlockingListener(release)
            val throwing = ThrowingListener()
            val first = RecordingListener()
            val second = RecordingListener()
            ConnectionManager(loopbackConfig(), RecordingPlatform { BindDecision.BOUND }).use { m ->
                m.subscribe(blocking)
                m.subscribe(throwing)
                m.subscribe(first)
                m.subscribe(second)
                val lo = loopbackSnapshot()
                m.updateInterfaces(lo)
                assertTrue(waitFor { blocking.entered.get() >= 1 }, "the blocking listener is stuck")
                for (listener in listOf(first, second)) {
                    assertTrue(waitFor { listener.networkChanges.size == 1 }, "network event")
                    val change = listener.networkChanges[0]
                    assertEquals(listOf("lo"), change.interfaces.map { it.name })
                    assertEquals("lo", change.defaultInterface)
                    assertNull(change.previousDefault)
                    assertTrue(change.defaultChanged)
                    assertEquals(listOf("lo"), change.added)
                    assertEquals(0uL, change.closed)
                }

                // A connection over "lo" (the default), then a new default: it closes, and why.
                val socks = runBlocking { m.startSocks("127.0.0.1:0", listOf()) }
                val (client, code) = socksConnect(socks.port().toInt(), echo.port)
                assertEquals(0, code)
                assertEquals("relayed", echoThrough(client, "relayed"))
                val id = m.connections().single().id
                for (listener in listOf(first, second)) {
                    assertTrue(waitFor { listener.openedEvent(id) != null }, "open event")
                    val opened = listener.openedEvent(id)!!
                    assertEquals("lo", opened.`interface`)
                    assertEquals(NetworkType.ETHERNET, opened.networkType)
                    assertEquals(ConnectionState.RELAYING, opened.state)
                    assertEquals("127.0.0.1:${echo.port}", opened.destination)
                }
                val loIndex = lo.interfaces[0].index
                val wifi = NetworkInterface(name = "wlan0", index = 900001u, networkType = NetworkType.WIFI)
                m.updateInterfaces(InterfaceSnapshot(listOf(lo.interfaces[0], wifi), 900001u))
                assertEquals(-1, runCatching { client.getInputStream().read() }.getOrDefault(-1), "closed by the change")
                for (listener in listOf(first, second)) {
                    assertTrue(waitFor { listener.networkChanges.size == 2 && listener.closedEvent(id) != null })
                    val change = listener.networkChanges[1]
                    assertEquals("wlan0", change.defaultInterface)
                    assertEquals("lo", change.previousDefault)
                    assertEquals(1uL, change.closed)
                    assertEquals(1uL, change.closedDefaultChanged)
                    assertEquals(0uL, change.closedInterfaceGone)
                    assertTrue(listener.closedEvent(id)!!.error is NetswitchException.Closed)
                }

                // A connection over wlan0 (the platform "binds" it), then wlan0 goes away.
                val (ours, theirs) = socketPair()
                val overWifi = m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
                assertTrue(waitFor { first.openedEvent(overWifi) != null })
                assertEquals("wlan0", first.openedEvent(overWifi)!!.`interface`)
                m.updateInterfaces(InterfaceSnapshot(listOf(lo.interfaces[0]), loIndex))
                for (listener in listOf(first, second)) {
                    assertTrue(waitFor { listener.networkChanges.size == 3 && listener.closedEvent(overWifi) != null })
                    val change = listener.networkChanges[2]
                    assertEquals(listOf("wlan0"), change.removed)
                    assertEquals(1uL, change.closedInterfaceGone, "closed because wlan0 is gone: $change")
                    assertEquals(0uL, change.closedDefaultChanged)
                    // Each connection: opened before closed, in order.
                    val events = listener.order.filter { it.endsWith(":$id") || it.endsWith(":$overWifi") }
                    assertEquals(listOf("opened:$id", "closed:$id", "opened:$overWifi", "closed:$overWifi"), events)
                }
                assertEquals(1, blocking.entered.get(), "the blocking listener is still in its first call")
                assertTrue(waitFor { throwing.calls.get() >= 7 }, "a throwing listener keeps being called: ${throwing.calls.get()}")
                release.countDown()
                assertTrue(waitFor { blocking.entered.get() >= 7 }, "the blocked listener catches up: ${blocking.entered.get()}")
                libc.close(ours)
                client.close()
            }
        }
    }

    @Test fun udpSessionsReportTheirOpenAndClose() {
        UdpEchoServer().use { echo ->
            val listener = RecordingListener()
            managerWith(NetswitchConfig(), null, listener).use { m ->
                val socks = runBlocking { m.startSocks("127.0.0.1:0", listOf()) }
                java.net.DatagramSocket(0, java.net.InetAddress.getByName("127.0.0.1")).use { client ->
                    val (control, relay) = socksUdpAssociate(socks.port().toInt(), client)
                    assertEquals("datagram", udpThroughRelay(client, relay, echo.port, "datagram"))
                    assertTrue(waitFor { listener.opened.any { it.protocol == TransportProtocol.UDP } }, "no UDP open event")
                    val opened = listener.opened.single { it.protocol == TransportProtocol.UDP }
                    assertEquals("127.0.0.1:${echo.port}", opened.destination)
                    assertEquals(ConnectionState.RELAYING, opened.state)
                    control.close() // the association ends, and its session with it
                    assertTrue(waitFor { listener.closedEvent(opened.id) != null }, "no close event for the UDP session")
                    assertEquals(listOf("opened:${opened.id}", "closed:${opened.id}"),
                        listener.order.filter { it.endsWith(":${opened.id}") })
                }
            }
        }
    }

    @Test fun cancelStopsOneSubscriptionAndIsIdempotent() {
        val kept = RecordingListener()
        val cancelled = RecordingListener()
        ConnectionManager(NetswitchConfig(), null).use { m ->
            m.subscribe(kept)
            val subscription = m.subscribe(cancelled)
            assertTrue(subscription.isActive())
            subscription.cancel()
            subscription.cancel()
            assertFalse(subscription.isActive())
            m.updateInterfaces(loopbackSnapshot())
            assertTrue(waitFor { kept.networkChanges.size == 1 })
            Thread.sleep(100)
            assertEquals(0, cancelled.networkChanges.size, "a cancelled subscription gets nothing")
            assertEquals(0uL, subscription.droppedEvents())
            subscription.close()
        }
    }

    @Test fun aSubscriptionOutlivesItsCollectedHandle() {
        val listener = RecordingListener()
        ConnectionManager(NetswitchConfig(), null).use { m ->
            setLogLevel(LogLevel.DEBUG)
            subscribeAndForget(m, listener)
            // The listener hears, through its own subscription, that the handle was released.
            assertTrue(collectGarbageUntil { listener.hasLog { it.message.contains("subscription handle released") } },
                "the handle was never collected and released")
            m.updateInterfaces(loopbackSnapshot())
            assertTrue(waitFor { listener.networkChanges.size == 1 }, "events still arrive")
        }
    }

    @Test fun setLogLevelChangesTheLevelAtRuntime() {
        EchoServer().use { echo ->
            val listener = RecordingListener()
            setLogLevel(LogLevel.INFO)
            managerWith(NetswitchConfig(), null, listener).use { m ->
                fun relayed(id: ULong) = { r: LogRecord -> r.message.contains("relaying a socket handed over") && r.message.contains("id=$id") }
                val (ours, theirs) = socketPair()
                val quiet = m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
                // An info record logged after the debug one: once it is here, the debug one would be too.
                val first = runBlocking { m.startSocks("127.0.0.1:0") }
                assertTrue(waitFor { listener.hasLog { it.message.contains("SOCKS5 server listening") && it.message.contains(first.localAddress()) } })
                assertFalse(listener.hasLog(relayed(quiet)), "a debug record at level info")

                setLogLevel(LogLevel.DEBUG)
                val (ours2, theirs2) = socketPair()
                val loud = m.relayTcpFd(theirs2, "127.0.0.1:${echo.port}", null)
                assertTrue(waitFor { listener.hasLog(relayed(loud)) }, "no debug record after setLogLevel(DEBUG)")
                val record = synchronized(listener.logs) { listener.logs.first(relayed(loud)) }
                assertEquals(LogLevel.DEBUG, record.level)
                listOf(ours, ours2).forEach { libc.close(it) }
            }
        }
    }

    private val libc = LibC.INSTANCE

    private fun subscribeAndForget(m: ConnectionManager, listener: EventListener) {
        m.subscribe(listener)
    }
}
