//! SOCKS5 ingress (being written).
