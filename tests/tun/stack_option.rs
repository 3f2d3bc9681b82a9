//! `netswitch tun --stack userspace`: the CLI hands the stack choice to the tunnel (its device
//! is created without offloads, which smoltcp cannot take) and relays the app's TCP connections
//! and UDP flows through smoltcp: the kernel-stack CLI test's body with `--stack userspace`.

use netswitch::tun::Stack;

use super::{cli_relays, role, run_in_namespace};

#[test]
fn tun_cli_relays_through_the_userspace_stack() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("stack_option::tun_cli_relays_through_the_userspace_stack");
    }
    cli_relays(Stack::Userspace);
}
