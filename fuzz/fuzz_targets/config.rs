//! Fuzzes the JSON configuration parser (the CLI's file and the host API's `config_from_json`):
//! no input may panic, both entry points agree, and every setting derived from an accepted
//! configuration can be built.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netswitch::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let core = Config::from_json(text);
    let host = netswitch::ffi::config::config_from_json(text.to_string());
    assert_eq!(core.is_ok(), host.is_ok(), "{core:?} / {host:?}");
    let Ok(config) = core else { return };
    let _ = config.relay_settings();
    let _ = config.socks_settings();
    let _ = config.dial_settings();
    let _ = config.udp_settings();
    let _ = config.tls_fragment_settings();
    let _ = config.direct_outbound();
});
