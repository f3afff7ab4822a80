//! `shared`'s modules import each other without cycles, and only the top layer knows `AppState` and HTTP:
//! domain modules take the pieces they need. Read from the sources (`crate::<module>` references outside
//! unit tests), so a new cycle fails here before it confuses a reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules that may name `state` or `http`: the layer on top and the test support.
const TOP_LAYER: [&str; 4] = ["state", "http", "testing", "telemetry"];

fn module_graph() -> Result<BTreeMap<String, BTreeSet<String>>, Box<dyn std::error::Error>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Some(relative) = path.strip_prefix(&src)?.to_str().map(str::to_owned) else { continue };
            let Some(top) = relative.trim_end_matches(".rs").split('/').next().map(str::to_owned) else { continue };
            if top == "lib" || !relative.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let deps = graph.entry(top.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    Ok(graph)
}

/// A cycle through `from`, if any (depth-first, the path so far in `path`).
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|p| p == node) {
        let mut found = path[start..].to_vec();
        found.push(node.to_owned());
        return Some(found);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(found) = cycle(graph, next, path, done) {
            return Some(found);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn no_module_of_shared_imports_in_a_circle() -> Result<(), Box<dyn std::error::Error>> {
    let graph = module_graph()?;
    assert!(graph.len() > 20 && graph.contains_key("wallet") && graph.contains_key("store"), "{graph:?}");
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(found) = cycle(&graph, module, &mut Vec::new(), &mut done) {
            return Err(format!("modules import each other in a circle: {}", found.join(" -> ")).into());
        }
    }
    Ok(())
}

#[test]
fn only_the_top_layer_knows_app_state_and_http() -> Result<(), Box<dyn std::error::Error>> {
    for (module, deps) in module_graph()? {
        if TOP_LAYER.contains(&module.as_str()) {
            continue;
        }
        for layer in ["state", "http"] {
            assert!(!deps.contains(layer), "{module} imports crate::{layer}");
        }
    }
    Ok(())
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        cycle(&graph, "a", &mut Vec::new(), &mut BTreeSet::new()),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.insert("c".to_owned(), BTreeSet::new());
    assert_eq!(cycle(&graph, "a", &mut Vec::new(), &mut BTreeSet::new()), None);
}

/// No source file of the services, the local server or the test support grows past what a reader takes in
/// (functions are held to 60 lines and 5 parameters by clippy, `clippy.toml`). Behaviour tests
/// (`tests/tests`, `shared/tests`) are scenarios and may be longer.
#[test]
fn source_files_stay_under_five_hundred_lines() -> Result<(), Box<dyn std::error::Error>> {
    const MAX_LINES: usize = 500;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pending = vec![root.join("shared/src"), root.join("dev-server/src"), root.join("tests/src")];
    for function in std::fs::read_dir(root.join("functions"))? {
        pending.push(function?.path().join("src"));
    }
    let (mut seen, mut long) = (0, Vec::new());
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                seen += 1;
                let lines = std::fs::read_to_string(&path)?.lines().count();
                if lines > MAX_LINES {
                    long.push(format!("{}: {lines} lines", path.strip_prefix(&root).unwrap_or(&path).display()));
                }
            }
        }
    }
    assert!(seen > 100, "the scan found the sources ({seen})");
    assert!(long.is_empty(), "split these along their seams (at most {MAX_LINES} lines):\n{}", long.join("\n"));
    Ok(())
}
