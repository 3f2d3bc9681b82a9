//! DNS at the FFI: the host's resolver (`PlatformInterface.resolve`) bridged to the core's
//! [`HostDns`], what `ConnectionManager.resolve` answers, and which resolver the config picks.

use std::net::IpAddr;
use std::sync::Arc;

use super::callbacks::PlatformInterface;
use super::error::NetswitchError;
use super::network::NetworkInterface;
use super::types::HostResolution;
use crate::dial::lookup::NameReport;
use crate::dns::host::{HostAnswer, HostDns, HostDnsError, HostFuture};
use crate::dns::{Family, ResolverChoice};

/// Which resolver answers for an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DnsResolver {
    /// The interface's DNS servers (`NetworkInterface.dns_servers`, queried over sockets bound
    /// to it) when it has some, else the host's (`PlatformInterface.resolve`), else the system
    /// resolver.
    Auto,
    /// The interface's DNS servers (as `Auto` when it has none).
    Interface,
    /// `PlatformInterface.resolve` for every interface (its servers, then the system resolver,
    /// when the host answers `ResolveYourself`).
    Host,
    /// The system resolver (`getaddrinfo`) for everything.
    System,
}

impl From<DnsResolver> for ResolverChoice {
    fn from(choice: DnsResolver) -> Self {
        match choice {
            DnsResolver::Auto => ResolverChoice::Auto,
            DnsResolver::Interface => ResolverChoice::Interface,
            DnsResolver::Host => ResolverChoice::Host,
            DnsResolver::System => ResolverChoice::System,
        }
    }
}

impl From<ResolverChoice> for DnsResolver {
    fn from(choice: ResolverChoice) -> Self {
        match choice {
            ResolverChoice::Auto => DnsResolver::Auto,
            ResolverChoice::Interface => DnsResolver::Interface,
            ResolverChoice::Host => DnsResolver::Host,
            ResolverChoice::System => DnsResolver::System,
        }
    }
}

/// What `ConnectionManager.resolve` found.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ResolveResult {
    /// The addresses, the preferred family first (`domain_strategy`).
    pub addresses: Vec<String>,
    /// The interface whose resolver answered; `None` for the system route.
    pub interface: Option<String>,
    /// Who answered, per family: `"AAAA: DNS 10.0.0.1 on wlan0"`, `"A: cache (DNS 10.0.0.1 on
    /// wlan0)"`, `"A: the host's resolver on rmnet0"`, `"A: the system resolver"`.
    pub answered_by: Vec<String>,
    /// How long the lookup took, in milliseconds.
    pub elapsed_ms: u64,
}

impl From<&NameReport> for ResolveResult {
    fn from(report: &NameReport) -> Self {
        ResolveResult {
            addresses: report.addresses.iter().map(ToString::to_string).collect(),
            interface: report.interface.clone(),
            answered_by: report
                .answers
                .iter()
                .map(|a| match &a.source {
                    Some(source) => format!("{}: {source}", a.family),
                    None => format!("{}: unknown", a.family),
                })
                .collect(),
            elapsed_ms: u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Adapts a [`PlatformInterface`] to the core's [`HostDns`].
pub(crate) struct PlatformDns {
    pub platform: Arc<dyn PlatformInterface>,
}

impl HostDns for PlatformDns {
    fn resolve(
        &self,
        name: &str,
        interface: &crate::network::NetworkInterface,
        family: Family,
    ) -> HostFuture {
        let (platform, name, record) =
            (self.platform.clone(), name.to_string(), NetworkInterface::from(interface));
        Box::pin(async move {
            let answer = platform.resolve(name, record, family == Family::V4, family == Family::V6).await;
            match answer {
                Ok(HostResolution::ResolveYourself) => Ok(HostAnswer::ResolveYourself),
                Ok(HostResolution::Addresses { addresses }) => {
                    let mut ips = Vec::with_capacity(addresses.len());
                    for text in &addresses {
                        let ip: IpAddr = text.parse().map_err(|_| {
                            HostDnsError::Failed(format!("answered {text:?}, not an IP address"))
                        })?;
                        ips.push(ip);
                    }
                    Ok(HostAnswer::Addresses(ips))
                }
                Err(NetswitchError::NameNotFound { reason, .. }) => Err(HostDnsError::NotFound(reason)),
                Err(error) => Err(HostDnsError::Failed(error.to_string())),
            }
        })
    }
}
