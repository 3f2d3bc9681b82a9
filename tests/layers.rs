//! The module map in src/lib.rs's crate docs is the crate's layout, and it is kept true: every
//! top-level module under src/ has its row, and a module imports (`crate::x`, outside comments and
//! unit tests) only modules whose rows come after its own — the layers only look down. A known
//! exception is listed in [`KNOWN_UPWARD`] and must still exist: remove it with its import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Imports that still run back up: (file, module imported). Each must still be there. None
/// today: the last one (the upstream SOCKS5 client borrowing the server's wire constants) went
/// with the shared SOCKS5 codec.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module names of the map's rows, top (ingress side) to bottom (platform side).
fn map_order(lib: &str) -> Vec<String> {
    let table = lib.split("# Module map").nth(1).expect("src/lib.rs has a `# Module map` section");
    table
        .lines()
        .skip(1)
        .map_while(|line| line.strip_prefix("//!"))
        .filter_map(|line| line.trim().strip_prefix('|'))
        .skip_while(|row| !row.starts_with("---"))
        .skip(1)
        .filter_map(|row| row.split(" |").next())
        .map(|head| head.trim().trim_matches(|c: char| "[]`".contains(c)).to_string())
        .filter(|name| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

/// The top-level modules that exist: src/x.rs and src/x/ (not lib.rs, not the binaries).
fn modules_on_disk() -> BTreeSet<String> {
    std::fs::read_dir(src())
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let name = name.strip_suffix(".rs").map(str::to_string).unwrap_or(name);
            (name != "lib" && name != "bin").then_some(name)
        })
        .collect()
}

/// Which module defines each name the crate root re-exports (`pub use network::{...}`).
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for statement in lib.split("pub use ").skip(1) {
        let statement = statement.split(';').next().unwrap_or_default();
        let Some((module, rest)) = statement.split_once("::") else { continue };
        for name in rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|n| !n.is_empty()) {
            owners.insert(name.to_string(), module.trim().to_string());
        }
    }
    owners
}

/// The code of a file without comment lines and without its `#[cfg(test)]` unit tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules a file's code names through `crate::`.
fn imports(code: &str, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for after in code.split("crate::").skip(1) {
        let names: Vec<&str> = match after.strip_prefix('{') {
            Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
            None => vec![after],
        };
        for name in names {
            let name: String = name.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            match reexports.get(&name) {
                Some(owner) => found.insert(owner.clone()),
                None => found.insert(name),
            };
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_module_map_lists_every_module_and_layers_only_look_down() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let order = map_order(&lib);
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(listed.len(), order.len(), "a module has two rows: {order:?}");
    assert_eq!(listed, modules_on_disk(), "src/lib.rs's module map and the modules under src/ differ");

    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut upward = BTreeSet::new();
    for file in files {
        let relative = file.strip_prefix(src().parent().unwrap()).unwrap().to_string_lossy().to_string();
        let top =
            relative.trim_start_matches("src/").split(['/', '.']).next().unwrap_or_default().to_string();
        let Some(&own) = rank.get(top.as_str()) else { continue };
        for imported in imports(&code(&file), &reexports) {
            if rank.get(imported.as_str()).is_some_and(|&r| r < own) {
                upward.insert((relative.clone(), imported));
            }
        }
    }
    let known: BTreeSet<(String, String)> =
        KNOWN_UPWARD.iter().map(|(file, module)| (file.to_string(), module.to_string())).collect();
    let new: Vec<_> = upward.difference(&known).collect();
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(new.is_empty(), "imports that run back up the module map (file -> module): {new:?}");
    assert!(gone.is_empty(), "these known exceptions are gone: remove them from KNOWN_UPWARD: {gone:?}");
}
