//! README.md stays true to the CLI: every flag that `netswitch socks --help` prints is in
//! README's flag table, and every config key the `--config` help names is in README's config
//! table. (scripts/quickstart-check runs README's first command itself.)

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md is readable")
}

/// The first cells of README's table rows (`| --listen ADDR |` → "--listen ADDR").
fn table_heads(readme: &str) -> Vec<&str> {
    readme
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split(" |").next())
        .collect()
}

fn in_a_table_head(readme: &str, word: &str) -> bool {
    table_heads(readme).iter().any(|head| {
        head.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).any(|part| part == word)
    })
}

fn socks_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_netswitch"))
        .args(["socks", "--help"])
        .output()
        .expect("netswitch runs");
    assert!(output.status.success(), "netswitch socks --help exits 0");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The long flags of a help text (`--listen`, `--user`, ...), without `--help`.
fn flags(help: &str) -> Vec<String> {
    let mut flags: Vec<String> = help
        .split_whitespace()
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').to_string())
        .filter(|flag| flag != "--help")
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn every_socks_flag_is_in_the_readme_flag_table() {
    let help = socks_help();
    let readme = readme();
    let found = flags(&help);
    assert!(found.len() >= 10, "the help lists the socks flags: {found:?}");
    let missing: Vec<&String> = found.iter().filter(|flag| !in_a_table_head(&readme, flag)).collect();
    assert!(missing.is_empty(), "flags missing from README's flag table: {missing:?}");
}

#[test]
fn every_config_key_in_the_help_is_in_the_readme_config_table() {
    let help = socks_help();
    let readme = readme();
    let config_line = help.split("--config").nth(1).expect("the help documents --config");
    let keys_text = config_line.split("Flags override it").next().unwrap_or(config_line);
    let mut missing = Vec::new();
    for key in keys_text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.contains('_') && word.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    {
        if !in_a_table_head(&readme, key) {
            missing.push(key.to_string());
        }
    }
    assert!(missing.is_empty(), "config keys missing from README: {missing:?}");
}
