//! `netswitch`: the desktop command line. `netswitch socks` runs a SOCKS5 relay with logs on
//! stderr; `netswitch interfaces` lists the host's networks; `netswitch dial` makes one connection
//! with the network strategy and shows every lookup and attempt; `netswitch resolve` resolves a
//! name over the networks the strategy picks and shows who answered; `netswitch tun` (Linux,
//! root) runs a packet tunnel on a TUN device it creates.

mod networks;
#[cfg(target_os = "linux")]
mod tun;
#[cfg(target_os = "linux")]
mod tun_device;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use netswitch::logging::{init_logging, LogLevel};
use netswitch::{BuildError, Config, InterfaceSnapshot, Netswitch, SocksError, SocksUser};

/// How long shutdown waits for closed connections to leave the tracker.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Exit status for a bad command line or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit status for a failure while running (bind failure, runtime error).
const EXIT_FAILURE: u8 = 1;

/// netswitch: a connection manager for mobile VPN apps, with a desktop SOCKS5 relay.
#[derive(Debug, Parser)]
#[command(name = "netswitch", version, flatten_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a SOCKS5 relay (RFC 1928 CONNECT, optional RFC 1929 username/password) with logs on
    /// stderr. Ctrl-C or SIGTERM closes every connection and exits 0.
    Socks(SocksArgs),
    /// List the host's network interfaces as netswitch sees them: index, inferred type
    /// (wl* wifi; wwan*, rmnet*, ccmni* cellular; en*, eth* ethernet; else other), default, addresses.
    Interfaces(InterfacesArgs),
    /// Make one connection to HOST:PORT with the network strategy and print, per attempt, the
    /// interface, the address, the outcome and how long it took, then which one won.
    Dial(DialArgs),
    /// Linux, root: create a TUN device with --address and --route, and relay every TCP
    /// connection and UDP flow that enters it (kernel TCP stack, NAT to a listener on the
    /// tunnel address) over the network the strategy picks, until Ctrl-C or SIGTERM. Outbound
    /// sockets are bound to the physical interface, so the tunnel cannot capture them.
    #[cfg(target_os = "linux")]
    Tun(tun::TunArgs),
    /// Resolve NAME over the networks the strategy picks, each with its own DNS servers (over
    /// sockets bound to it), without connecting: prints per family the interface, who answered,
    /// how long it took and the addresses.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
struct ResolveArgs {
    /// The name to resolve.
    #[arg(value_name = "NAME")]
    name: String,

    /// JSON config file (strategy keys, connect_timeout, dns, interface_types, interface_dns).
    /// Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    network: networks::NetworkArgs,
}

#[derive(Debug, Args)]
struct InterfacesArgs {
    /// Network type of a host interface, overriding the inferred one. Repeatable.
    #[arg(long, value_name = "NAME=TYPE", value_parser = networks::parse_interface_type)]
    interface_type: Vec<(String, netswitch::NetworkType)>,
}

#[derive(Debug, Args)]
struct DialArgs {
    /// Where to connect: host:port, 1.2.3.4:port or [v6]:port.
    #[arg(value_name = "HOST:PORT")]
    destination: netswitch::Destination,

    /// JSON config file (strategy keys, connect_timeout, dns, interface_types, interface_dns).
    /// Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    network: networks::NetworkArgs,
}

#[derive(Debug, Args)]
struct SocksArgs {
    /// Address to listen on [default: 127.0.0.1:1080]. Port 0 picks a free port; the log line
    /// "netswitch SOCKS5 listening on ADDR" shows the real one. Non-loopback addresses need
    /// "allow_non_loopback": true in the config file, and users (or
    /// "allow_unauthenticated_non_loopback": true).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Require this SOCKS5 username (needs --password); replaces the config file's users.
    #[arg(long, value_name = "U", requires = "password")]
    user: Option<String>,

    /// The password for --user (needs --user). Visible to other local users in the process list;
    /// prefer the config file on shared machines.
    #[arg(long, value_name = "P", requires = "user")]
    password: Option<String>,

    /// JSON config file: log.level, socks.* (listen, users, handshake_timeout, allow_non_loopback,
    /// allow_unauthenticated_non_loopback), connect_timeout, half_close_timeout, network_strategy,
    /// network_type, fallback_network_type, fallback_delay, domain_strategy, tcp_keep_alive*,
    /// tcp_user_timeout, udp_timeout, udp_session_capacity, udp_max_associations, udp_max_sockets,
    /// tls_fragment, tls_record_fragment,
    /// tls_fragment_fallback_delay, interface_types, interface_dns, connection_attempt_delay, dns
    /// (README "Configuration file"). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log level: trace, debug, info, warn or error [default: info, or the config file's log.level].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<LogLevel>,

    #[command(flatten)]
    network: networks::NetworkArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Socks(args) => run_socks(args),
        Command::Interfaces(args) => run_interfaces(args),
        Command::Dial(args) => run_dial(args),
        #[cfg(target_os = "linux")]
        Command::Tun(args) => tun::run_tun(args),
        Command::Resolve(args) => run_resolve(args),
    }
}

/// `netswitch interfaces`.
fn run_interfaces(args: InterfacesArgs) -> ExitCode {
    let mut config = Config::default();
    config.interface_types.extend(args.interface_type);
    match networks::read_host(&config) {
        Ok(snapshot) => {
            networks::print_interfaces(&snapshot);
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.to_string(), EXIT_FAILURE),
    }
}

/// `netswitch resolve`.
fn run_resolve(args: ResolveArgs) -> ExitCode {
    let config = match file_config(args.config.as_deref(), &args.network) {
        Ok(config) => config,
        Err(status) => return status,
    };
    one_shot(&config, |snapshot| networks::resolve_once(&config, snapshot, &args.name))
}

/// A command that does one thing with the host's interfaces (`dial`, `resolve`): prints them, runs
/// `job` on a single-threaded runtime and exits 0 when it says it succeeded.
fn one_shot<F, Job>(config: &Config, job: F) -> ExitCode
where
    F: FnOnce(InterfaceSnapshot) -> Job,
    Job: std::future::Future<Output = bool>,
{
    let snapshot = match networks::read_host(config) {
        Ok(snapshot) => snapshot,
        Err(error) => return fail(&error.to_string(), EXIT_FAILURE),
    };
    networks::print_interfaces(&snapshot);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("start the tokio runtime: {error}"), EXIT_FAILURE),
    };
    if runtime.block_on(job(snapshot)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// The config file (or the defaults) with the network flags applied, validated.
fn file_config(path: Option<&std::path::Path>, network: &networks::NetworkArgs) -> Result<Config, ExitCode> {
    let mut config = match path {
        Some(path) => Config::from_file(path).map_err(|error| fail(&error.to_string(), EXIT_USAGE))?,
        None => Config::default(),
    };
    network.apply(&mut config);
    config.validate().map_err(|error| fail(&error.to_string(), EXIT_USAGE))?;
    Ok(config)
}

/// `netswitch dial`.
fn run_dial(args: DialArgs) -> ExitCode {
    let config = match file_config(args.config.as_deref(), &args.network) {
        Ok(config) => config,
        Err(status) => return status,
    };
    one_shot(&config, |snapshot| networks::dial_once(&config, snapshot, args.destination))
}

/// Loads the config, applies the flags, and runs the relay until Ctrl-C or SIGTERM.
fn run_socks(args: SocksArgs) -> ExitCode {
    let config = match load_config(args) {
        Ok(config) => config,
        Err(message) => return fail(&message, EXIT_USAGE),
    };
    if let Err(error) = init_logging(config.log.level) {
        return fail(&error.to_string(), EXIT_FAILURE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("start the tokio runtime: {error}"), EXIT_FAILURE),
    };
    let result = runtime.block_on(serve(config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ServeError::Socks(
            error @ (SocksError::NotLoopback(_) | SocksError::Unauthenticated(_) | SocksError::BadUser(_)),
        )) => fail(&error.to_string(), EXIT_USAGE),
        Err(error) => fail(&error.to_string(), EXIT_FAILURE),
    }
}

/// Prints one error line on stderr and returns the exit status.
fn fail(message: &str, status: u8) -> ExitCode {
    eprintln!("netswitch: error: {message}");
    ExitCode::from(status)
}

/// The config file (or the defaults) with the command-line flags applied on top.
fn load_config(args: SocksArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|error| error.to_string())?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.socks.listen = listen;
    }
    if let (Some(username), Some(password)) = (args.user, args.password) {
        config.socks.users = vec![SocksUser { username, password }];
    }
    if let Some(level) = args.log_level {
        config.log.level = level;
    }
    args.network.apply(&mut config);
    config.validate().map_err(|error| error.to_string())?;
    Ok(config)
}

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("SOCKS5 server: {0}")]
    Socks(#[from] SocksError),
    #[error("listen for termination signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// Starts the manager and the SOCKS server, waits for Ctrl-C or SIGTERM, then closes everything.
async fn serve(config: Config) -> Result<(), ServeError> {
    let netswitch = Netswitch::builder(config.clone()).build()?;
    let manager = netswitch.manager().clone();
    let changes = networks::subscribe();
    match networks::read_host(&config) {
        Ok(snapshot) => {
            manager.update_interfaces(snapshot);
        }
        Err(error) => {
            tracing::warn!(%error, "could not read the host's interfaces; dials will fail until they can be read")
        }
    }
    networks::spawn_refresh(manager.clone(), &config, changes);
    let mut signals = Signals::new().map_err(ServeError::Signal)?;
    let server = netswitch.start_socks(netswitch.socks_settings().clone()).await?;
    let users = config.socks.users.len();
    tracing::info!(users, "netswitch SOCKS5 listening on {}", server.local_addr());

    let signal = signals.recv().await.map_err(ServeError::Signal)?;
    tracing::info!(signal, connections = manager.len(), "stopping: closing every connection");
    server.stop();
    manager.shutdown();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !manager.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if manager.is_empty() {
        tracing::info!("stopped");
    } else {
        tracing::warn!(connections = manager.len(), "stopped with connections still closing");
    }
    Ok(())
}

/// The termination signals: SIGINT (Ctrl-C) and SIGTERM on Unix, Ctrl-C elsewhere.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers (before the server starts, so an early signal is not lost).
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Waits for the first signal and returns its name.
    async fn recv(&mut self) -> std::io::Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok("SIGINT"),
                _ = self.terminate.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
        }
    }
}
