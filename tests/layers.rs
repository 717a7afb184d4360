//! The layering of `src/` (docs/design.md): each top-level module imports
//! only from the layers below it, so the tree shows the architecture and no
//! cycle can creep back in. Reads the sources: every `crate::NAME` path, with
//! names the crate root re-exports mapped to the layer they come from.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Bottom up; a module may use those before it in this list.
const LAYERS: &[&str] = &[
    "net", "process", "reactor", "protocol", "offload", "server", "restart",
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Names the crate root re-exports, and the layer each comes from
/// (`pub use reactor::handle::Handle;`, `pub use net::{activation, proxy};`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let lib = lib.replace('\n', " ");
    for stmt in lib.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let layer: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if !LAYERS.contains(&layer.as_str()) {
            continue;
        }
        let names = match (rest.find('{'), rest.rfind('}')) {
            (Some(a), Some(b)) => rest[a + 1..b].to_string(),
            _ => rest.rsplit("::").next().unwrap_or("").to_string(),
        };
        for name in names.split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_string(), layer.clone());
            }
        }
    }
    map
}

/// The names a file reaches through `crate::` (the first segment of each
/// path, every member of a `crate::{..}` group).
fn crate_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let first: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                    names.push(first);
                }
            } else {
                names.push(rest.chars().take_while(|&c| is_ident(c)).collect());
            }
        }
    }
    names
}

#[test]
fn every_layer_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let exported = reexports(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen_layers = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let top = top.trim_end_matches(".rs");
        let Some(mine) = LAYERS.iter().position(|l| *l == top) else {
            // lib.rs and guide.rs are the crate root's.
            continue;
        };
        seen_layers += 1;
        for name in crate_names(&fs::read_to_string(&file).unwrap()) {
            let layer = if LAYERS.contains(&name.as_str()) {
                Some(name.clone())
            } else {
                exported.get(&name).cloned()
            };
            let Some(layer) = layer else { continue };
            let theirs = LAYERS.iter().position(|l| *l == layer).unwrap();
            if theirs > mine {
                wrong.push(format!(
                    "{} uses crate::{name} ({layer} is above {top})",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        seen_layers > 50,
        "only {seen_layers} files read: is the tree where this test looks?"
    );
    assert!(
        wrong.is_empty(),
        "imports that go up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_that_goes_up() {
    // The parser itself: a group, a path, a re-exported name, a comment.
    let names = crate_names(
        "use crate::{Reactor, net::Addr};\nlet x = crate::server::Mode::Sync; // crate::offload\n",
    );
    assert_eq!(names, ["Reactor", "net", "server"]);
    let map = reexports(
        "pub use reactor::handle::Handle;\npub use net::{activation, proxy};\npub use bytes;",
    );
    assert_eq!(map.get("Handle").map(String::as_str), Some("reactor"));
    assert_eq!(map.get("proxy").map(String::as_str), Some("net"));
    assert!(!map.contains_key("bytes"));
}
