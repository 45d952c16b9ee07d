//! The module graph of both crates has no cycle: a module never imports,
//! through any path, a module that imports it (config is a leaf, and
//! collaborative filtering's layers import downwards only). The graph is
//! read from the sources: every `crate::a::b` and `super::b` path, and each
//! name of a `crate::a::{b, c}` group, points at the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name (`runtime::pipeline`) → its source text, comments removed.
fn modules(root: &Path) -> BTreeMap<String, String> {
    let mut modules = BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let name = relative.to_str().unwrap().replace('/', "::");
            if name == "lib" || name == "main" || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code: Vec<&str> = text
                .lines()
                .map(|l| l.split("//").next().unwrap())
                .collect();
            modules.insert(name, code.join("\n"));
        }
    }
    modules
}

/// The `a::b::c` paths following each occurrence of `prefix` in `code`,
/// with the names of a `{b, c}` group each appended to the path before it.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (start, _) in code.match_indices(prefix) {
        let rest = &code[start + prefix.len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_owned();
        let after = &rest[path.len()..];
        if let Some(group) = after.strip_prefix("::{") {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for name in group.split(',') {
                let name = name.trim().split("::").next().unwrap_or("");
                if !name.is_empty() {
                    paths.push(format!("{path}::{name}"));
                }
            }
        }
        paths.push(path);
    }
    paths
}

fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(root);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, code) in &modules {
        let parent = name.rsplit_once("::").map(|(parent, _)| parent);
        let mut paths = paths_after(code, "crate::");
        for path in paths_after(code, "super::") {
            paths.push(match parent {
                Some(parent) => format!("{parent}::{path}"),
                None => path,
            });
        }
        for path in paths {
            let parts: Vec<&str> = path.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target {
                let nested = |a: &str, b: &str| a.starts_with(&format!("{b}::"));
                if target != *name && !nested(name, &target) && !nested(&target, name) {
                    edges.entry(name.clone()).or_default().insert(target);
                }
            }
        }
    }
    edges
}

/// A cycle of `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graphs_have_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for crate_root in ["src", "dataflows/src"] {
        let edges = graph(&root.join(crate_root));
        assert!(
            edges.contains_key("cf::recommend") || edges.contains_key("runtime::worker"),
            "{crate_root}: no module graph read"
        );
        if let Some(cycle) = find_cycle(&edges) {
            panic!(
                "{crate_root}: modules import each other: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("config", vec!["sink::kafka"]),
        ("sink::kafka", vec!["source::kafka"]),
        ("source::kafka", vec!["config"]),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.into_iter().map(String::from).collect()))
    .collect();
    let cycle = find_cycle(&edges).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}
