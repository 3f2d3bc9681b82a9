//! Which TCP stack terminates the apps' connections of a tunnel.

/// The TCP stack of a tunnel ([`super::TunSettings::stack`]). UDP takes the same packet path
/// with either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stack {
    /// The kernel's TCP, through a NAT to a listener on the tunnel's address ([`super::system`]).
    /// Needs the right to listen there: Linux and Android. The default there.
    System,
    /// smoltcp inside netswitch ([`super::userspace`]): needs nothing from the kernel but the
    /// packets. The default on Apple platforms.
    Userspace,
}

impl Default for Stack {
    fn default() -> Stack {
        if cfg!(target_vendor = "apple") {
            Stack::Userspace
        } else {
            Stack::System
        }
    }
}
