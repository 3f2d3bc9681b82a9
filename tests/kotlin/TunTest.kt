// The packet tunnel over the FFI: ConnectionManager.startTun on a real Linux TUN fd.
//
// The errors of startTun (a bad fd stays the caller's, bad options name the option) run anywhere.
// The real tunnel needs root: the test runs this class again in a JVM inside its own network
// namespace (`unshare -n`), where it builds
//
//   this JVM's netns ("device"):  app sockets -> tunk0 172.19.0.1/30 (route 10.77.1.2/32) ->
//                                 startTun reads tunk0 -> netswitch's sockets, bound by the
//                                 platform callback to vethk0 10.77.1.1/24
//   a thread's own netns:         vethk1 10.77.1.2/24: TCP and UDP echo on port 7007
//
// so nothing leaves the namespaces the test created. The server thread enters its namespace with
// unshare(CLONE_NEWNET) (a network namespace is per thread); its sockets stay there.

import com.sun.jna.Library
import com.sun.jna.Native
import com.sun.jna.NativeLong
import dev.netswitch.*
import java.io.DataInputStream
import java.io.File
import java.net.DatagramPacket
import java.net.DatagramSocket
import java.net.InetAddress
import java.net.InetSocketAddress
import java.net.ServerSocket
import java.net.Socket
import java.net.SocketException
import java.net.SocketTimeoutException
import java.util.Collections
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit
import kotlin.concurrent.thread
import kotlin.test.Test
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import org.junit.Assume

/** The libc calls of the TUN test (Linux constants below). */
interface TunLibC : Library {
    fun open(path: String, flags: Int): Int
    fun ioctl(fd: Int, request: NativeLong, ifreq: ByteArray): Int
    fun close(fd: Int): Int
    fun unshare(flags: Int): Int
    fun gettid(): Int
    fun geteuid(): Int
    fun setsockopt(fd: Int, level: Int, name: Int, value: ByteArray, len: Int): Int
    fun socketpair(domain: Int, type: Int, protocol: Int, sv: IntArray): Int
    fun send(fd: Int, buf: ByteArray, len: Long, flags: Int): Long
    fun pipe(fds: IntArray): Int

    companion object {
        val INSTANCE: TunLibC = Native.load("c", TunLibC::class.java)
        const val O_RDWR = 2
        const val O_CLOEXEC = 0x80000
        const val TUNSETIFF = 0x400454ca
        const val IFF_TUN: Short = 0x0001
        const val IFF_NO_PI: Short = 0x1000
        const val CLONE_NEWNET = 0x40000000
        const val SOL_SOCKET = 1
        const val SO_BINDTODEVICE = 25
        const val AF_UNIX = 1
        const val SOCK_STREAM = 1
        const val SOCK_DGRAM = 2
    }
}

/** Set (to "private") on the JVM this test starts inside its own network namespace. */
internal const val NETNS_PROPERTY = "netswitch.test.netns"
/** Printed by the real test in the namespace; the outer test checks that it ran, not skipped. */
internal const val RAN_MARKER = "TUN-TEST-RAN-IN-NAMESPACE"

internal const val SERVER = "10.77.1.2"
internal const val PORT = 7007

class TunTest {
    private val libc = TunLibC.INSTANCE

    @Test fun aBadFdIsATypedErrorAndStaysWithTheCaller() {
        ConnectionManager(NetswitchConfig(), null).use { m ->
            val options = TunOptions(ipv4 = "172.19.0.1/30")
            val negative = assertFailsWith<NetswitchException.InvalidArgument> { m.startTun(-1, options) }
            assertEquals("fd", negative.argument)

            val pipe = IntArray(2)
            assertEquals(0, libc.pipe(pipe))
            val fifo = assertFailsWith<NetswitchException.InvalidArgument> { m.startTun(pipe[0], options) }
            assertEquals("fd", fifo.argument)
            assertTrue(fifo.reason.contains("not a TUN device"), fifo.reason)
            assertEquals(0, libc.close(pipe[0]), "the fd was not taken")
            libc.close(pipe[1])

            val stream = IntArray(2)
            assertEquals(0, libc.socketpair(TunLibC.AF_UNIX, TunLibC.SOCK_STREAM, 0, stream))
            val socket = assertFailsWith<NetswitchException.InvalidArgument> { m.startTun(stream[0], options) }
            assertEquals("fd", socket.argument)
            assertEquals(0, libc.close(stream[0]), "the fd was not taken")
            libc.close(stream[1])
        }
    }

    @Test fun badOptionsNameTheOptionAndTheFdIsClosed() {
        ConnectionManager(NetswitchConfig(), null).use { m ->
            for ((options, argument) in listOf(
                TunOptions(ipv4 = "172.19.0.1") to "options.ipv4",
                TunOptions(ipv4 = "172.19.0.2/30") to "options.ipv4",   // no room for the NAT address
                TunOptions(ipv4 = "172.19.0.1/30", ipv6 = "fdfe::1") to "options.ipv6",
                TunOptions(ipv4 = "172.19.0.1/30", mtu = 100u) to "options.mtu",
                TunOptions(ipv4 = "172.19.0.1/30", udpTimeoutMs = 0uL) to "options.udp_timeout_ms",
            )) {
                // A datagram socketpair passes the fd check; its peer shows whether it was closed.
                val pair = IntArray(2)
                assertEquals(0, libc.socketpair(TunLibC.AF_UNIX, TunLibC.SOCK_DGRAM, 0, pair))
                val e = assertFailsWith<NetswitchException.InvalidArgument> { m.startTun(pair[0], options) }
                assertEquals(argument, e.argument, e.reason)
                assertEquals(-1L, libc.send(pair[1], ByteArray(1), 1, 0), "$options: netswitch closed the fd it was given")
                libc.close(pair[1])
            }
        }
    }

    @Test fun aRealTunCarriesTcpAndUdpAndStopClosesIt() {
        if (System.getProperty(NETNS_PROPERTY) != "private") {
            cannotRun()?.let { reason ->
                println("SKIP: TunTest.aRealTunCarriesTcpAndUdpAndStopClosesIt: $reason")
                Assume.assumeTrue(reason, false)
            }
            return runInNamespace("TunTest", "aRealTunCarriesTcpAndUdpAndStopClosesIt")
        }
        if (!selected("aRealTunCarriesTcpAndUdpAndStopClosesIt")) return
        println(RAN_MARKER)
        runCommand("ip", "link", "set", "lo", "up")
        EchoNamespace().use { server ->
            val tunFd = createTun("tunk0")
            runCommand("ip", "addr", "add", "172.19.0.1/30", "dev", "tunk0")
            runCommand("ip", "link", "set", "tunk0", "up")
            runCommand("ip", "route", "add", "$SERVER/32", "dev", "tunk0")
            runCommand("ip", "link", "add", "vethk0", "type", "veth", "peer", "name", "vethk1", "netns", "${server.tid}")
            runCommand("ip", "addr", "add", "10.77.1.1/24", "dev", "vethk0")
            runCommand("ip", "link", "set", "vethk0", "up")
            server.run("ip", "link", "set", "lo", "up")
            server.run("ip", "addr", "add", "$SERVER/24", "dev", "vethk1")
            server.run("ip", "link", "set", "vethk1", "up")
            server.listen()

            val platform = VethPlatform("vethk0")
            ConnectionManager(NetswitchConfig(connectTimeoutMs = 5000uL), platform).use { m ->
                val index = java.net.NetworkInterface.getByName("vethk0").index.toUInt()
                m.updateInterfaces(InterfaceSnapshot(
                    interfaces = listOf(NetworkInterface(name = "vethk0", index = index, networkType = NetworkType.WIFI, addresses = listOf("10.77.1.1/24"))),
                    defaultIndex = index,
                ))
                // The decision hook: every flow is asked about; port PORT + 1 is blocked.
                val asked = java.util.concurrent.CopyOnWriteArrayList<TunFlowInfo>()
                val decider = object : TunFlowDecider {
                    override fun decide(flow: TunFlowInfo): TunFlowDecision {
                        asked.add(flow)
                        return TunFlowDecision(block = flow.destinationPort == (PORT + 1).toUShort(), label = "kotlin app")
                    }
                }
                val tun = m.startTunWithDecider(tunFd, TunOptions(ipv4 = "172.19.0.1/30"), decider)
                assertTrue(!tun.isFinished())

                // TCP: 256 KiB each way through the kernel stack of the tunnel.
                val app = Socket()
                app.soTimeout = 10_000
                app.connect(InetSocketAddress(SERVER, PORT), 10_000)
                val sent = ByteArray(256 * 1024) { (it * 31 + 7).toByte() }
                val writer = thread(name = "tun-app-writer") { app.getOutputStream().write(sent) }
                val back = ByteArray(sent.size).also { DataInputStream(app.getInputStream()).readFully(it) }
                writer.join()
                assertContentEquals(sent, back, "the echo came back through the tunnel")
                assertEquals(listOf("/10.77.1.1"), server.tcpPeers.map { it.toString() },
                    "the server saw netswitch's socket on vethk0, not the app's")
                val info = m.connections().single { it.protocol == TransportProtocol.TCP }
                assertEquals("$SERVER:$PORT", info.destination)
                assertEquals("vethk0", info.`interface`)
                assertEquals("kotlin app: default", info.decision, "the tracker shows the host's decision")
                assertTrue(platform.offered.contains("vethk0"), "netswitch offered its socket: ${platform.offered}")

                // UDP: a datagram and its reply, from the server's address.
                DatagramSocket().use { udp ->
                    udp.soTimeout = 10_000
                    val ping = "ping through the tunnel".toByteArray()
                    udp.send(DatagramPacket(ping, ping.size, InetSocketAddress(SERVER, PORT)))
                    val reply = DatagramPacket(ByteArray(2048), 2048)
                    udp.receive(reply)
                    assertEquals("ping through the tunnel", String(reply.data, 0, reply.length))
                    assertEquals(InetSocketAddress(SERVER, PORT), reply.socketAddress)
                }

                val counters = tun.counters()
                println("TUN counters: $counters, NAT entries ${tun.natEntries()}, UDP sessions ${tun.udpSessions()}")
                assertEquals(1uL, counters.tcpConnections, "$counters")
                assertEquals(1uL, counters.udpDatagrams, "$counters")
                assertTrue(counters.bytesIn >= sent.size.toULong() && counters.bytesOut >= sent.size.toULong(), "$counters")
                assertTrue(counters.packetsIn > 0uL && counters.packetsOut > 0uL, "$counters")
                assertEquals(0uL, counters.droppedMalformed + counters.droppedBadChecksum + counters.droppedNoFlow, "$counters")
                assertEquals(1uL, tun.natEntries())
                assertEquals(1uL, tun.udpSessions())
                assertTrue(asked.any { it.protocol == TransportProtocol.TCP && it.destinationIp == SERVER && it.destinationPort == PORT.toUShort() && it.sourceIp == "172.19.0.1" }, "asked: $asked")
                assertTrue(asked.any { it.protocol == TransportProtocol.UDP && it.destinationPort == PORT.toUShort() }, "asked: $asked")

                // A blocked flow: the kernel accepted it for the app, netswitch resets it.
                Socket().use { blocked ->
                    blocked.soTimeout = 10_000
                    // The reset may even beat the app's wakeup from connect(): then connect reports it.
                    val read = try {
                        blocked.connect(InetSocketAddress(SERVER, PORT + 1), 10_000)
                        blocked.getInputStream().read()
                    } catch (e: SocketException) { -1 }
                    assertEquals(-1, read, "the blocked connection was reset")
                }
                assertTrue(waitFor(10_000) { tun.counters().tcpBlocked == 1uL }, "${tun.counters()}")
                assertEquals(1uL, tun.counters().tcpConnections, "a blocked connection is not handed to the manager")

                // stop(): the app's connection ends, the tunnel finishes, netswitch closes the fd
                // (a TUN device that is not persistent goes away with its last fd).
                tun.stop()
                val end = try { app.getInputStream().read() } catch (e: SocketTimeoutException) { -2 } catch (e: SocketException) { -1 }
                assertEquals(-1, end, "the app's connection ended (EOF or reset) when the tunnel stopped")
                app.close()
                assertTrue(waitFor(10_000) { tun.isFinished() }, "the tunnel still reads after stop()")
                assertTrue(waitFor(10_000) { !File("/sys/class/net/tunk0").exists() }, "tunk0 still exists: the fd was not closed")
                assertTrue(waitFor { m.connections().isEmpty() }, "connections left: ${m.connections()}")
                assertEquals(0uL, tun.udpSessions())
                assertEquals(counters.tcpConnections, tun.counters().tcpConnections, "counters stay readable")
                tun.stop()  // idempotent
                tun.close()

                // shutdown() stops the tunnels the manager still runs and closes their fds.
                val second = m.startTun(createTun("tunk1"), TunOptions(ipv4 = "172.19.0.1/30"))
                m.shutdown()
                assertTrue(waitFor(10_000) { second.isFinished() }, "shutdown() left a tunnel reading")
                assertTrue(waitFor(10_000) { !File("/sys/class/net/tunk1").exists() }, "tunk1 still exists after shutdown()")
                // After shutdown: ShutDown, and the fd handed over is closed all the same.
                assertFailsWith<NetswitchException.ShutDown> { m.startTun(createTun("tunk2"), TunOptions(ipv4 = "172.19.0.1/30")) }
                assertTrue(waitFor(10_000) { !File("/sys/class/net/tunk2").exists() }, "tunk2 still exists after a refused startTun")
            }
        }
    }

    /**
     * `TunOptions.stack = USERSPACE`: smoltcp inside netswitch terminates the app's TCP (no
     * listener on the tunnel address), with the same TCP echo and UDP datagram as the kernel stack.
     */
    @Test fun theUserspaceStackCarriesTcpAndUdp() {
        if (System.getProperty(NETNS_PROPERTY) != "private") {
            cannotRun()?.let { reason ->
                println("SKIP: TunTest.theUserspaceStackCarriesTcpAndUdp: $reason")
                Assume.assumeTrue(reason, false)
            }
            return runInNamespace("TunTest", "theUserspaceStackCarriesTcpAndUdp")
        }
        if (!selected("theUserspaceStackCarriesTcpAndUdp")) return
        println(RAN_MARKER)
        runCommand("ip", "link", "set", "lo", "up")
        val server = "10.77.2.2"
        EchoNamespace(server).use { echo ->
            val tunFd = createTun("tunu0")
            runCommand("ip", "addr", "add", "172.19.0.5/30", "dev", "tunu0")
            runCommand("ip", "link", "set", "tunu0", "up")
            runCommand("ip", "route", "add", "$server/32", "dev", "tunu0")
            runCommand("ip", "link", "add", "vethu0", "type", "veth", "peer", "name", "vethu1", "netns", "${echo.tid}")
            runCommand("ip", "addr", "add", "10.77.2.1/24", "dev", "vethu0")
            runCommand("ip", "link", "set", "vethu0", "up")
            echo.run("ip", "link", "set", "lo", "up")
            echo.run("ip", "addr", "add", "$server/24", "dev", "vethu1")
            echo.run("ip", "link", "set", "vethu1", "up")
            echo.listen()
            ConnectionManager(NetswitchConfig(connectTimeoutMs = 5000uL), VethPlatform("vethu0")).use { m ->
                val index = java.net.NetworkInterface.getByName("vethu0").index.toUInt()
                m.updateInterfaces(InterfaceSnapshot(
                    interfaces = listOf(NetworkInterface(name = "vethu0", index = index, networkType = NetworkType.WIFI, addresses = listOf("10.77.2.1/24"))),
                    defaultIndex = index,
                ))
                val tun = m.startTun(tunFd, TunOptions(ipv4 = "172.19.0.5/30", mtu = 1500u, stack = TunStack.USERSPACE))
                Socket().use { app ->
                    app.soTimeout = 10_000
                    app.connect(InetSocketAddress(server, PORT), 10_000)
                    assertEquals("/172.19.0.5", app.localAddress.toString(), "the app's side is the tunnel")
                    val sent = ByteArray(256 * 1024) { (it * 13 + 5).toByte() }
                    val writer = thread(name = "tun-userspace-writer") { app.getOutputStream().write(sent); app.shutdownOutput() }
                    val back = ByteArray(sent.size).also { DataInputStream(app.getInputStream()).readFully(it) }
                    writer.join()
                    assertContentEquals(sent, back, "the echo came back through smoltcp")
                    assertEquals(-1, app.getInputStream().read(), "the server's FIN reached the app after its own")
                }
                assertEquals(listOf("/10.77.2.1"), echo.tcpPeers.map { it.toString() }, "netswitch dialed over vethu0")
                DatagramSocket().use { udp ->
                    udp.soTimeout = 10_000
                    val ping = "userspace stack".toByteArray()
                    udp.send(DatagramPacket(ping, ping.size, InetSocketAddress(server, PORT)))
                    val reply = DatagramPacket(ByteArray(2048), 2048)
                    udp.receive(reply)
                    assertEquals("userspace stack", String(reply.data, 0, reply.length))
                }
                val counters = tun.counters()
                println("userspace TUN counters: $counters")
                assertEquals(1uL, counters.tcpConnections, "$counters")
                assertEquals(1uL, counters.udpDatagrams, "$counters")
                tun.stop()
                assertTrue(waitFor(10_000) { tun.isFinished() }, "the tunnel still reads after stop()")
                assertTrue(waitFor(10_000) { !File("/sys/class/net/tunu0").exists() }, "tunu0 still exists: the fd was not closed")
            }
        }
    }
}

/** Why the real tunnel cannot be tested here, or null. */
internal fun cannotRun(): String? {
    if (TunLibC.INSTANCE.geteuid() != 0) return "needs root (a TUN device and network namespaces)"
    if (!File("/dev/net/tun").exists()) return "/dev/net/tun does not exist"
    for (tool in listOf(listOf("ip", "-V"), listOf("unshare", "--version"), listOf("nsenter", "--version"))) {
        val ok = runCatching { ProcessBuilder(tool).redirectErrorStream(true).start().waitFor() == 0 }.getOrDefault(false)
        if (!ok) return "`${tool[0]}` is not available"
    }
    return null
}

/** Set on the namespaced JVM: the one root test it runs (the others return at once). */
internal const val ONLY_PROPERTY = "netswitch.test.only"

/** In the namespaced JVM: whether `test` is the root test it was started for. */
internal fun selected(test: String): Boolean = System.getProperty(ONLY_PROPERTY).let { it == null || it == test }

/** Runs the root test `test` of `testClass` again in a JVM inside a new network namespace and checks that it ran and passed. */
internal fun runInNamespace(testClass: String, test: String) {
    val java = File(System.getProperty("java.home"), "bin/java").path
    val command = listOf("unshare", "-n", "--", java, "-D$NETNS_PROPERTY=private", "-D$ONLY_PROPERTY=$test",
        "-Djna.library.path=${System.getProperty("jna.library.path") ?: ""}",
        "-cp", System.getProperty("java.class.path"), "org.junit.runner.JUnitCore", testClass)
    val process = ProcessBuilder(command).redirectErrorStream(true).start()
    val output = StringBuilder()
    val reader = thread(name = "tun-netns-output") {
        process.inputStream.bufferedReader().forEachLine { line -> println("  [netns] $line"); output.appendLine(line) }
    }
    val finished = process.waitFor(300, TimeUnit.SECONDS)
    if (!finished) process.destroyForcibly()
    reader.join(5000)
    assertTrue(finished, "the namespaced $testClass did not finish in 300 s")
    assertTrue(output.contains(RAN_MARKER), "the namespaced $testClass did not run the real tunnel")
    assertEquals(0, process.exitValue(), "the namespaced $testClass failed (output above)")
}

/** Creates the TUN device `name` (raw IP: IFF_TUN | IFF_NO_PI) and returns its fd; the device goes away with the fd. */
internal fun createTun(name: String): Int {
    val fd = TunLibC.INSTANCE.open("/dev/net/tun", TunLibC.O_RDWR or TunLibC.O_CLOEXEC)
    check(fd >= 0) { "open /dev/net/tun: errno ${Native.getLastError()}" }
    val ifreq = ByteArray(40)
    name.toByteArray().copyInto(ifreq)
    val flags = (TunLibC.IFF_TUN.toInt() or TunLibC.IFF_NO_PI.toInt())
    ifreq[16] = (flags and 0xff).toByte()
    ifreq[17] = (flags shr 8).toByte()
    check(TunLibC.INSTANCE.ioctl(fd, NativeLong(TunLibC.TUNSETIFF.toLong()), ifreq) == 0) { "TUNSETIFF $name: errno ${Native.getLastError()}" }
    return fd
}

/** Runs a command and fails the test with its output when it fails. */
internal fun runCommand(vararg command: String) {
    val process = ProcessBuilder(*command).redirectErrorStream(true).start()
    val output = process.inputStream.bufferedReader().readText()
    check(process.waitFor() == 0) { "${command.joinToString(" ")}: $output" }
}

/** Binds every socket netswitch offers to `device` (SO_BINDTODEVICE), as a host binds to its physical network. */
internal class VethPlatform(private val device: String) : PlatformInterface {
    val offered: MutableList<String> = Collections.synchronizedList(mutableListOf())

    override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction): BindDecision {
        offered.add(`interface`.name)
        val name = (device + "\u0000").toByteArray()
        if (TunLibC.INSTANCE.setsockopt(fd, TunLibC.SOL_SOCKET, TunLibC.SO_BINDTODEVICE, name, name.size) != 0) {
            throw NetswitchException.PlatformRefused(device, "SO_BINDTODEVICE: errno ${Native.getLastError()}")
        }
        return BindDecision.BOUND
    }

    override suspend fun resolve(name: String, `interface`: NetworkInterface, wantIpv4: Boolean, wantIpv6: Boolean): HostResolution =
        HostResolution.ResolveYourself
}

/**
 * A thread in a network namespace of its own with TCP and UDP echo on [server]:$PORT (once
 * [listen] is called, after its vethk1 is configured with [run]). Every socket it opens lives in
 * that namespace.
 */
internal class EchoNamespace(private val server: String = SERVER) : AutoCloseable {
    private val ready = CompletableFuture<Int>()
    private val sockets = CompletableFuture<Pair<ServerSocket, DatagramSocket>>()
    private val go = CompletableFuture<Unit>()
    val tcpPeers: MutableList<InetAddress> = Collections.synchronizedList(mutableListOf())
    val tid: Int

    init {
        thread(isDaemon = true, name = "tun-echo-netns") {
            val libc = TunLibC.INSTANCE
            if (libc.unshare(TunLibC.CLONE_NEWNET) != 0) {
                ready.completeExceptionally(IllegalStateException("unshare(CLONE_NEWNET): errno ${Native.getLastError()}"))
                return@thread
            }
            ready.complete(libc.gettid())
            go.get()
            val bound = runCatching {
                ServerSocket(PORT, 50, InetAddress.getByName(server)) to DatagramSocket(InetSocketAddress(server, PORT))
            }
            bound.exceptionOrNull()?.let { sockets.completeExceptionally(it); return@thread }
            val (tcp, udp) = bound.getOrThrow()
            sockets.complete(tcp to udp)
            thread(isDaemon = true, name = "tun-echo-udp") {
                val buf = ByteArray(2048)
                while (!udp.isClosed) {
                    val packet = DatagramPacket(buf, buf.size)
                    try { udp.receive(packet); udp.send(packet) } catch (e: Exception) { break }
                }
            }
            while (!tcp.isClosed) {
                val client = try { tcp.accept() } catch (e: Exception) { break }
                tcpPeers.add(client.inetAddress)
                thread(isDaemon = true, name = "tun-echo-tcp") {
                    client.use { c ->
                        val buf = ByteArray(16384)
                        try {
                            while (true) {
                                val n = c.getInputStream().read(buf)
                                if (n < 0) break
                                c.getOutputStream().write(buf, 0, n)
                            }
                        } catch (e: Exception) { }
                    }
                }
            }
        }
        tid = ready.get(10, TimeUnit.SECONDS)
    }

    /** Runs a command inside the thread's namespace. */
    fun run(vararg command: String) = runCommand("nsenter", "--net=/proc/${ProcessHandle.current().pid()}/task/$tid/ns/net", *command)

    /** Opens the echo sockets (the address must be configured). */
    fun listen() {
        go.complete(Unit)
        sockets.get(10, TimeUnit.SECONDS)
    }

    override fun close() {
        go.complete(Unit)
        sockets.getNow(null)?.let { (tcp, udp) -> tcp.close(); udp.close() }
    }
}
