//! The network side of the CLI: the strategy flags shared by `socks` and `dial`, the host's
//! interface snapshot, `netswitch interfaces` and `netswitch dial`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use netswitch::config::parse_duration;
use netswitch::network::host::{host_snapshot, HostInterfacesError};
use netswitch::{
    Config, ConnectionManager, Destination, DialAttempt, DialError, DomainStrategy, InterfaceSnapshot,
    Metadata, Netswitch, NetworkStrategy, NetworkType,
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
    }
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

/// The host's interfaces with the configured type overrides.
pub fn read_host(config: &Config) -> Result<InterfaceSnapshot, HostInterfacesError> {
    host_snapshot(&config.interface_types)
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

/// Keeps the manager's snapshot in step with the host's interfaces until the manager shuts down:
/// re-reads them when `changes` says so, so an idle relay on Linux never wakes up for this.
pub fn spawn_refresh(
    manager: Arc<ConnectionManager>,
    types: BTreeMap<String, NetworkType>,
    changes: Changes,
) {
    tokio::spawn(async move {
        #[cfg(target_os = "linux")]
        if let Changes::Kernel(mut changes) = changes {
            while !manager.is_shut_down() {
                if let Err(error) = changes.changed().await {
                    tracing::warn!(%error, "interface change notifications failed; polling instead");
                    break;
                }
                tracing::debug!("the kernel reported a link, address or route change");
                refresh(&manager, &types).await;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let Changes::Poll = changes;
        let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
        ticker.tick().await;
        while !manager.is_shut_down() {
            ticker.tick().await;
            refresh(&manager, &types).await;
        }
    });
}

/// Re-reads the host's interfaces (on the blocking pool) and hands them to the manager.
async fn refresh(manager: &ConnectionManager, types: &BTreeMap<String, NetworkType>) {
    let types = types.clone();
    match tokio::task::spawn_blocking(move || host_snapshot(&types)).await {
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
        println!(
            "{:<16} {:>5}  {:<9} {:<8} {}",
            interface.name,
            interface.index,
            interface.network_type.to_string(),
            if snapshot.is_default(interface) { "yes" } else { "" },
            addresses.join(" ")
        );
    }
}

/// `netswitch dial`: one connection with the strategy; prints every attempt and the winner.
/// Returns whether the dial succeeded.
pub async fn dial_once(config: &Config, snapshot: InterfaceSnapshot, destination: Destination) -> bool {
    let netswitch = match Netswitch::builder(config.clone()).build() {
        Ok(netswitch) => netswitch,
        Err(error) => {
            println!("failed: {error}");
            return false;
        }
    };
    netswitch.manager().update_interfaces(snapshot);
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

fn attempt_line(attempt: &DialAttempt) -> String {
    format!(
        "{} via {}: failed: {} ({} ms)",
        attempt.address,
        attempt.interface.as_deref().unwrap_or("system route"),
        attempt.error,
        attempt.elapsed.as_millis()
    )
}

fn join(types: &[NetworkType]) -> String {
    types.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
