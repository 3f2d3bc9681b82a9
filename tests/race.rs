//! Network and address-family racing over simulated networks on loopback: each network is a
//! loopback source address with an injectable behaviour (connect delay, failure, silence).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::dial::race::{race_networks, ConnectFn, FallbackMemory, RaceNetwork, Targets, Timing};
use netswitch::dial::{AttemptError, FailureKind};
use tokio::net::{TcpListener, TcpSocket};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    /// Connects after this delay.
    Delay(Duration),
    /// Fails at once with "network unreachable".
    Fail,
    /// Never answers (until the attempt's timeout).
    Silent,
}

#[derive(Clone, Debug)]
struct SimNet {
    name: &'static str,
    source: IpAddr,
    behaviour: Behaviour,
}

impl RaceNetwork for SimNet {
    fn name(&self) -> Option<&str> {
        Some(self.name)
    }
}

fn net(name: &'static str, last_octet: u8, behaviour: Behaviour) -> SimNet {
    SimNet { name, source: IpAddr::from([127, 0, 0, last_octet]), behaviour }
}

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

fn connector() -> ConnectFn<SimNet> {
    Arc::new(|network: &SimNet, address: SocketAddr| {
        let network = network.clone();
        Box::pin(async move {
            match network.behaviour {
                Behaviour::Fail => {
                    return Err(AttemptError::Io(std::io::Error::from(
                        std::io::ErrorKind::NetworkUnreachable,
                    )))
                }
                Behaviour::Silent => {
                    tokio::time::sleep(ATTEMPT_TIMEOUT).await;
                    return Err(AttemptError::TimedOut(ATTEMPT_TIMEOUT));
                }
                Behaviour::Delay(delay) => tokio::time::sleep(delay).await,
            }
            let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            if address.is_ipv4() {
                socket.bind(SocketAddr::new(network.source, 0))?;
            }
            Ok(socket.connect(address).await?)
        })
    })
}

/// A listener that reports which source address each accepted connection came from.
async fn server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<IpAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let _ = tx.send(peer.ip());
            drop(stream);
        }
    });
    (address, rx)
}

const DELAY: Duration = Duration::from_millis(300);

/// The fallback delay and the connection-attempt delay both `DELAY`; lookups end in 10 s.
fn timing() -> Timing {
    Timing {
        fallback_delay: DELAY,
        attempt_delay: DELAY,
        resolution_delay: Duration::from_millis(50),
        deadline: tokio::time::Instant::now() + Duration::from_secs(10),
    }
}

fn fixed(addresses: &[SocketAddr]) -> Targets<SimNet> {
    Targets::Addresses(addresses.to_vec().into())
}

async fn race(
    primaries: Vec<SimNet>,
    fallbacks: Vec<SimNet>,
    address: SocketAddr,
    memory: &Arc<FallbackMemory>,
) -> (Result<netswitch::dial::race::RaceWin<SimNet>, Vec<netswitch::dial::DialAttempt>>, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        race_networks(primaries, fallbacks, fixed(&[address]), connector(), timing(), memory.clone()),
    )
    .await
    .expect("race finished");
    (result, started.elapsed())
}

#[tokio::test]
async fn fastest_primary_wins_and_fallback_never_starts() {
    let (address, mut seen) = server().await;
    let memory = Arc::new(FallbackMemory::default());
    let wifi = net("wifi0", 2, Behaviour::Delay(Duration::from_millis(50)));
    let cell = net("cell0", 3, Behaviour::Delay(Duration::ZERO));
    let (result, _) = race(vec![wifi], vec![cell], address, &memory).await;
    let win = result.unwrap();
    assert_eq!(win.network.name, "wifi0");
    assert!(!win.was_fallback);
    assert_eq!(seen.recv().await.unwrap(), IpAddr::from([127, 0, 0, 2]));
    tokio::time::sleep(DELAY * 2).await;
    assert!(seen.try_recv().is_err(), "the fallback network never dialed");
    assert!(!memory.is_active());
}

#[tokio::test]
async fn fallback_wins_after_the_delay_when_primary_is_silent() {
    let (address, mut seen) = server().await;
    let memory = Arc::new(FallbackMemory::default());
    let wifi = net("wifi0", 2, Behaviour::Silent);
    let cell = net("cell0", 3, Behaviour::Delay(Duration::ZERO));
    let (result, elapsed) = race(vec![wifi], vec![cell], address, &memory).await;
    let win = result.unwrap();
    assert_eq!(win.network.name, "cell0");
    assert!(win.was_fallback);
    assert!(elapsed >= DELAY, "fallback started before the fallback delay ({elapsed:?})");
    assert!(elapsed < ATTEMPT_TIMEOUT, "fallback waited for the primary's timeout ({elapsed:?})");
    assert_eq!(seen.recv().await.unwrap(), IpAddr::from([127, 0, 0, 3]));
    assert!(memory.is_active(), "a fallback win opens the fast-fallback window");
}

#[tokio::test]
async fn fallbacks_start_at_once_when_every_primary_fails() {
    let (address, _seen) = server().await;
    let memory = Arc::new(FallbackMemory::default());
    let primaries = vec![net("wifi0", 2, Behaviour::Fail), net("eth0", 4, Behaviour::Fail)];
    let cell = net("cell0", 3, Behaviour::Delay(Duration::ZERO));
    let (result, elapsed) = race(primaries, vec![cell], address, &memory).await;
    let win = result.unwrap();
    assert_eq!(win.network.name, "cell0");
    assert!(elapsed < DELAY, "fallback waited for the delay although every primary failed ({elapsed:?})");
    assert_eq!(win.failed.len(), 2, "both primary failures are reported");
}

#[tokio::test]
async fn fast_fallback_window_races_everything_and_ends_when_primary_recovers() {
    let (address, _seen) = server().await;
    let memory = Arc::new(FallbackMemory::default());
    // 1. Wi-Fi is silent: cellular wins after the delay and opens the window.
    let (result, _) = race(
        vec![net("wifi0", 2, Behaviour::Silent)],
        vec![net("cell0", 3, Behaviour::Delay(Duration::ZERO))],
        address,
        &memory,
    )
    .await;
    assert!(result.unwrap().was_fallback);
    assert!(memory.is_active());
    // 2. In the window, cellular starts at once: no fallback delay.
    let (result, elapsed) = race(
        vec![net("wifi0", 2, Behaviour::Silent)],
        vec![net("cell0", 3, Behaviour::Delay(Duration::ZERO))],
        address,
        &memory,
    )
    .await;
    assert_eq!(result.unwrap().network.name, "cell0");
    assert!(elapsed < DELAY, "in the fast-fallback window the fallback starts at once ({elapsed:?})");
    assert!(memory.is_active());
    // 3. Wi-Fi is back but a bit slower than cellular: cellular wins, Wi-Fi connects within the
    //    fallback delay, so the window ends.
    let (result, _) = race(
        vec![net("wifi0", 2, Behaviour::Delay(Duration::from_millis(60)))],
        vec![net("cell0", 3, Behaviour::Delay(Duration::ZERO))],
        address,
        &memory,
    )
    .await;
    assert_eq!(result.unwrap().network.name, "cell0");
    tokio::time::timeout(Duration::from_secs(2), async {
        while memory.is_active() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the window ends once the primary recovered");
    // 4. Back in normal mode: Wi-Fi wins outright and cellular is not dialed first.
    let (result, _) = race(
        vec![net("wifi0", 2, Behaviour::Delay(Duration::from_millis(60)))],
        vec![net("cell0", 3, Behaviour::Delay(Duration::ZERO))],
        address,
        &memory,
    )
    .await;
    assert_eq!(result.unwrap().network.name, "wifi0");
}

#[tokio::test]
async fn hybrid_races_all_primaries_at_once() {
    let (address, _seen) = server().await;
    let memory = Arc::new(FallbackMemory::default());
    let primaries = vec![
        net("wifi0", 2, Behaviour::Delay(Duration::from_millis(200))),
        net("cell0", 3, Behaviour::Delay(Duration::from_millis(20))),
    ];
    let (result, elapsed) = race(primaries, vec![], address, &memory).await;
    assert_eq!(result.unwrap().network.name, "cell0");
    assert!(elapsed < Duration::from_millis(200), "primaries raced concurrently ({elapsed:?})");
}

#[tokio::test]
async fn all_failing_reports_every_attempt_with_its_interface() {
    let address = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let memory = Arc::new(FallbackMemory::default());
    let (result, _) = race(
        vec![net("wifi0", 2, Behaviour::Fail)],
        vec![net("cell0", 3, Behaviour::Delay(Duration::ZERO))],
        address,
        &memory,
    )
    .await;
    let attempts = result.unwrap_err();
    let mut summary: Vec<(String, FailureKind)> =
        attempts.iter().map(|a| (a.interface.clone().unwrap(), a.error.kind())).collect();
    summary.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        summary,
        vec![
            ("cell0".to_string(), FailureKind::Refused),
            ("wifi0".to_string(), FailureKind::NetworkUnreachable)
        ]
    );
}

#[tokio::test]
async fn happy_eyeballs_second_family_after_delay_or_at_once_on_failure() {
    // A dual-stack server: v6 on ::1 (if available) and v4 on 127.0.0.1, same port not needed.
    let Ok(v6) = TcpListener::bind("[::1]:0").await else {
        println!("SKIP happy_eyeballs: no IPv6 loopback on this machine");
        return;
    };
    let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let v6_addr = v6.local_addr().unwrap();
    let v4_addr = v4.local_addr().unwrap();

    // 1. IPv6 stays silent: IPv4 starts after the family delay.
    let silent_v6: ConnectFn<SimNet> = Arc::new(move |network: &SimNet, address: SocketAddr| {
        let inner = connector();
        let network = network.clone();
        Box::pin(async move {
            if address.is_ipv6() {
                tokio::time::sleep(ATTEMPT_TIMEOUT).await;
                return Err(AttemptError::TimedOut(ATTEMPT_TIMEOUT));
            }
            inner(&network, address).await
        })
    });
    let memory = Arc::new(FallbackMemory::default());
    let started = Instant::now();
    let win = race_networks(
        vec![net("wifi0", 2, Behaviour::Delay(Duration::ZERO))],
        vec![],
        fixed(&[v6_addr, v4_addr]),
        silent_v6,
        timing(),
        memory,
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(win.address, v4_addr, "IPv4 took over from the silent IPv6 address");
    assert!(
        elapsed >= DELAY && elapsed < ATTEMPT_TIMEOUT,
        "IPv4 started after the connection-attempt delay ({elapsed:?})"
    );

    // 2. IPv6 is refused (a real RST from a closed port on ::1): IPv4 starts at once, without
    //    waiting for a family delay far longer than the whole test may take.
    let closed_v6 = v6_addr;
    drop(v6);
    let memory = Arc::new(FallbackMemory::default());
    let long_delay = Duration::from_secs(60);
    let win = tokio::time::timeout(
        Duration::from_secs(10),
        race_networks(
            vec![net("wifi0", 2, Behaviour::Delay(Duration::ZERO))],
            vec![],
            fixed(&[closed_v6, v4_addr]),
            connector(),
            Timing { attempt_delay: long_delay, fallback_delay: long_delay, ..timing() },
            memory,
        ),
    )
    .await
    .expect("IPv4 did not wait for the 60 s family delay after IPv6 failed")
    .unwrap();
    assert_eq!(win.address, v4_addr);
    let failed: Vec<(Option<SocketAddr>, FailureKind)> =
        win.failed.iter().map(|a| (a.address, a.error.kind())).collect();
    assert_eq!(failed, vec![(Some(closed_v6), FailureKind::Refused)], "the IPv6 failure is reported");
    drop(v4);
}

// ---- RFC 8305 with names: each network's own resolver, interleaving, delays, cancellation ----

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use netswitch::dial::race::ResolveFn;
use netswitch::dns::lookup::FamilyFuture;
use netswitch::dns::{Family, FamilyAnswer, Lookup, Resolve};

/// A resolver for one simulated network: fixed answers per family, each after its own delay;
/// records which network was asked.
#[derive(Debug)]
struct FakeResolver {
    network: &'static str,
    v6: (Vec<IpAddr>, Duration),
    v4: (Vec<IpAddr>, Duration),
    asked: Arc<Mutex<Vec<&'static str>>>,
}

impl Resolve for FakeResolver {
    fn lookup(&self, _name: &str, families: &[Family], _deadline: tokio::time::Instant) -> Lookup {
        self.asked.lock().unwrap().push(self.network);
        let pending = families
            .iter()
            .map(|&family| {
                let (ips, delay) = if family == Family::V6 { self.v6.clone() } else { self.v4.clone() };
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    vec![FamilyAnswer { family, result: Ok(ips), source: None, elapsed: delay }]
                }) as FamilyFuture
            })
            .collect();
        Lookup::new(families, pending)
    }

    fn interface(&self) -> Option<&str> {
        Some(self.network)
    }
}

fn name_targets(resolver: ResolveFn<SimNet>) -> Targets<SimNet> {
    Targets::Name {
        name: "svc.test".into(),
        port: 443,
        families: vec![Family::V6, Family::V4].into(),
        resolver,
    }
}

/// A connector that records the order of attempts, fails the addresses in `refused` at once,
/// never answers the others (until the attempt timeout), and counts attempts dropped unfinished.
fn recording_connector(
    refused: Vec<SocketAddr>,
    order: Arc<Mutex<Vec<SocketAddr>>>,
    cancelled: Arc<AtomicUsize>,
    winner: Option<SocketAddr>,
    real: SocketAddr,
) -> ConnectFn<SimNet> {
    struct CountDrop(Arc<AtomicUsize>, bool);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    Arc::new(move |_network: &SimNet, address: SocketAddr| {
        order.lock().unwrap().push(address);
        let (refused, cancelled) = (refused.contains(&address), cancelled.clone());
        let wins = winner == Some(address);
        Box::pin(async move {
            let mut guard = CountDrop(cancelled, false);
            if refused {
                guard.1 = true;
                return Err(AttemptError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
            }
            if wins {
                guard.1 = true;
                let socket = TcpSocket::new_v4()?;
                return Ok(socket.connect(real).await?);
            }
            tokio::time::sleep(ATTEMPT_TIMEOUT).await;
            guard.1 = true;
            Err(AttemptError::TimedOut(ATTEMPT_TIMEOUT))
        })
    })
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn at_443(text: &str) -> SocketAddr {
    SocketAddr::new(ip(text), 443)
}

#[tokio::test]
async fn each_network_resolves_with_its_own_resolver_and_dials_its_own_answer() {
    let (real, mut seen) = server().await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let resolvers: Arc<Vec<Arc<FakeResolver>>> = Arc::new(vec![
        Arc::new(FakeResolver {
            network: "wifi0",
            v6: (vec![], Duration::ZERO),
            v4: (vec![ip("192.0.2.1")], Duration::ZERO),
            asked: asked.clone(),
        }),
        Arc::new(FakeResolver {
            network: "cell0",
            v6: (vec![], Duration::ZERO),
            v4: (vec![ip("198.51.100.1")], Duration::ZERO),
            asked: asked.clone(),
        }),
    ]);
    let per_network: ResolveFn<SimNet> = {
        let resolvers = resolvers.clone();
        Arc::new(move |network: &SimNet| {
            resolvers.iter().find(|r| r.network == network.name).cloned().unwrap() as Arc<dyn Resolve>
        })
    };
    let order = Arc::new(Mutex::new(Vec::new()));
    // Wi-Fi's answer never connects; cellular's (its own) does.
    let connect =
        recording_connector(vec![], order.clone(), Arc::default(), Some(at_443("198.51.100.1")), real);
    let win = race_networks(
        vec![net("wifi0", 2, Behaviour::Delay(Duration::ZERO))],
        vec![net("cell0", 3, Behaviour::Delay(Duration::ZERO))],
        name_targets(per_network),
        connect,
        Timing { fallback_delay: Duration::from_millis(100), ..timing() },
        Arc::new(FallbackMemory::default()),
    )
    .await
    .unwrap();
    assert_eq!(win.network.name, "cell0");
    assert_eq!(win.address, at_443("198.51.100.1"), "the fallback dialed cellular's answer");
    assert!(seen.recv().await.is_some());
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        vec![at_443("192.0.2.1"), at_443("198.51.100.1")],
        "each network tried only its own answer"
    );
    assert_eq!(*asked.lock().unwrap(), vec!["wifi0", "cell0"]);
}

#[tokio::test]
async fn families_interleave_the_next_attempt_waits_the_delay_and_losers_are_cancelled() {
    let (real, _seen) = server().await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let resolver = Arc::new(FakeResolver {
        network: "wifi0",
        v6: (vec![ip("2001:db8::1"), ip("2001:db8::2")], Duration::ZERO),
        v4: (vec![ip("192.0.2.1"), ip("192.0.2.2")], Duration::ZERO),
        asked,
    });
    let per_network: ResolveFn<SimNet> = Arc::new(move |_: &SimNet| resolver.clone() as Arc<dyn Resolve>);
    let order = Arc::new(Mutex::new(Vec::new()));
    let cancelled = Arc::new(AtomicUsize::new(0));
    // The first IPv6 address is refused at once (next attempt at once), the others are silent
    // except the last one, which connects.
    let connect = recording_connector(
        vec![at_443("2001:db8::1")],
        order.clone(),
        cancelled.clone(),
        Some(at_443("192.0.2.2")),
        real,
    );
    let attempt_delay = Duration::from_millis(100);
    let started = Instant::now();
    let win = race_networks(
        vec![net("wifi0", 2, Behaviour::Delay(Duration::ZERO))],
        vec![],
        name_targets(per_network),
        connect,
        Timing { attempt_delay, ..timing() },
        Arc::new(FallbackMemory::default()),
    )
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(win.address, at_443("192.0.2.2"));
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        vec![at_443("2001:db8::1"), at_443("192.0.2.1"), at_443("2001:db8::2"), at_443("192.0.2.2")],
        "preferred family first, then alternating (RFC 8305 §4)"
    );
    // ::1 failed at once, so 192.0.2.1 started at once; then two connection-attempt delays.
    assert!(elapsed >= attempt_delay * 2, "the attempts waited their delay ({elapsed:?})");
    assert!(elapsed < ATTEMPT_TIMEOUT, "no attempt waited for another's timeout ({elapsed:?})");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        cancelled.load(Ordering::SeqCst),
        2,
        "the two silent attempts were dropped when the winner connected"
    );
    let failed: Vec<Option<SocketAddr>> = win.failed.iter().map(|a| a.address).collect();
    assert_eq!(failed, vec![Some(at_443("2001:db8::1"))]);
}

#[tokio::test]
async fn the_preferred_family_gets_the_resolution_delay_when_the_other_answers_first() {
    let (real, _seen) = server().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let run = |aaaa_after: Duration| {
        let order = order.clone();
        async move {
            order.lock().unwrap().clear();
            let resolver = Arc::new(FakeResolver {
                network: "wifi0",
                v6: (vec![ip("2001:db8::1")], aaaa_after),
                v4: (vec![ip("192.0.2.1")], Duration::ZERO),
                asked: Arc::default(),
            });
            let per_network: ResolveFn<SimNet> =
                Arc::new(move |_: &SimNet| resolver.clone() as Arc<dyn Resolve>);
            // Whichever address is tried first wins.
            let first_wins: ConnectFn<SimNet> = {
                let order = order.clone();
                Arc::new(move |_: &SimNet, address: SocketAddr| {
                    order.lock().unwrap().push(address);
                    Box::pin(async move { Ok(TcpSocket::new_v4()?.connect(real).await?) })
                })
            };
            let timing = Timing { resolution_delay: Duration::from_millis(200), ..timing() };
            let win = race_networks(
                vec![net("wifi0", 2, Behaviour::Delay(Duration::ZERO))],
                vec![],
                name_targets(per_network),
                first_wins,
                timing,
                Arc::new(FallbackMemory::default()),
            )
            .await
            .unwrap();
            win.address
        }
    };
    // AAAA comes 20 ms after A, within the resolution delay: IPv6 is still tried first.
    assert_eq!(run(Duration::from_millis(20)).await, at_443("2001:db8::1"));
    // AAAA comes 2 s after A, past the delay: IPv4 goes first.
    assert_eq!(run(Duration::from_secs(2)).await, at_443("192.0.2.1"));
}
