package dev.netswitch.android.core

import dev.netswitch.ConnectionOptions
import dev.netswitch.NetswitchConfig
import dev.netswitch.NetworkStrategy
import dev.netswitch.NetworkStrategy.DEFAULT
import dev.netswitch.NetworkStrategy.FALLBACK
import dev.netswitch.NetworkStrategy.HYBRID
import dev.netswitch.NetworkType
import dev.netswitch.NetworkType.CELLULAR
import dev.netswitch.NetworkType.ETHERNET
import dev.netswitch.NetworkType.OTHER
import dev.netswitch.NetworkType.WIFI
import kotlin.test.Test
import kotlin.test.assertEquals

class KeepUpTest {
    private fun keep(strategy: NetworkStrategy?, types: List<NetworkType> = emptyList(), fallback: List<NetworkType> = emptyList()) =
        networkTypesToKeepUp(listOf(NetworkPolicy(strategy, types, fallback)))

    private val cell = setOf(CELLULAR)
    private val none = emptySet<NetworkType>()

    @Test
    fun defaultStrategyKeepsCellularOnlyWhenItsTypesNameIt() {
        assertEquals(none, keep(null))
        assertEquals(none, keep(DEFAULT))
        assertEquals(none, keep(DEFAULT, fallback = listOf(CELLULAR)), "DEFAULT ignores fallback types")
        assertEquals(none, keep(DEFAULT, listOf(WIFI)))
        assertEquals(cell, keep(DEFAULT, listOf(CELLULAR)))
        assertEquals(cell, keep(DEFAULT, listOf(WIFI, CELLULAR)))
    }

    @Test
    fun hybridKeepsCellularUnlessItsTypesLeaveItOut() {
        assertEquals(cell, keep(HYBRID))
        assertEquals(cell, keep(HYBRID, listOf(CELLULAR)))
        assertEquals(cell, keep(HYBRID, listOf(WIFI, CELLULAR)))
        assertEquals(none, keep(HYBRID, listOf(WIFI, ETHERNET)))
        assertEquals(none, keep(HYBRID, listOf(WIFI), fallback = listOf(CELLULAR)), "HYBRID ignores fallback types")
    }

    @Test
    fun fallbackKeepsCellularWhenPrimaryOrFallbackMayBeCellular() {
        assertEquals(cell, keep(FALLBACK), "fallback = every other network")
        assertEquals(cell, keep(FALLBACK, listOf(WIFI)), "fallback = every network but Wi-Fi")
        assertEquals(cell, keep(FALLBACK, listOf(WIFI), listOf(CELLULAR)))
        assertEquals(cell, keep(FALLBACK, listOf(CELLULAR), listOf(WIFI)))
        assertEquals(cell, keep(FALLBACK, fallback = listOf(CELLULAR)))
        assertEquals(none, keep(FALLBACK, listOf(WIFI), listOf(ETHERNET)))
        assertEquals(none, keep(FALLBACK, fallback = listOf(WIFI, OTHER)), "default, then Wi-Fi or other")
    }

    @Test
    fun onlyCellularIsEverRequested() {
        assertEquals(none, keep(HYBRID, listOf(WIFI, ETHERNET, OTHER)))
        assertEquals(none, keep(DEFAULT, listOf(ETHERNET)))
        assertEquals(none, networkTypesToKeepUp(emptyList()))
    }

    @Test
    fun perConnectionOptionsAddTheirNeeds() {
        val config = NetswitchConfig(networkStrategy = DEFAULT)
        val plain = NetworkPolicy.of(config)
        assertEquals(NetworkPolicy(DEFAULT, emptyList(), emptyList()), plain)
        val viaCell = NetworkPolicy.of(ConnectionOptions(networkType = listOf(CELLULAR)), config)
        assertEquals(NetworkPolicy(DEFAULT, listOf(CELLULAR), emptyList()), viaCell)
        assertEquals(none, networkTypesToKeepUp(listOf(plain)))
        assertEquals(cell, networkTypesToKeepUp(listOf(plain, viaCell)))
        // Null option fields take the config's.
        val fallbackConfig = NetswitchConfig(networkStrategy = FALLBACK, networkType = listOf(WIFI), fallbackNetworkType = listOf(ETHERNET))
        assertEquals(NetworkPolicy(FALLBACK, listOf(WIFI), listOf(ETHERNET)), NetworkPolicy.of(ConnectionOptions(), fallbackConfig))
        assertEquals(
            NetworkPolicy(HYBRID, listOf(WIFI), listOf(ETHERNET)),
            NetworkPolicy.of(ConnectionOptions(networkStrategy = HYBRID), fallbackConfig),
        )
    }

    /** Records every request filed and withdrawn; refuses while [refuse] is set. */
    private class FakeRequester : NetworkRequester {
        val log = ArrayList<String>()
        var refuse = false
        val open = HashSet<NetworkType>()

        override fun request(type: NetworkType): AutoCloseable? {
            if (refuse) {
                log += "refused $type"
                return null
            }
            log += "request $type"
            check(open.add(type)) { "$type requested twice without a release" }
            return AutoCloseable {
                log += "release $type"
                check(open.remove(type)) { "$type released twice" }
            }
        }
    }

    @Test
    fun keeperRequestsOnceAndReleasesWhenTheStrategyNoLongerNeedsIt() {
        val r = FakeRequester()
        val k = NetworkKeeper(r)
        k.keepUp(keep(DEFAULT))
        assertEquals(emptyList(), r.log, "plain DEFAULT requests nothing")
        k.keepUp(keep(FALLBACK))
        k.keepUp(keep(HYBRID))                  // still cellular: no second request
        assertEquals(listOf("request CELLULAR"), r.log)
        assertEquals(cell, k.held())
        k.keepUp(keep(HYBRID, listOf(WIFI)))    // cellular no longer used
        assertEquals(listOf("request CELLULAR", "release CELLULAR"), r.log)
        assertEquals(none, k.held())
        assertEquals(none, r.open)
        k.keepUp(keep(FALLBACK))
        assertEquals(listOf("request CELLULAR", "release CELLULAR", "request CELLULAR"), r.log)
    }

    @Test
    fun closeReleasesEverythingAndLaterUpdatesDoNothing() {
        val r = FakeRequester()
        val k = NetworkKeeper(r)
        k.keepUp(keep(HYBRID))
        k.close()
        assertEquals(listOf("request CELLULAR", "release CELLULAR"), r.log)
        assertEquals(none, r.open)
        k.keepUp(keep(HYBRID))
        k.close()
        assertEquals(listOf("request CELLULAR", "release CELLULAR"), r.log, "nothing after close, close idempotent")
    }

    @Test
    fun aRefusedRequestIsNotHeldAndIsRetriedOnTheNextUpdate() {
        val r = FakeRequester()
        val k = NetworkKeeper(r)
        r.refuse = true
        k.keepUp(keep(FALLBACK))
        assertEquals(none, k.held())
        r.refuse = false
        k.keepUp(keep(FALLBACK))
        assertEquals(listOf("refused CELLULAR", "request CELLULAR"), r.log)
        assertEquals(cell, k.held())
        k.close()
        assertEquals(none, r.open)
    }
}
