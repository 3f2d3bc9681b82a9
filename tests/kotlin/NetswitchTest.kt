// Drives the real netswitch library from Kotlin on the JVM through the generated bindings:
// SOCKS, socket offering to the platform, fd hand-over, typed errors, events and logs.

import dev.netswitch.*
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import java.net.Socket
import kotlinx.coroutines.runBlocking

class NetswitchTest {
    private val libc = LibC.INSTANCE

    @Test fun socksConnectionIsListedWithCountersAndClosesByIdAndAll() {
        EchoServer().use { echo ->
            val listener = RecordingListener()
            managerWith(NetswitchConfig(), null, listener).use { m ->
                val socks = runBlocking { m.startSocks("127.0.0.1:0", listOf()) }
                assertTrue(socks.localAddress().startsWith("127.0.0.1:"), socks.localAddress())
                val (client, code) = socksConnect(socks.port().toInt(), echo.port)
                assertEquals(0, code, "SOCKS reply code")
                client.getOutputStream().write("hello".toByteArray())
                val back = ByteArray(5).also { java.io.DataInputStream(client.getInputStream()).readFully(it) }
                assertEquals("hello", String(back))

                assertTrue(waitFor { m.connections().singleOrNull()?.let { it.bytesUp == 5uL && it.bytesDown == 5uL } == true },
                    "counters: ${m.connections()}")
                val info = m.connections().single()
                assertEquals("127.0.0.1:${echo.port}", info.destination)
                assertEquals(TransportProtocol.TCP, info.protocol)
                assertEquals(ConnectionState.RELAYING, info.state)

                assertTrue(m.closeConnection(info.id))
                assertEquals(-1, runCatching { client.getInputStream().read() }.getOrDefault(-1), "client sees the close")
                assertTrue(waitFor { m.connections().isEmpty() })
                assertFalse(m.closeConnection(info.id), "closing a gone id")
                // SOCKS connections reach the listener too, with their final counters.
                assertTrue(waitFor { listener.closedEvent(info.id) != null }, "no close event for a SOCKS connection")
                val closed = listener.closedEvent(info.id)!!
                assertTrue(closed.error is NetswitchException.Closed, "error: ${closed.error}")
                assertEquals(5uL, closed.bytesUp)
                assertEquals(5uL, closed.bytesDown)
                assertTrue(m.traffic().sumOf { it.bytesUp.toLong() } >= 5L, "closed bytes stay in traffic(): ${m.traffic()}")

                val more = (1..3).map { socksConnect(socks.port().toInt(), echo.port).first }
                assertTrue(waitFor { m.connections().size == 3 })
                assertEquals(3uL, m.closeAll())
                more.forEach { s -> assertEquals(-1, runCatching { s.getInputStream().read() }.getOrDefault(-1)) }
                assertTrue(waitFor { m.connections().isEmpty() })
                socks.stop()
                assertTrue(runCatching { java.net.Socket("127.0.0.1", socks.port().toInt()).close() }.isFailure
                    || waitFor { runCatching { java.net.Socket("127.0.0.1", socks.port().toInt()).close() }.isFailure },
                    "stopped server still accepts")
                socks.close()
            }
        }
    }

    @Test fun everyOutboundSocketIsOfferedBeforeConnectWithTheChosenInterface() {
        EchoServer().use { echo ->
            val platform = RecordingPlatform { BindDecision.BOUND }
            val listener = RecordingListener()
            managerWith(loopbackConfig(), platform, listener).use { m ->
                val change = m.updateInterfaces(loopbackSnapshot())
                assertEquals(listOf("lo"), change.added)
                // Through SOCKS.
                val socks = runBlocking { m.startSocks("127.0.0.1:0", listOf()) }
                val (client, code) = socksConnect(socks.port().toInt(), echo.port)
                assertEquals(0, code)
                // Through a handed-over fd.
                val (ours, theirs) = socketPair()
                val id = m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
                assertEquals(5L, libc.write(ours, "fd-ok".toByteArray(), 5))
                assertEquals("fd-ok", String(readFd(ours, 5)))

                assertEquals(2, platform.offers.size, "offers: ${platform.offers}")
                for (offer in platform.offers) {
                    assertEquals("lo", offer.iface)
                    assertEquals(NetworkType.ETHERNET, offer.type)
                    assertEquals(BindAction.PROTECT, offer.action, "default interface: protect, not bind")
                    assertFalse(offer.connected, "offered after connect: $offer")
                    assertTrue(offer.fd > 2, "fd ${offer.fd}")
                }
                val info = m.connections().first { it.id == id }
                assertEquals("lo", info.`interface`)
                assertEquals(NetworkType.ETHERNET, info.networkType)

                // Close the fd connection: the listener gets its final counters; traffic adds up.
                libc.shutdown(ours, LibC.SHUT_WR)
                assertTrue(waitFor { listener.closedEvent(id) != null }, "no close event")
                val closed = listener.closedEvent(id)!!
                assertNull(closed.error, "clean end: ${closed.error}")
                assertEquals(5uL, closed.bytesUp)
                assertEquals(5uL, closed.bytesDown)
                assertEquals(NetworkType.ETHERNET, closed.networkType)
                val ethernet = m.traffic().single { it.networkType == NetworkType.ETHERNET }
                assertTrue(ethernet.bytesUp >= 5uL && ethernet.bytesDown >= 5uL, "traffic ${m.traffic()}")
                libc.close(ours)
                client.close()
                socks.close()
            }
        }
    }

    @Test fun refusingOrThrowingPlatformFailsTheDialTypedAndSendsNothing() {
        val refusing = object : PlatformInterface {
            override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction): BindDecision =
                throw NetswitchException.PlatformRefused(`interface`.name, "protect returned false")
            override suspend fun resolve(name: String, `interface`: NetworkInterface, wantIpv4: Boolean, wantIpv6: Boolean) =
                HostResolution.ResolveYourself
        }
        val throwing = object : PlatformInterface {
            override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction): BindDecision =
                throw IllegalStateException("VpnService is gone")
            override suspend fun resolve(name: String, `interface`: NetworkInterface, wantIpv4: Boolean, wantIpv6: Boolean) =
                HostResolution.ResolveYourself
        }
        for ((platform, expected) in listOf(refusing to "protect returned false", throwing to "VpnService is gone")) {
            EchoServer().use { echo ->
                val listener = RecordingListener()
                managerWith(loopbackConfig(), platform, listener).use { m ->
                    m.updateInterfaces(loopbackSnapshot())
                    val (ours, theirs) = socketPair()
                    val id = m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
                    assertTrue(waitFor { listener.closedEvent(id) != null }, "no close event")
                    val error = listener.closedEvent(id)!!.error
                    assertTrue(error is NetswitchException.PlatformRefused, "error: $error")
                    assertEquals("lo", error.`interface`)
                    assertTrue(error.reason.contains(expected), error.reason)
                    assertEquals(0, readFd(ours, 1).size, "client socket closed")
                    libc.close(ours)

                    val socks = runBlocking { m.startSocks("127.0.0.1:0", listOf()) }
                    val (client, code) = socksConnect(socks.port().toInt(), echo.port)
                    assertTrue(code != 0, "SOCKS must report the failure, got $code")
                    client.close()
                    socks.close()
                    Thread.sleep(100)
                    assertEquals(0, echo.accepted.get(), "a byte reached the destination")
                }
            }
        }
    }

    @Test fun relayTcpFdRelaysASocketpairAndReportsClosedById() {
        EchoServer().use { echo ->
            val listener = RecordingListener()
            managerWith(NetswitchConfig(), null, listener).use { m ->
                val (ours, theirs) = socketPair()
                val id = m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", ConnectionOptions(connectTimeoutMs = 1000uL))
                val payload = ByteArray(100_000) { (it % 251).toByte() }
                var sent = 0
                val echoed = java.io.ByteArrayOutputStream()
                val t = kotlin.concurrent.thread { echoed.write(readFd(ours, payload.size)) }
                while (sent < payload.size) {
                    val n = libc.write(ours, payload.copyOfRange(sent, payload.size), (payload.size - sent).toLong())
                    assertTrue(n > 0, "write failed")
                    sent += n.toInt()
                }
                t.join(10_000)
                assertTrue(echoed.toByteArray().contentEquals(payload), "echoed ${echoed.size()} bytes")
                assertTrue(waitFor { m.connections().any { it.id == id && it.bytesDown == payload.size.toULong() } })

                assertTrue(m.closeConnection(id))
                assertTrue(waitFor { listener.closedEvent(id) != null })
                val closed = listener.closedEvent(id)!!
                assertTrue(closed.error is NetswitchException.Closed, "error ${closed.error}")
                assertEquals(payload.size.toULong(), closed.bytesUp)
                assertEquals(payload.size.toULong(), closed.bytesDown)
                assertEquals(0, readFd(ours, 1).size, "our end sees EOF")
                libc.close(ours)
            }
        }
    }

    @Test fun notAStreamSocketIsATypedErrorAndTheFdStaysOurs() {
        ConnectionManager(NetswitchConfig(), null).use { m ->
            val fds = IntArray(2)
            assertEquals(0, libc.pipe(fds))
            val e = assertFailsWith<NetswitchException.InvalidArgument> { m.relayTcpFd(fds[0], "127.0.0.1:9", null) }
            assertEquals("fd", e.argument)
            assertTrue(e.reason.contains("not a socket"), e.reason)
            assertEquals(0, libc.close(fds[0]), "fd was not taken")
            libc.close(fds[1])
            val bad = assertFailsWith<NetswitchException.InvalidArgument> { m.relayTcpFd(-1, "127.0.0.1:9", null) }
            assertEquals("fd", bad.argument)
            val dest = assertFailsWith<NetswitchException.InvalidArgument> { m.relayTcpFd(0, "no-port", null) }
            assertEquals("destination", dest.argument)
        }
    }

    @Test fun thereIsNoUtunFdOutsideApple() {
        // The scan looks at every open fd (sockets included) and finds no utun control socket.
        assertNull(findUtunFd())
    }

    @Test fun invalidConfigNamesTheField() {
        val e = assertFailsWith<NetswitchException.InvalidConfig> {
            ConnectionManager(NetswitchConfig(connectTimeoutMs = 0uL), null)
        }
        assertEquals("connect_timeout", e.field)
        val handshake = assertFailsWith<NetswitchException.InvalidConfig> {
            ConnectionManager(NetswitchConfig(socksHandshakeTimeoutMs = 0uL), null)
        }
        assertEquals("socks.handshake_timeout", handshake.field)
        val unknown = assertFailsWith<NetswitchException.InvalidConfig> { configFromJson("""{"bogus": 1}""") }
        assertEquals("bogus", unknown.field)
        val duration = assertFailsWith<NetswitchException.InvalidConfig> { configFromJson("""{"fallback_delay": "soon"}""") }
        assertEquals("fallback_delay", duration.field)
        val parsed = configFromJson("""{"connect_timeout": "2s", "network_strategy": "fallback", "network_type": ["wifi", "cellular"]}""")
        assertEquals(2000uL, parsed.connectTimeoutMs)
        assertEquals(NetworkStrategy.FALLBACK, parsed.networkStrategy)
        assertEquals(listOf(NetworkType.WIFI, NetworkType.CELLULAR), parsed.networkType)
        assertEquals(300uL, defaultConfig().fallbackDelayMs)
        assertEquals(NetswitchConfig().connectTimeoutMs, defaultConfig().connectTimeoutMs)
    }

    @Test fun badSnapshotIsATypedError() {
        ConnectionManager(NetswitchConfig(), null).use { m ->
            val e = assertFailsWith<NetswitchException.InvalidArgument> {
                m.updateInterfaces(InterfaceSnapshot(listOf(NetworkInterface("wlan0", 0u, NetworkType.WIFI)), null))
            }
            assertEquals("snapshot", e.argument)
            val noNet = m.updateInterfaces(InterfaceSnapshot(listOf(), null))
            assertTrue(noNet.noNetwork)
        }
    }

    @Test fun callsAfterShutdownAreTypedErrorsAndAfterCloseIllegalState() {
        EchoServer().use { echo ->
            val m = ConnectionManager(NetswitchConfig(), null)
            val subscription = m.subscribe(RecordingListener())
            val socks = runBlocking { m.startSocks("127.0.0.1:0") }
            val (ours, theirs) = socketPair()
            m.relayTcpFd(theirs, "127.0.0.1:${echo.port}", null)
            assertTrue(waitFor { m.connections().size == 1 })
            m.shutdown()
            m.shutdown()
            assertTrue(m.isShutDown())
            assertFalse(socks.isRunning(), "shutdown stops the manager's SOCKS servers")
            assertFalse(subscription.isActive(), "shutdown ends subscriptions")
            assertEquals(0, readFd(ours, 1).size, "live connection closed by shutdown")
            assertTrue(waitFor { m.connections().isEmpty() })
            val (ours2, theirs2) = socketPair()
            assertFailsWith<NetswitchException.ShutDown> { m.relayTcpFd(theirs2, "127.0.0.1:${echo.port}", null) }
            assertFailsWith<NetswitchException.ShutDown> { runBlocking { m.startSocks("127.0.0.1:0", listOf()) } }
            assertFailsWith<NetswitchException.ShutDown> { m.updateInterfaces(loopbackSnapshot()) }
            assertFailsWith<NetswitchException.ShutDown> { m.subscribe(RecordingListener()) }
            assertEquals(0uL, m.closeAll())
            m.close()
            // A destroyed object: the bindings refuse before netswitch is reached.
            val destroyed = assertFailsWith<IllegalStateException> { m.connections() }
            assertTrue(destroyed.message!!.contains("destroyed"), destroyed.message)
            assertFailsWith<IllegalStateException> { m.relayTcpFd(theirs2, "127.0.0.1:${echo.port}", null) }
            assertFailsWith<IllegalStateException> { runBlocking { m.startSocks("127.0.0.1:0") } }
            m.close()
            socks.close()
            listOf(ours, ours2, theirs2).forEach { libc.close(it) }
        }
    }

    @Test fun closingWithoutShutdownShutsDown() {
        EchoServer().use { echo ->
            val m = ConnectionManager(NetswitchConfig(), null)
            val socks = runBlocking { m.startSocks("127.0.0.1:0", listOf()) }
            val (client, code) = socksConnect(socks.port().toInt(), echo.port)
            assertEquals(0, code)
            m.close()
            assertEquals(-1, runCatching { client.getInputStream().read() }.getOrDefault(-1), "connection closed")
            assertFalse(socks.isRunning(), "the server stopped with its manager")
            assertTrue(waitFor { runCatching { Socket("127.0.0.1", socks.port().toInt()).close() }.isFailure },
                "the listener is closed")
            socks.close()
        }
    }

    @Test fun listenerReceivesLogRecords() {
        val listener = RecordingListener()
        managerWith(NetswitchConfig(), null, listener).use { m ->
            val socks = runBlocking { m.startSocks("127.0.0.1:0", listOf(SocksUser("user", "secret-pw"))) }
            val address = socks.localAddress()
            assertTrue(waitFor { synchronized(listener.logs) { listener.logs.any { it.message.contains("SOCKS5 server listening") && it.message.contains(address) } } },
                "logs: ${listener.logs.map { it.message }}")
            val record = synchronized(listener.logs) { listener.logs.first { it.message.contains("SOCKS5 server listening") } }
            assertEquals(LogLevel.INFO, record.level)
            assertTrue(record.target.startsWith("netswitch"), record.target)
            assertFalse(synchronized(listener.logs) { listener.logs.any { it.message.contains("secret-pw") } }, "password logged")
            socks.close()
        }
    }
}
