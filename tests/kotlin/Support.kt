// Helpers of the Kotlin tests: libc through JNA, a loopback echo server, a SOCKS5 client on a
// plain java.net.Socket, a recording listener, forced garbage collection, and a bounded wait.

import com.sun.jna.Library
import com.sun.jna.Native
import dev.netswitch.*
import java.io.DataInputStream
import java.net.InetAddress
import java.net.ServerSocket
import java.net.Socket
import java.util.Collections
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread

/** The few libc calls the tests need (Linux x86_64/aarch64 constants below). */
interface LibC : Library {
    fun socketpair(domain: Int, type: Int, protocol: Int, sv: IntArray): Int
    fun write(fd: Int, buf: ByteArray, count: Long): Long
    fun read(fd: Int, buf: ByteArray, count: Long): Long
    fun close(fd: Int): Int
    fun shutdown(fd: Int, how: Int): Int
    fun pipe(fds: IntArray): Int
    fun setsockopt(fd: Int, level: Int, name: Int, value: LongArray, len: Int): Int
    fun getpeername(fd: Int, addr: ByteArray, len: IntArray): Int

    companion object {
        val INSTANCE: LibC = Native.load("c", LibC::class.java)
        const val AF_UNIX = 1
        const val SOCK_STREAM = 1
        const val SOL_SOCKET = 1
        const val SO_RCVTIMEO = 20
        const val SHUT_WR = 1
    }
}

/** A connected AF_UNIX stream socketpair; reads on `ours` time out after 5 s. */
fun socketPair(): Pair<Int, Int> {
    val fds = IntArray(2)
    check(LibC.INSTANCE.socketpair(LibC.AF_UNIX, LibC.SOCK_STREAM, 0, fds) == 0) { "socketpair failed" }
    LibC.INSTANCE.setsockopt(fds[0], LibC.SOL_SOCKET, LibC.SO_RCVTIMEO, longArrayOf(5, 0), 16)
    return fds[0] to fds[1]
}

/** Reads exactly `n` bytes from `fd` (each read bounded by SO_RCVTIMEO); fewer on EOF/timeout. */
fun readFd(fd: Int, n: Int): ByteArray {
    val out = java.io.ByteArrayOutputStream()
    val buf = ByteArray(n)
    while (out.size() < n) {
        val got = LibC.INSTANCE.read(fd, buf, (n - out.size()).toLong())
        if (got <= 0) break
        out.write(buf, 0, got.toInt())
    }
    return out.toByteArray()
}

/** True when `fd` is a connected socket. */
fun isConnected(fd: Int): Boolean = LibC.INSTANCE.getpeername(fd, ByteArray(128), intArrayOf(128)) == 0

/** A loopback TCP server that echoes every byte and counts the clients it accepted. */
class EchoServer : AutoCloseable {
    val socket = ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"))
    val port: Int get() = socket.localPort
    val accepted = AtomicInteger(0)
    val received = AtomicInteger(0)

    init {
        thread(isDaemon = true, name = "echo-accept") {
            while (!socket.isClosed) {
                val client = try { socket.accept() } catch (e: Exception) { break }
                accepted.incrementAndGet()
                thread(isDaemon = true, name = "echo-client") {
                    client.use { c ->
                        val buf = ByteArray(4096)
                        try {
                            while (true) {
                                val n = c.getInputStream().read(buf)
                                if (n < 0) break
                                received.addAndGet(n)
                                c.getOutputStream().write(buf, 0, n)
                            }
                        } catch (e: Exception) { }
                    }
                }
            }
        }
    }

    override fun close() = socket.close()
}

/**
 * Opens a SOCKS5 CONNECT to 127.0.0.1:`port` through the proxy, offering username/password
 * when `user` is given, else "no authentication"; returns the socket and the reply code. A
 * refused method (0xFF) or failed authentication returns code -1 (no request was sent).
 */
fun socksConnect(proxyPort: Int, port: Int, user: SocksUser? = null): Pair<Socket, Int> {
    val s = Socket("127.0.0.1", proxyPort)
    s.soTimeout = 5000
    val out = s.getOutputStream()
    val input = DataInputStream(s.getInputStream())
    out.write(byteArrayOf(5, 1, if (user == null) 0 else 2))
    val method = ByteArray(2).also { input.readFully(it) }
    check(method[0] == 5.toByte()) { "method reply ${method.toList()}" }
    if (method[1] == 0xFF.toByte()) return s to -1
    if (user != null) {
        check(method[1] == 2.toByte()) { "method reply ${method.toList()}" }
        val name = user.username.toByteArray()
        val password = user.password.toByteArray()
        out.write(byteArrayOf(1, name.size.toByte()) + name + byteArrayOf(password.size.toByte()) + password)
        val status = ByteArray(2).also { input.readFully(it) }
        if (status[1] != 0.toByte()) return s to -1
    } else {
        check(method[1] == 0.toByte()) { "method reply ${method.toList()}" }
    }
    out.write(byteArrayOf(5, 1, 0, 1, 127, 0, 0, 1, (port shr 8).toByte(), port.toByte()))
    val reply = ByteArray(10).also { input.readFully(it) }
    return s to reply[1].toInt()
}

/** Sends `text` through a relayed socket and reads the echo back. */
fun echoThrough(socket: Socket, text: String): String {
    socket.getOutputStream().write(text.toByteArray())
    val back = ByteArray(text.length).also { DataInputStream(socket.getInputStream()).readFully(it) }
    return String(back)
}

/** Records every event and log record, in arrival order. */
class RecordingListener : EventListener {
    val opened: MutableList<ConnectionInfo> = Collections.synchronizedList(mutableListOf())
    val closed: MutableList<ClosedConnection> = Collections.synchronizedList(mutableListOf())
    val networkChanges: MutableList<NetworkChange> = Collections.synchronizedList(mutableListOf())
    val logs: MutableList<LogRecord> = Collections.synchronizedList(mutableListOf())
    /** Every event as "opened:ID", "closed:ID" or "network", in order. */
    val order: MutableList<String> = Collections.synchronizedList(mutableListOf())

    override fun onConnectionOpened(info: ConnectionInfo) { opened.add(info); order.add("opened:${info.id}") }
    override fun onConnectionClosed(closed: ClosedConnection) { this.closed.add(closed); order.add("closed:${closed.id}") }
    override fun onNetworkChanged(change: NetworkChange) { networkChanges.add(change); order.add("network") }
    override fun onLog(records: List<LogRecord>, dropped: ULong) { logs.addAll(records) }

    fun closedEvent(id: ULong): ClosedConnection? = synchronized(closed) { closed.firstOrNull { it.id == id } }
    fun openedEvent(id: ULong): ConnectionInfo? = synchronized(opened) { opened.firstOrNull { it.id == id } }
    fun hasLog(predicate: (LogRecord) -> Boolean): Boolean = synchronized(logs) { logs.any(predicate) }
}

/** A manager with `listener` subscribed (the subscription lasts as long as the manager). */
fun managerWith(config: NetswitchConfig, platform: PlatformInterface?, listener: EventListener): ConnectionManager {
    val m = ConnectionManager(config, platform)
    m.subscribe(listener)
    return m
}

/**
 * Runs the garbage collector until `released` holds (the tests wait for the debug record a Rust
 * object logs when its last reference goes away); false after 30 s.
 */
fun collectGarbageUntil(released: () -> Boolean): Boolean {
    val deadline = System.currentTimeMillis() + 30_000
    while (System.currentTimeMillis() < deadline) {
        System.gc()
        if (released()) return true
        Thread.sleep(20)
    }
    return released()
}

/** Records every socket it is offered (fd, interface, action, connected yet?) and answers `answer`. */
class RecordingPlatform(private val answer: () -> BindDecision) : PlatformInterface {
    data class Offer(val fd: Int, val iface: String, val type: NetworkType, val action: BindAction, val connected: Boolean)
    val offers: MutableList<Offer> = Collections.synchronizedList(mutableListOf())

    override fun bindSocket(fd: Int, `interface`: NetworkInterface, action: BindAction): BindDecision {
        offers.add(Offer(fd, `interface`.name, `interface`.networkType, action, isConnected(fd)))
        return answer()
    }

    override suspend fun resolve(name: String, `interface`: NetworkInterface, wantIpv4: Boolean, wantIpv6: Boolean): HostResolution =
        HostResolution.ResolveYourself
}

/** Waits up to `ms` for `condition`; returns whether it held. */
fun waitFor(ms: Long = 5000, condition: () -> Boolean): Boolean {
    val deadline = System.currentTimeMillis() + ms
    while (System.currentTimeMillis() < deadline) {
        if (condition()) return true
        Thread.sleep(10)
    }
    return condition()
}

/** A snapshot with only the loopback interface "lo" (its real index), typed ethernet, as default. */
fun loopbackSnapshot(): InterfaceSnapshot {
    val index = java.net.NetworkInterface.getByName("lo").index.toUInt()
    return InterfaceSnapshot(
        interfaces = listOf(NetworkInterface(name = "lo", index = index, networkType = NetworkType.ETHERNET, addresses = listOf("127.0.0.1/8"))),
        defaultIndex = index,
    )
}

/** A config whose sockets to loopback are offered to the platform (the tests' "network"). */
fun loopbackConfig() = NetswitchConfig(offerLoopbackSockets = true, connectTimeoutMs = 2000uL)

/** A loopback UDP server that echoes every datagram. */
class UdpEchoServer : AutoCloseable {
    val socket = java.net.DatagramSocket(0, InetAddress.getByName("127.0.0.1"))
    val port: Int get() = socket.localPort

    init {
        thread(isDaemon = true, name = "udp-echo") {
            val buf = ByteArray(2048)
            while (!socket.isClosed) {
                val packet = java.net.DatagramPacket(buf, buf.size)
                try { socket.receive(packet); socket.send(packet) } catch (e: Exception) { break }
            }
        }
    }

    override fun close() = socket.close()
}

/**
 * Opens a SOCKS5 UDP ASSOCIATE (no authentication) announcing `client`'s address; returns the
 * control connection and the relay's UDP address.
 */
fun socksUdpAssociate(proxyPort: Int, client: java.net.DatagramSocket): Pair<Socket, java.net.InetSocketAddress> {
    val s = Socket("127.0.0.1", proxyPort)
    s.soTimeout = 5000
    val out = s.getOutputStream()
    val input = DataInputStream(s.getInputStream())
    out.write(byteArrayOf(5, 1, 0))
    input.readFully(ByteArray(2))
    val port = client.localPort
    out.write(byteArrayOf(5, 3, 0, 1, 127, 0, 0, 1, (port shr 8).toByte(), port.toByte()))
    val reply = ByteArray(10).also { input.readFully(it) }
    check(reply[1] == 0.toByte()) { "UDP ASSOCIATE reply ${reply.toList()}" }
    val relayPort = ((reply[8].toInt() and 0xff) shl 8) or (reply[9].toInt() and 0xff)
    return s to java.net.InetSocketAddress(InetAddress.getByAddress(reply.copyOfRange(4, 8)), relayPort)
}

/** Sends `payload` to 127.0.0.1:`port` through a SOCKS UDP relay; returns the payload of the reply. */
fun udpThroughRelay(client: java.net.DatagramSocket, relay: java.net.InetSocketAddress, port: Int, payload: String): String {
    val header = byteArrayOf(0, 0, 0, 1, 127, 0, 0, 1, (port shr 8).toByte(), port.toByte())
    val datagram = header + payload.toByteArray()
    client.send(java.net.DatagramPacket(datagram, datagram.size, relay))
    val buf = ByteArray(2048)
    val reply = java.net.DatagramPacket(buf, buf.size)
    client.soTimeout = 5000
    client.receive(reply)
    return String(buf, header.size, reply.length - header.size)
}
