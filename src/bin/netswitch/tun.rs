//! `netswitch tun` (Linux, root): creates a TUN device, gives it its addresses and routes, and
//! relays every TCP connection and UDP flow that enters it through the manager.
//!
//! No loops: the physical default interface is read before the routes go in; the snapshot the
//! manager sees never holds the TUN device and keeps that physical default while the tunnel's
//! routes capture the system's default route; and every outbound socket is bound to its
//! interface ([`BindDefault`]), so netswitch's own traffic cannot enter the tunnel.
//!
//! With `--dns-hijack`, DNS sent to the tunnel's DNS address is answered by netswitch's
//! resolver over the network the strategy picks. The DNS address apps should use is logged at
//! start: `--dns-address`, else the tunnel's NAT address of each family (the address after
//! `--address`: 172.19.0.2 for 172.19.0.1/30), which is inside the tunnel's prefix and so always
//! routed into it. A `--dns-address` outside every `--address` prefix gets a host route into the
//! tunnel. `--dns-hijack-all` answers UDP and TCP to port 53 of any address instead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use netswitch::logging::{init_logging, LogLevel};
use netswitch::network::InterfaceSnapshot;
use netswitch::tun::{device, BindDefault, DnsHijack, Stack, TunSettings};
use netswitch::{os_binder, Config, Netswitch};

use super::tun_device::{self, Cidr};
use super::{fail, networks, Signals, EXIT_FAILURE, EXIT_USAGE};

#[derive(Debug, Args)]
pub struct TunArgs {
    /// Name of the TUN device to create.
    #[arg(long, value_name = "NAME", default_value = "tun0")]
    name: String,

    /// Address of the device, ADDRESS/PREFIX (IPv4 at most /30, IPv6 at most /126: the next
    /// address is the NAT's). Repeat for both families.
    #[arg(long, value_name = "CIDR", required = true)]
    address: Vec<Cidr>,

    /// Route into the tunnel, ADDRESS/PREFIX; repeatable [default: everything, as the halves
    /// 0.0.0.0/1 + 128.0.0.0/1 (and ::/1 + 8000::/1 with an IPv6 address), which beat the
    /// system's default route without replacing it].
    #[arg(long, value_name = "CIDR")]
    route: Vec<Cidr>,

    /// Answer DNS (UDP and TCP port 53) sent to the tunnel's DNS address with netswitch's
    /// resolver, over the network the strategy picks. The DNS address is `--dns-address`, else
    /// the NAT address of each `--address` (the next address: 172.19.0.2 for 172.19.0.1/30);
    /// give it to the apps as their DNS server.
    #[arg(long)]
    dns_hijack: bool,

    /// The tunnel's DNS address (implies --dns-hijack); one per family. Any address but the
    /// tunnel's own; one outside the --address prefixes gets a host route into the tunnel.
    #[arg(long, value_name = "IP", conflicts_with = "dns_hijack_all")]
    dns_address: Vec<std::net::IpAddr>,

    /// Answer DNS sent to port 53 of any address (UDP and TCP), whatever server the apps use.
    #[arg(long, conflicts_with = "dns_hijack")]
    dns_hijack_all: bool,

    /// MTU of the device.
    #[arg(long, value_name = "N", default_value_t = netswitch::tun::DEFAULT_MTU)]
    mtu: usize,

    /// Turn the device's offloads off: one read and one write per MTU-sized packet instead of
    /// TCP super-packets of up to 64 KiB both ways (for comparison; on by default, with
    /// either stack).
    #[arg(long)]
    no_offload: bool,

    /// The TCP stack that terminates the apps' connections: `system` (the kernel's, through a
    /// NAT to a listener on the tunnel address) or `userspace` (smoltcp inside netswitch).
    #[arg(long, value_enum, default_value_t = StackArg::System)]
    stack: StackArg,

    /// JSON config file (strategy keys, timeouts, UDP limits, interface_types, log.level).
    /// Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log level: trace, debug, info, warn or error [default: info, or the config file's log.level].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<LogLevel>,

    #[command(flatten)]
    network: networks::NetworkArgs,
}

/// `--stack`: [`Stack`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StackArg {
    /// The kernel's TCP ([`Stack::System`]).
    System,
    /// smoltcp inside netswitch ([`Stack::Userspace`]).
    Userspace,
}

impl StackArg {
    fn stack(self) -> Stack {
        match self {
            StackArg::System => Stack::System,
            StackArg::Userspace => Stack::Userspace,
        }
    }
}

/// `netswitch tun`.
pub fn run_tun(args: TunArgs) -> ExitCode {
    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(config) => config,
            Err(error) => return fail(&error.to_string(), EXIT_USAGE),
        },
        None => Config::default(),
    };
    if let Some(level) = args.log_level {
        config.log.level = level;
    }
    args.network.apply(&mut config);
    if let Err(error) = config.validate() {
        return fail(&error.to_string(), EXIT_USAGE);
    }
    let mut settings = match tun_settings(&args) {
        Ok(settings) => settings,
        Err(message) => return fail(&message, EXIT_USAGE),
    };
    if let Err(error) = init_logging(config.log.level) {
        return fail(&error.to_string(), EXIT_FAILURE);
    }
    // The physical default, read before the tunnel's routes capture the default route.
    let physical = match networks::read_host(&config) {
        Ok(snapshot) => snapshot.default_interface().map(|interface| interface.name.clone()),
        Err(error) => return fail(&format!("read the host's interfaces: {error}"), EXIT_FAILURE),
    };
    let created = match !args.no_offload {
        false => device::create_linux(&args.name),
        true => device::create_linux_offload(&args.name),
    };
    let fd = match created {
        Ok(fd) => fd,
        Err(error) => return fail(&format!("create TUN device {}: {error}", args.name), EXIT_FAILURE),
    };
    let mut routes = if args.route.is_empty() { default_routes(&args.address) } else { args.route.clone() };
    routes.extend(dns_routes(&settings.dns_hijack, &args.address));
    if let Err(message) = tun_device::configure(&args.name, args.mtu, &args.address, &routes) {
        return fail(&message, EXIT_FAILURE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("start the tokio runtime: {error}"), EXIT_FAILURE),
    };
    let result = runtime.block_on(async move {
        let netswitch =
            Netswitch::builder(config.clone()).binder(std::sync::Arc::new(BindDefault(os_binder()))).build()?;
        settings.udp = netswitch.socks_settings().udp.clone();
        let manager = netswitch.manager().clone();
        let name = args.name.clone();
        // The host's interfaces with their DNS servers, as `socks` reads them, re-read when the
        // kernel reports a change (subscribed before the first read so none is missed).
        let mut changes = networks::subscribe();
        let refresh = move || without_tunnel(networks::read_host(&config).ok()?, &name, physical.as_deref());
        match refresh() {
            Some(snapshot) => {
                manager.update_interfaces(snapshot);
            }
            None => tracing::warn!("could not read the host's interfaces; dials fail until they can be read"),
        }
        let mut signals = Signals::new()?;
        let dns_hijack = settings.dns_hijack.clone();
        let tun = netswitch.start_tun(fd, settings)?;
        match &dns_hijack {
            DnsHijack::Addresses(addresses) => {
                tracing::info!("DNS hijack: apps' DNS server is {addresses:?} (port 53, UDP and TCP)")
            }
            DnsHijack::AllPort53 => tracing::info!("DNS hijack: port 53 of every address (UDP and TCP)"),
            _ => {}
        }
        tracing::info!(device = %args.name, addresses = ?args.address, routes = ?routes, stack = ?args.stack, "netswitch tunnel running");
        let signal = loop {
            tokio::select! {
                signal = signals.recv() => break signal?,
                () = changes.next() => {
                    let refresh = refresh.clone();
                    if let Ok(Some(snapshot)) = tokio::task::spawn_blocking(refresh).await {
                        manager.update_interfaces(snapshot);
                    }
                }
            }
        };
        tracing::info!(signal, counters = ?tun.counters(), "stopping: closing every connection");
        tun.stop();
        manager.shutdown();
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error.to_string(), EXIT_FAILURE),
    }
}

fn tun_settings(args: &TunArgs) -> Result<TunSettings, String> {
    let mut settings = TunSettings::inet4(std::net::Ipv4Addr::UNSPECIFIED, 0);
    settings.inet4 = None;
    for address in &args.address {
        match address.ip {
            std::net::IpAddr::V4(ip) if settings.inet4.is_none() => settings.inet4 = Some((ip, address.len)),
            std::net::IpAddr::V6(ip) if settings.inet6.is_none() => settings.inet6 = Some((ip, address.len)),
            _ => return Err(format!("--address {address}: one address per family")),
        }
    }
    settings.mtu = args.mtu;
    settings.dns_hijack = if args.dns_hijack_all {
        DnsHijack::AllPort53
    } else if !args.dns_address.is_empty() {
        let v4 = args.dns_address.iter().filter(|ip| ip.is_ipv4()).count();
        if v4 > 1 || args.dns_address.len() - v4 > 1 {
            return Err("--dns-address: one address per family".into());
        }
        DnsHijack::Addresses(args.dns_address.clone())
    } else if args.dns_hijack {
        let nat = settings.nat_addresses();
        if nat.is_empty() {
            return Err("--dns-hijack: no NAT address in the --address prefixes (give --dns-address)".into());
        }
        DnsHijack::Addresses(nat)
    } else {
        DnsHijack::Off
    };
    settings.stack = args.stack.stack();
    if !args.no_offload {
        settings.framing = netswitch::tun::Framing::VirtioNet;
    }
    Ok(settings)
}

/// Host routes into the tunnel for the DNS addresses outside every prefix of `addresses`.
fn dns_routes(hijack: &DnsHijack, addresses: &[Cidr]) -> Vec<Cidr> {
    let DnsHijack::Addresses(dns) = hijack else { return Vec::new() };
    dns.iter()
        .filter(|ip| !addresses.iter().any(|prefix| inside(prefix, **ip)))
        .map(|ip| Cidr { ip: *ip, len: if ip.is_ipv4() { 32 } else { 128 } })
        .collect()
}

/// True when `ip` is in `prefix`.
fn inside(prefix: &Cidr, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match (prefix.ip, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.len)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.len)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Two half routes per family of `addresses`: more specific than any default route.
fn default_routes(addresses: &[Cidr]) -> Vec<Cidr> {
    let mut routes = Vec::new();
    let half = |text: &str| text.parse::<Cidr>().expect("a valid constant prefix");
    if addresses.iter().any(|a| a.ip.is_ipv4()) {
        routes.extend([half("0.0.0.0/1"), half("128.0.0.0/1")]);
    }
    if addresses.iter().any(|a| a.ip.is_ipv6()) {
        routes.extend([half("::/1"), half("8000::/1")]);
    }
    routes
}

/// `snapshot` without the tunnel's device, its default kept on the physical one.
fn without_tunnel(
    snapshot: InterfaceSnapshot,
    tunnel: &str,
    physical: Option<&str>,
) -> Option<InterfaceSnapshot> {
    let interfaces: Vec<_> = snapshot.interfaces().iter().filter(|i| i.name != tunnel).cloned().collect();
    let default = snapshot
        .default_interface()
        .filter(|i| i.name != tunnel)
        .or_else(|| physical.and_then(|name| interfaces.iter().find(|i| i.name == name)))
        .map(|i| i.index);
    InterfaceSnapshot::new(interfaces, default).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_addresses_outside_the_prefixes_get_host_routes() {
        let cidr = |text: &str| text.parse::<Cidr>().unwrap();
        let addresses = [cidr("172.19.0.1/30"), cidr("fdfe::1/126")];
        assert!(inside(&addresses[0], "172.19.0.2".parse().unwrap()));
        assert!(!inside(&addresses[0], "172.19.0.4".parse().unwrap()));
        assert!(inside(&addresses[1], "fdfe::3".parse().unwrap()));
        assert!(!inside(&addresses[1], "172.19.0.2".parse().unwrap()), "another family");
        let hijack = DnsHijack::Addresses(vec![
            "172.19.0.2".parse().unwrap(),
            "10.53.0.1".parse().unwrap(),
            "fd00::53".parse().unwrap(),
        ]);
        assert_eq!(dns_routes(&hijack, &addresses), [cidr("10.53.0.1/32"), cidr("fd00::53/128")]);
        assert!(dns_routes(&DnsHijack::AllPort53, &addresses).is_empty());
    }
}
