//! The network side of the CLI: the strategy flags shared by `socks`, `dial` and `resolve`, the
//! host's interface snapshot (with each interface's DNS servers), `netswitch interfaces`,
//! `netswitch dial` and `netswitch resolve`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use netswitch::config::parse_duration;
use netswitch::network::host::{host_snapshot, HostInterfacesError};
use netswitch::network::interface::parse_dns_server;
use netswitch::{
    Config, ConnectionManager, ConnectionOptions, Destination, DialAttempt, DialError, DomainStrategy,
    InterfaceSnapshot, Metadata, Netswitch, NetworkStrategy, NetworkType,
};

/// How often `netswitch socks` re-reads the host's interfaces where the kernel's change
/// notifications are not available (a mobile host pushes changes itself).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// Flags that choose networks; they override the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct NetworkArgs {
    /// Network strategy: default, hybrid or fallback [default: default].
    #[arg(long, value_name = "STRATEGY", value_parser = parse_name::<NetworkStrategy>)]
    pub network_strategy: Option<NetworkStrategy>,

    /// Preferred network type (wifi, cellular, ethernet, other); repeat or separate with commas.
    #[arg(long, value_name = "TYPE", value_delimiter = ',', value_parser = parse_name::<NetworkType>)]
    pub network_type: Vec<NetworkType>,

    /// Fallback network type for the fallback strategy; repeat or separate with commas.
    #[arg(long, value_name = "TYPE", value_delimiter = ',', value_parser = parse_name::<NetworkType>)]
    pub fallback_network_type: Vec<NetworkType>,

    /// Delay before fallback networks and the second address family start, e.g. 300ms [default: 300ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_delay)]
    pub fallback_delay: Option<Duration>,

    /// Address families: prefer_ipv6, prefer_ipv4, ipv4_only or ipv6_only [default: prefer_ipv6].
    #[arg(long, value_name = "STRATEGY", value_parser = parse_name::<DomainStrategy>)]
    pub domain_strategy: Option<DomainStrategy>,

    /// Network type of a host interface, overriding the one inferred from its name
    /// (wl* wifi; wwan*, rmnet*, ccmni* cellular; en*, eth* ethernet; else other). Repeatable.
    #[arg(long, value_name = "NAME=TYPE", value_parser = parse_interface_type)]
    pub interface_type: Vec<(String, NetworkType)>,

    /// A DNS server of a host interface (IP, IP:PORT or [IPv6]:PORT): names for connections over
    /// that interface are resolved with it, over sockets bound to the interface. Repeatable; the
    /// servers given for an interface replace the config file's and the system's.
    #[arg(long, value_name = "IFACE=ADDR", value_parser = parse_interface_dns)]
    pub interface_dns: Vec<(String, SocketAddr)>,
}

impl NetworkArgs {
    /// Applies the flags on top of the config file's values.
    pub fn apply(&self, config: &mut Config) {
        if let Some(strategy) = self.network_strategy {
            config.network_strategy = strategy;
        }
        if !self.network_type.is_empty() {
            config.network_type = self.network_type.clone();
        }
        if !self.fallback_network_type.is_empty() {
            config.fallback_network_type = self.fallback_network_type.clone();
        }
        if let Some(delay) = self.fallback_delay {
            config.fallback_delay = delay;
        }
        if let Some(strategy) = self.domain_strategy {
            config.domain_strategy = strategy;
        }
        for (name, kind) in &self.interface_type {
            config.interface_types.insert(name.clone(), *kind);
        }
        let mut servers: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        for (name, server) in &self.interface_dns {
            servers.entry(name.clone()).or_default().push(*server);
        }
        config.interface_dns.extend(servers);
    }
}

/// Parses `IFACE=ADDR` for `--interface-dns`.
pub fn parse_interface_dns(text: &str) -> Result<(String, SocketAddr), String> {
    let (name, server) = text.split_once('=').ok_or_else(|| format!("expected IFACE=ADDR, got {text:?}"))?;
    if name.is_empty() {
        return Err(format!("empty interface name in {text:?}"));
    }
    Ok((name.to_string(), parse_dns_server(server)?))
}

/// Parses a value by its config-file name (`"fallback"`, `"cellular"`, `"prefer_ipv4"`…).
fn parse_name<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|e| e.to_string())
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses `NAME=TYPE` for `--interface-type`.
pub fn parse_interface_type(text: &str) -> Result<(String, NetworkType), String> {
    let (name, kind) = text.split_once('=').ok_or_else(|| format!("expected NAME=TYPE, got {text:?}"))?;
    if name.is_empty() {
        return Err(format!("empty interface name in {text:?}"));
    }
    Ok((name.to_string(), parse_name(kind)?))
}

/// The host's interfaces with the configured type overrides, each with its DNS servers: the
/// configured ones (`interface_dns`, `--interface-dns`), else the per-link servers
/// systemd-resolved reports (Linux, when it runs), else none (the system resolver then answers
/// for that interface).
pub fn read_host(config: &Config) -> Result<InterfaceSnapshot, HostInterfacesError> {
    host_with_dns(&config.interface_types, &config.interface_dns)
}

fn host_with_dns(
    types: &BTreeMap<String, NetworkType>,
    dns: &BTreeMap<String, Vec<SocketAddr>>,
) -> Result<InterfaceSnapshot, HostInterfacesError> {
    let snapshot = host_snapshot(types)?;
    let mut interfaces = snapshot.interfaces().to_vec();
    for interface in &mut interfaces {
        interface.dns_servers = match dns.get(&interface.name) {
            Some(servers) => servers.clone(),
            None => link_dns_servers(interface.index),
        };
    }
    Ok(InterfaceSnapshot::new(interfaces, snapshot.default_index())?)
}

/// The DNS servers systemd-resolved knows for the link with this index
/// (`/run/systemd/resolve/netif/<index>`, `SERVERS=` line; `addr%iface#name` forms accepted);
/// none when the file is absent or has no usable server, or when this process runs in another
/// network namespace than systemd-resolved (its files then describe other links).
fn link_dns_servers(index: u32) -> Vec<SocketAddr> {
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    if namespace("self").is_none() || namespace("self") != namespace("1") {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(format!("/run/systemd/resolve/netif/{index}")) else {
        return Vec::new();
    };
    servers_of_netif_file(&text)
}

/// The servers of a systemd-resolved link state file's `SERVERS=` line: `IP`, `IP:PORT`,
/// `[IPv6]:PORT`, each optionally followed by `%ifindex` and `#server-name` (both dropped: the
/// socket is bound to the link anyway); entries that do not parse are skipped.
fn servers_of_netif_file(text: &str) -> Vec<SocketAddr> {
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("SERVERS=")) else { return Vec::new() };
    line.split_whitespace()
        .filter_map(|entry| {
            let entry = entry.split('#').next().unwrap_or(entry);
            let entry = entry.split('%').next().unwrap_or(entry);
            parse_dns_server(entry).ok()
        })
        .collect()
}

/// How `netswitch socks` learns that the host's interfaces may have changed.
pub enum Changes {
    /// The kernel's rtnetlink notifications (Linux): re-read only when told.
    #[cfg(target_os = "linux")]
    Kernel(netswitch::network::host_changes::HostChanges),
    /// Re-read every [`REFRESH_INTERVAL`] (elsewhere, or when the subscription failed).
    Poll,
}

/// Subscribes to the host's interface changes; call it before the first read of the
/// interfaces so no change in between is missed. Needs the tokio runtime.
pub fn subscribe() -> Changes {
    #[cfg(target_os = "linux")]
    match netswitch::network::host_changes::HostChanges::subscribe() {
        Ok(changes) => return Changes::Kernel(changes),
        Err(error) => tracing::warn!(%error, "polling the host's interfaces instead"),
    }
    Changes::Poll
}

impl Changes {
    /// Waits until the host's interfaces may have changed: the kernel's next notification, or the
    /// next [`REFRESH_INTERVAL`] when polling (from then on, if the notifications fail).
    pub async fn next(&mut self) {
        #[cfg(target_os = "linux")]
        if let Changes::Kernel(changes) = self {
            match changes.changed().await {
                Ok(()) => {
                    tracing::debug!("the kernel reported a link, address or route change");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "interface change notifications failed; polling instead");
                    *self = Changes::Poll;
                }
            }
        }
        tokio::time::sleep(REFRESH_INTERVAL).await;
    }
}

/// Keeps the manager's snapshot in step with the host's interfaces until the manager shuts down:
/// re-reads them when `changes` says so, so an idle relay on Linux never wakes up for this.
pub fn spawn_refresh(manager: Arc<ConnectionManager>, config: &Config, mut changes: Changes) {
    let (types, dns) = (config.interface_types.clone(), config.interface_dns.clone());
    tokio::spawn(async move {
        while !manager.is_shut_down() {
            changes.next().await;
            refresh(&manager, &types, &dns).await;
        }
    });
}

/// Re-reads the host's interfaces and their DNS servers (on the blocking pool) and hands them to
/// the manager.
async fn refresh(
    manager: &ConnectionManager,
    types: &BTreeMap<String, NetworkType>,
    dns: &BTreeMap<String, Vec<SocketAddr>>,
) {
    let (types, dns) = (types.clone(), dns.clone());
    match tokio::task::spawn_blocking(move || host_with_dns(&types, &dns)).await {
        Ok(Ok(snapshot)) => {
            manager.update_interfaces(snapshot);
        }
        Ok(Err(error)) => tracing::warn!(%error, "could not re-read the host's interfaces"),
        Err(error) => tracing::warn!(%error, "interface refresh task failed"),
    }
}

/// `netswitch interfaces`: prints the host's interfaces as netswitch sees them.
pub fn print_interfaces(snapshot: &InterfaceSnapshot) {
    if snapshot.is_no_network() {
        println!("no usable network interface (only loopback, or every interface down)");
        return;
    }
    println!("{:<16} {:>5}  {:<9} {:<8} addresses", "interface", "index", "type", "default");
    for interface in snapshot.interfaces() {
        let addresses: Vec<String> = interface.addresses.iter().map(ToString::to_string).collect();
        let servers: Vec<String> = interface
            .dns_servers
            .iter()
            .map(|s| netswitch::network::interface::dns_server_text(*s))
            .collect();
        let dns = if servers.is_empty() { String::new() } else { format!("  dns {}", servers.join(" ")) };
        println!(
            "{:<16} {:>5}  {:<9} {:<8} {}{dns}",
            interface.name,
            interface.index,
            interface.network_type.to_string(),
            if snapshot.is_default(interface) { "yes" } else { "" },
            addresses.join(" ")
        );
    }
}

/// A stack built from `config` whose manager sees `snapshot`; `None` (said on stdout) when it
/// cannot be built.
fn stack_seeing(config: &Config, snapshot: InterfaceSnapshot) -> Option<Netswitch> {
    match Netswitch::builder(config.clone()).build() {
        Ok(netswitch) => {
            netswitch.manager().update_interfaces(snapshot);
            Some(netswitch)
        }
        Err(error) => {
            println!("failed: {error}");
            None
        }
    }
}

/// `netswitch dial`: one connection with the strategy; prints every attempt and the winner.
/// Returns whether the dial succeeded.
pub async fn dial_once(config: &Config, snapshot: InterfaceSnapshot, destination: Destination) -> bool {
    let Some(netswitch) = stack_seeing(config, snapshot) else { return false };
    let outbound = netswitch.outbound();
    let metadata = Metadata::new(destination.clone());
    println!(
        "dialing {destination}: strategy {}, network_type [{}], fallback_network_type [{}], fallback_delay {:?}, domain_strategy {}",
        config.network_strategy,
        join(&config.network_type),
        join(&config.fallback_network_type),
        config.fallback_delay,
        config.domain_strategy
    );
    let started = Instant::now();
    match outbound.dial_with_report(&metadata).await {
        Ok(report) => {
            for lookup in &report.lookups {
                let via = lookup.interface.as_deref().unwrap_or("system route");
                println!("  lookup via {via}: {}", lookup.answer);
            }
            for attempt in &report.failed {
                println!("  attempt {}", attempt_line(attempt));
            }
            for (interface, spent) in &report.abandoned {
                println!(
                    "  attempt via {}: no answer yet, cancelled when the winner connected ({} ms)",
                    interface.as_deref().unwrap_or("system route"),
                    spent.as_millis()
                );
            }
            let elapsed = started.elapsed();
            println!(
                "  attempt {} via {}: connected at {} ms",
                report.address,
                report.stream.egress,
                elapsed.as_millis()
            );
            println!(
                "won: {} to {} in {} ms{}",
                report.stream.egress,
                report.address,
                elapsed.as_millis(),
                if report.was_fallback { " (fallback network)" } else { "" }
            );
            true
        }
        Err(error) => {
            if let DialError::Connect { attempts, .. } = &error {
                for attempt in attempts {
                    println!("  attempt {}", attempt_line(attempt));
                }
            }
            println!("failed after {} ms: {error}", started.elapsed().as_millis());
            false
        }
    }
}

/// `netswitch resolve`: resolves `name` like a dial with the strategy would, without connecting;
/// prints per family the interface, who answered, how long it took and the addresses. Returns
/// whether addresses were found.
pub async fn resolve_once(config: &Config, snapshot: InterfaceSnapshot, name: &str) -> bool {
    let Some(netswitch) = stack_seeing(config, snapshot) else { return false };
    let outbound = netswitch.outbound();
    println!(
        "resolving {name}: strategy {}, network_type [{}], fallback_network_type [{}], domain_strategy {}, resolver {}",
        config.network_strategy,
        join(&config.network_type),
        join(&config.fallback_network_type),
        config.domain_strategy,
        config.dns.resolver
    );
    match outbound.lookup_name(name, &ConnectionOptions::default()).await {
        Ok(report) => {
            for attempt in &report.failed {
                println!("  {}", attempt_line(attempt));
            }
            let via = report.interface.as_deref().unwrap_or("system route");
            for answer in &report.answers {
                println!("  {via}: {answer}");
            }
            let addresses: Vec<String> = report.addresses.iter().map(ToString::to_string).collect();
            println!("{name}: {} via {via} in {} ms", addresses.join(" "), report.elapsed.as_millis());
            true
        }
        Err(error) => {
            println!("failed: {error}");
            false
        }
    }
}

fn attempt_line(attempt: &DialAttempt) -> String {
    format!(
        "{} via {}: failed: {} ({} ms)",
        attempt.address.map_or_else(|| "lookup".to_string(), |a| a.to_string()),
        attempt.interface.as_deref().unwrap_or("system route"),
        attempt.error,
        attempt.elapsed.as_millis()
    )
}

fn join(types: &[NetworkType]) -> String {
    types.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_systemd_resolved_lists_for_a_link() {
        let text = "# This is private data. Do not parse.\nADMIN_STATE=configured\n\
                    SERVERS=192.168.1.1 fe80::1%3 10.0.0.53:5353#dns.example [fd00::1]:853%3#dot.example not-an-ip\n\
                    DOMAINS=lan\n";
        let servers: Vec<String> = servers_of_netif_file(text).iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["192.168.1.1:53", "[fe80::1]:53", "10.0.0.53:5353", "[fd00::1]:853"]);
        assert!(servers_of_netif_file("ADMIN_STATE=configured\n").is_empty(), "no SERVERS= line");
        assert!(servers_of_netif_file("SERVERS=\n").is_empty());
    }

    #[test]
    fn interface_dns_flags_collect_per_interface_and_replace_the_config_file() {
        let mut config = Config::default();
        config.interface_dns.insert("wlan0".into(), vec!["10.9.9.9:53".parse().unwrap()]);
        config.interface_dns.insert("eth0".into(), vec!["10.8.8.8:53".parse().unwrap()]);
        let args = NetworkArgs {
            interface_dns: ["wlan0=192.168.1.1", "wlan0=[fd00::1]:5353", "rmnet0=10.0.0.1"]
                .iter()
                .map(|a| parse_interface_dns(a).unwrap())
                .collect(),
            ..NetworkArgs::default()
        };
        args.apply(&mut config);
        let shown: BTreeMap<&str, Vec<String>> = config
            .interface_dns
            .iter()
            .map(|(name, servers)| (name.as_str(), servers.iter().map(ToString::to_string).collect()))
            .collect();
        assert_eq!(shown["wlan0"], ["192.168.1.1:53", "[fd00::1]:5353"]);
        assert_eq!(shown["rmnet0"], ["10.0.0.1:53"]);
        assert_eq!(shown["eth0"], ["10.8.8.8:53"], "interfaces without flags keep the config file's");
        for bad in ["wlan0", "=10.0.0.1", "wlan0=not-an-ip", "wlan0=10.0.0.1:99999"] {
            assert!(parse_interface_dns(bad).is_err(), "{bad:?} accepted");
        }
    }
}
