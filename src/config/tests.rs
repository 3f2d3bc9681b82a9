//! Tests of the configuration: defaults, every key, errors that name the key or file.

use super::*;

#[test]
fn tls_fragment_keys_become_connection_defaults() {
    let config = Config::from_json(
        r#"{"tls_fragment": true, "tls_record_fragment": true, "tls_fragment_fallback_delay": "50ms"}"#,
    )
    .unwrap();
    let defaults = config.tls_fragment_settings();
    assert_eq!(
        defaults,
        FragmentSettings { segment: true, record: true, fallback_delay: Duration::from_millis(50) }
    );
    // Merged with a connection's options: either side turns a mode on; the connection's delay wins.
    let options = crate::metadata::ConnectionOptions {
        tls_fragment_fallback_delay: Some(Duration::from_millis(7)),
        ..Default::default()
    };
    assert_eq!(defaults.for_connection(&options).fallback_delay, Duration::from_millis(7));
    let per_connection =
        crate::metadata::ConnectionOptions { tls_record_fragment: true, ..Default::default() };
    let merged = Config::default().tls_fragment_settings().for_connection(&per_connection);
    assert!(merged.record && !merged.segment);
    assert_eq!(merged.fallback_delay, Duration::from_millis(500));
    let error = Config::from_json(r#"{"tls_fragment_fallback_delay": "0s"}"#).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`tls_fragment_fallback_delay` must be greater than 0"), "{message}");
    let error = Config::from_json(r#"{"tls_fragment": "yes"}"#).unwrap_err();
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
}

#[test]
fn empty_object_gives_the_documented_defaults() {
    let config = Config::from_json("{}").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.half_close_timeout, Duration::from_secs(60));
    assert_eq!(config.socks_settings(), SocksSettings::default());
    assert_eq!(config.socks.listen, "127.0.0.1:1080".parse().unwrap());
    assert_eq!(config.socks.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.relay_settings(), RelaySettings::default());
    assert_eq!(config.tls_fragment_settings(), FragmentSettings::default());
}

#[test]
fn parses_every_key() {
    let config = Config::from_json(
        r#"{ "log": { "level": "debug" },
             "socks": { "listen": "[::1]:0", "users": [{"username": "u", "password": "p"}],
                        "handshake_timeout": "1m30s", "allow_non_loopback": true },
             "connect_timeout": "300ms",
             "half_close_timeout": "0s" }"#,
    )
    .unwrap();
    assert_eq!(config.log.level, LogLevel::Debug);
    assert_eq!(config.socks.listen, "[::1]:0".parse().unwrap());
    assert_eq!(config.socks.users.len(), 1);
    assert_eq!(config.socks.users[0].username, "u");
    assert_eq!(config.socks.users[0].password, "p");
    assert_eq!(config.socks.handshake_timeout, Duration::from_secs(90));
    assert!(config.socks.allow_non_loopback);
    assert_eq!(config.connect_timeout, Duration::from_millis(300));
    assert_eq!(config.relay_settings().half_close_timeout, None);
    let socks = config.socks_settings();
    assert_eq!(socks.handshake_timeout, Duration::from_secs(90));
    assert!(socks.allow_non_loopback);
}

#[test]
fn accepts_go_style_and_spaced_durations() {
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("1h1m").unwrap(), Duration::from_secs(3660));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m 5s").unwrap(), Duration::from_secs(125));
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    let config = Config::from_json(r#"{"half_close_timeout": "2m"}"#).unwrap();
    assert_eq!(config.relay_settings().half_close_timeout, Some(Duration::from_secs(120)));
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    for (text, key) in [
        (r#"{"conect_timeout": "5s"}"#, "conect_timeout"),
        (r#"{"socks": {"lisen": "127.0.0.1:1"}}"#, "lisen"),
        (r#"{"log": {"levl": "info"}}"#, "levl"),
        (r#"{"socks": {"users": [{"username": "u", "password": "p", "pw": "x"}]}}"#, "pw"),
    ] {
        let error = Config::from_json(text).unwrap_err();
        assert!(matches!(error, ConfigError::Syntax { .. }), "{text}: {error:?}");
        assert!(error.to_string().contains(&format!("`{key}`")), "{text}: {error}");
    }
}

#[test]
fn bad_durations_are_errors_that_name_the_field() {
    for (text, field) in [
        (r#"{"connect_timeout": "5 parsecs"}"#, "connect_timeout"),
        (r#"{"connect_timeout": "5"}"#, "connect_timeout"),
        (r#"{"connect_timeout": 5}"#, "connect_timeout"),
        (r#"{"half_close_timeout": "-1s"}"#, "half_close_timeout"),
        (r#"{"socks": {"handshake_timeout": ""}}"#, "socks.handshake_timeout"),
    ] {
        let error = Config::from_json(text).unwrap_err();
        assert!(matches!(error, ConfigError::Syntax { .. }), "{text}: {error:?}");
        assert!(error.to_string().contains(&format!("`{field}`")), "{text}: {error}");
    }
}

#[test]
fn zero_timeouts_that_must_be_positive_are_rejected() {
    for (text, field) in [
        (r#"{"connect_timeout": "0s"}"#, "connect_timeout"),
        (r#"{"socks": {"handshake_timeout": "0ms"}}"#, "socks.handshake_timeout"),
    ] {
        let error = Config::from_json(text).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { field: f, .. } if f == field), "{error:?}");
        assert!(error.to_string().contains(&format!("`{field}` must be greater than 0")), "{error}");
    }
}

#[test]
fn bad_values_are_rejected() {
    for text in [
        r#"{"log": {"level": "verbose"}}"#,
        r#"{"socks": {"listen": "localhost"}}"#,
        r#"{"socks": {"allow_non_loopback": "yes"}}"#,
        r#"{"socks": {"users": [{"username": "u"}]}}"#,
        "{",
    ] {
        let error = Config::from_json(text).unwrap_err();
        assert!(matches!(error, ConfigError::Syntax { .. }), "{text}: {error:?}");
    }
    let error = Config::from_json(r#"{"log": {"level": "verbose"}}"#).unwrap_err();
    assert!(error.to_string().contains("verbose"), "{error}");
}

#[test]
fn strategy_keys_reach_the_dial_settings() {
    let config = Config::from_json(
        r#"{ "network_strategy": "fallback", "network_type": "wifi",
             "fallback_network_type": ["cellular", "ethernet"], "fallback_delay": "150ms",
             "domain_strategy": "ipv4_only", "tcp_keep_alive": "1m", "tcp_keep_alive_interval": "10s",
             "tcp_user_timeout": "0s", "interface_types": {"enp3s0": "wifi"} }"#,
    )
    .unwrap();
    let dial = config.dial_settings();
    assert_eq!(dial.network_strategy, NetworkStrategy::Fallback);
    assert_eq!(dial.network_type, vec![NetworkType::Wifi]);
    assert_eq!(dial.fallback_network_type, vec![NetworkType::Cellular, NetworkType::Ethernet]);
    assert_eq!(dial.fallback_delay, Duration::from_millis(150));
    assert_eq!(dial.domain_strategy, DomainStrategy::Ipv4Only);
    assert_eq!(
        dial.tcp.keepalive.map(|k| (k.idle, k.interval)),
        Some((Duration::from_secs(60), Duration::from_secs(10)))
    );
    assert_eq!(dial.tcp.user_timeout, None);
    assert_eq!(config.interface_types.get("enp3s0"), Some(&NetworkType::Wifi));
    let off = Config::from_json(r#"{"disable_tcp_keep_alive": true}"#).unwrap();
    assert_eq!(off.dial_settings().tcp.keepalive, None);
    let error = Config::from_json(r#"{"network_type": "satellite"}"#).unwrap_err();
    assert!(error.to_string().contains("network types must be one of"), "{error}");
    let error = Config::from_json(r#"{"network_strategy": "random"}"#).unwrap_err();
    assert!(error.to_string().contains("random"), "{error}");
}

#[test]
fn udp_keys_reach_the_udp_settings() {
    let defaults = Config::from_json("{}").unwrap().udp_settings();
    assert_eq!(defaults.timeouts.default, Duration::from_secs(300));
    assert_eq!(defaults.session_capacity, 1024);
    let config = Config::from_json(r#"{"udp_timeout": "1m", "udp_session_capacity": 16}"#).unwrap();
    let settings = config.udp_settings();
    assert_eq!(settings.timeouts.default, Duration::from_secs(60));
    assert_eq!(settings.timeouts.short, Duration::from_secs(10), "protocol timeouts unchanged");
    assert_eq!(settings.session_capacity, 16);
    assert_eq!((defaults.max_associations, defaults.max_sockets), (256, 1024));
    let config = Config::from_json(r#"{"udp_max_associations": 3, "udp_max_sockets": 7}"#).unwrap();
    let settings = config.udp_settings();
    assert_eq!((settings.max_associations, settings.max_sockets), (3, 7));
    assert_eq!(config.socks_settings().udp, settings, "the SOCKS server gets them");
    for (text, field) in [
        (r#"{"udp_timeout": "0s"}"#, "udp_timeout"),
        (r#"{"udp_session_capacity": 0}"#, "udp_session_capacity"),
        (r#"{"udp_max_associations": 0}"#, "udp_max_associations"),
        (r#"{"udp_max_sockets": 0}"#, "udp_max_sockets"),
    ] {
        let error = Config::from_json(text).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { field: f, .. } if f == field), "{error:?}");
    }
}

#[test]
fn file_errors_name_the_file() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("netswitch-config-test-{}.json", std::process::id()));
    std::fs::write(&path, r#"{"socks": {"bogus": 1}}"#).unwrap();
    let error = Config::from_file(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("`bogus`"), "{message}");

    let missing = dir.join("netswitch-config-test-does-not-exist.json");
    let error = Config::from_file(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains(&missing.display().to_string()), "{error}");
}

#[test]
fn durations_the_kernels_refuse_are_rejected_naming_the_key() {
    // From issue 11: "10h" keepalive and "25d" user timeout started fine, then every CONNECT
    // failed with EINVAL.
    for (text, field) in [
        (r#"{"tcp_keep_alive": "10h"}"#, "tcp_keep_alive"),
        (r#"{"tcp_keep_alive": "32768s"}"#, "tcp_keep_alive"),
        (r#"{"tcp_keep_alive": "500ms"}"#, "tcp_keep_alive"),
        (r#"{"tcp_keep_alive_interval": "10h"}"#, "tcp_keep_alive_interval"),
        (r#"{"tcp_user_timeout": "25d"}"#, "tcp_user_timeout"),
        (r#"{"tcp_user_timeout": "2147483648ms"}"#, "tcp_user_timeout"),
        (r#"{"tcp_user_timeout": "500us"}"#, "tcp_user_timeout"),
    ] {
        let error = Config::from_json(text).unwrap_err();
        assert!(matches!(error, ConfigError::Invalid { field: f, .. } if f == field), "{text}: {error:?}");
        let message = error.to_string();
        assert!(message.contains(&format!("`{field}` must be")), "{text}: {message}");
    }
    // The largest values the kernels accept are accepted.
    let config = Config::from_json(
        r#"{"tcp_keep_alive": "32767s", "tcp_keep_alive_interval": "1s", "tcp_user_timeout": "2147483647ms"}"#,
    )
    .unwrap();
    assert_eq!(config.dial_settings().tcp.user_timeout, Some(limits::MAX_TCP_USER_TIMEOUT));
    // Keepalive times are not used when keepalive is off.
    Config::from_json(r#"{"disable_tcp_keep_alive": true, "tcp_keep_alive": "10h"}"#).unwrap();
}

#[test]
fn absurd_durations_are_rejected_for_every_key() {
    let keys = [
        "connect_timeout",
        "half_close_timeout",
        "fallback_delay",
        "tcp_keep_alive",
        "tcp_keep_alive_interval",
        "tcp_user_timeout",
        "udp_timeout",
        "tls_fragment_fallback_delay",
        "socks.handshake_timeout",
    ];
    for key in keys {
        for value in ["500000000000y", "366d"] {
            let text = match key.strip_prefix("socks.") {
                Some(inner) => format!(r#"{{"socks": {{"{inner}": "{value}"}}}}"#),
                None => format!(r#"{{"{key}": "{value}", "disable_tcp_keep_alive": true}}"#),
            };
            let error = Config::from_json(&text).unwrap_err();
            assert!(matches!(error, ConfigError::Invalid { field, .. } if field == key), "{text}: {error:?}");
            assert!(error.to_string().contains(&format!("`{key}` must be")), "{text}: {error}");
        }
    }
    let config = Config::from_json(r#"{"connect_timeout": "365d", "half_close_timeout": "365d"}"#).unwrap();
    assert_eq!(config.connect_timeout, limits::MAX_DURATION);
}

#[test]
fn unauthenticated_non_loopback_is_a_separate_switch() {
    let config = Config::from_json(
        r#"{"socks": {"listen": "0.0.0.0:1080", "allow_non_loopback": true,
                       "allow_unauthenticated_non_loopback": true}}"#,
    )
    .unwrap();
    let settings = config.socks_settings();
    assert!(settings.allow_non_loopback && settings.allow_unauthenticated_non_loopback);
    assert!(!Config::default().socks_settings().allow_unauthenticated_non_loopback);
}
