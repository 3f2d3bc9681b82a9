//! Configures a Linux TUN device with ioctls (no `ip` command, no netlink crate): MTU, IPv4 and
//! IPv6 addresses, up, and routes through it (`SIOCADDRT`; IPv4 with `struct rtentry`, IPv6 with
//! `struct in6_rtmsg`, both in the kernel's layout). Routes through the device go away with it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An address or route prefix: `ip/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (ip, len) = text.split_once('/').ok_or_else(|| format!("{text:?}: expected ADDRESS/PREFIX"))?;
        let ip: IpAddr = ip.parse().map_err(|_| format!("{text:?}: {ip:?} is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|len| *len <= max)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?;
        Ok(Cidr { ip, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.len)
    }
}

/// Sets the device's MTU, adds its addresses, brings it up and adds the routes through it.
pub fn configure(name: &str, mtu: usize, addresses: &[Cidr], routes: &[Cidr]) -> Result<(), String> {
    let context = |what: String| move |error: io::Error| format!("{name}: {what}: {error}");
    let v4 = socket(libc::AF_INET).map_err(context("socket".into()))?;
    let mut request = ifreq(name);
    request.ifr_ifru.ifru_mtu = i32::try_from(mtu).unwrap_or(i32::MAX);
    ioctl(&v4, libc::SIOCSIFMTU as _, &mut request).map_err(context(format!("set MTU {mtu}")))?;
    for address in addresses {
        add_address(name, &v4, *address).map_err(context(format!("add address {address}")))?;
    }
    let mut request = ifreq(name);
    ioctl(&v4, libc::SIOCGIFFLAGS as _, &mut request).map_err(context("read flags".into()))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(&v4, libc::SIOCSIFFLAGS as _, &mut request).map_err(context("bring up".into()))?;
    for route in routes {
        add_route(name, &v4, *route).map_err(context(format!("add route {route}")))?;
    }
    Ok(())
}

fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(socket: &OwnedFd, request: libc::Ioctl, argument: &mut T) -> io::Result<()> {
    // SAFETY: every request used here reads or writes exactly one `T`, which outlives the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, argument as *mut T) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *slot = byte as libc::c_char;
    }
    request
}

fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr {
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; this is how the ioctls take it.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(address) }
}

fn mask_v4(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0))
}

fn in6(ip: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr { s6_addr: ip.octets() }
}

fn index(name: &str) -> io::Result<libc::c_int> {
    let index = nix::net::if_::if_nametoindex(name).map_err(io::Error::from)?;
    libc::c_int::try_from(index).map_err(io::Error::other)
}

fn add_address(name: &str, v4: &OwnedFd, address: Cidr) -> io::Result<()> {
    match address.ip {
        IpAddr::V4(ip) => {
            let mut request = ifreq(name);
            request.ifr_ifru.ifru_addr = sockaddr_v4(ip);
            ioctl(v4, libc::SIOCSIFADDR as _, &mut request)?;
            let mut request = ifreq(name);
            request.ifr_ifru.ifru_netmask = sockaddr_v4(mask_v4(address.len));
            ioctl(v4, libc::SIOCSIFNETMASK as _, &mut request)
        }
        IpAddr::V6(ip) => {
            let v6 = socket(libc::AF_INET6)?;
            let mut request = libc::in6_ifreq {
                ifr6_addr: in6(ip),
                ifr6_prefixlen: address.len.into(),
                ifr6_ifindex: index(name)?,
            };
            ioctl(&v6, libc::SIOCSIFADDR as _, &mut request)
        }
    }
}

/// The kernel's `struct rtentry` (include/uapi/linux/route.h).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// The kernel's `struct in6_rtmsg` (include/uapi/linux/ipv6_route.h).
#[repr(C)]
struct In6RtMsg {
    rtmsg_dst: libc::in6_addr,
    rtmsg_src: libc::in6_addr,
    rtmsg_gateway: libc::in6_addr,
    rtmsg_type: u32,
    rtmsg_dst_len: u16,
    rtmsg_src_len: u16,
    rtmsg_metric: u32,
    rtmsg_info: libc::c_ulong,
    rtmsg_flags: u32,
    rtmsg_ifindex: libc::c_int,
}

const RTF_UP: u16 = 0x0001;

fn add_route(name: &str, v4: &OwnedFd, route: Cidr) -> io::Result<()> {
    match route.ip {
        IpAddr::V4(ip) => {
            let mask = mask_v4(route.len);
            let mut device: Vec<libc::c_char> = name.bytes().map(|b| b as libc::c_char).chain([0]).collect();
            let mut entry = RtEntry {
                rt_pad1: 0,
                rt_dst: sockaddr_v4(Ipv4Addr::from(u32::from(ip) & u32::from(mask))),
                rt_gateway: sockaddr_v4(Ipv4Addr::UNSPECIFIED),
                rt_genmask: sockaddr_v4(mask),
                rt_flags: RTF_UP,
                rt_pad2: 0,
                rt_pad3: 0,
                rt_pad4: std::ptr::null_mut(),
                rt_metric: 0,
                rt_dev: device.as_mut_ptr(),
                rt_mtu: 0,
                rt_window: 0,
                rt_irtt: 0,
            };
            ioctl(v4, libc::SIOCADDRT as _, &mut entry)
        }
        IpAddr::V6(ip) => {
            let v6 = socket(libc::AF_INET6)?;
            let mask = u128::MAX.checked_shl(128 - u32::from(route.len)).unwrap_or(0);
            let mut message = In6RtMsg {
                rtmsg_dst: in6(Ipv6Addr::from(u128::from(ip) & mask)),
                rtmsg_src: in6(Ipv6Addr::UNSPECIFIED),
                rtmsg_gateway: in6(Ipv6Addr::UNSPECIFIED),
                rtmsg_type: 0,
                rtmsg_dst_len: route.len.into(),
                rtmsg_src_len: 0,
                rtmsg_metric: 1,
                rtmsg_info: 0,
                rtmsg_flags: RTF_UP.into(),
                rtmsg_ifindex: index(name)?,
            };
            ioctl(&v6, libc::SIOCADDRT as _, &mut message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes() {
        assert_eq!("172.19.0.1/30".parse::<Cidr>().unwrap().to_string(), "172.19.0.1/30");
        assert_eq!("fdfe::1/126".parse::<Cidr>().unwrap().len, 126);
        assert!("172.19.0.1".parse::<Cidr>().is_err());
        assert!("172.19.0.1/33".parse::<Cidr>().is_err());
        assert!("a..invalid/3".parse::<Cidr>().is_err());
        assert_eq!(mask_v4(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(mask_v4(0), Ipv4Addr::UNSPECIFIED);
    }
}
