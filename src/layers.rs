//! The layer fitness test: reads every `src/**/*.rs`, builds the graph of top-level
//! modules from their `crate::` references, and fails, naming the edge and where it is
//! written, on an import cycle, on a front end importing another front end, and on a
//! module importing a layer above its own. A new module must be placed in [`LAYERS`].
//!
//! Test code (`#[cfg(test)]` items) is left out: a test may reach any layer to set up what
//! it checks. `super::` paths are left out too (they stay inside a module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A module may import its own layer and those below; front ends may not
/// import each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// Config primitives, metrics, limits, OS helpers, the task supervisor, and the
    /// vendor tables (data: the callers consume them).
    Leaf,
    /// The TCP acceptor and the file catalog.
    Plumbing,
    /// Devices and their pipeline, status, TLS, hooks, resync, the store, outbound HTTP.
    Domain,
    /// What front ends are given (`frontend::Context`) and the HTTP serving kit (`http`)
    /// that `web`, `dashboard` and `tls_legacy` serve their listeners with.
    Serving,
    /// One module per protocol or listener group; never importing one another.
    FrontEnd,
    /// The aggregate configuration: every section.
    Aggregate,
    /// The service adapters, the server and its banner.
    Wiring,
}

use Layer::*;

/// Every top-level module and its layer.
const LAYERS: &[(&str, Layer)] = &[
    ("confkit", Leaf),
    ("control", Leaf),
    ("limit", Leaf),
    ("metrics", Leaf),
    ("netif", Leaf),
    ("sdnotify", Leaf),
    ("secret", Leaf),
    ("supervisor", Leaf),
    ("vendors", Leaf),
    ("zerocopy", Leaf),
    ("acceptor", Plumbing),
    ("catalog", Plumbing),
    ("certs", Domain),
    ("upgrade", Domain),
    ("uploads", Domain),
    ("devices", Domain),
    ("hooks", Domain),
    ("http_client", Domain),
    ("resync", Domain),
    ("status", Domain),
    ("store", Domain),
    ("tls", Domain),
    ("api", Serving),
    ("frontend", Serving),
    ("http", Serving),
    ("dashboard", FrontEnd),
    ("dhcp", FrontEnd),
    ("dns", FrontEnd),
    ("syslog", FrontEnd),
    ("tftp", FrontEnd),
    ("tls_legacy", FrontEnd),
    ("web", FrontEnd),
    ("config", Aggregate),
    ("banner", Wiring),
    ("cli", Wiring),
    ("server", Wiring),
    ("service", Wiring),
    ("layers", Wiring),
];

/// Source text with comments, string and character literals blanked (newlines kept, so
/// line numbers stay right): a `crate::x` in a doc comment or a string is no import.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let newlines = |s: &[u8]| "\n".repeat(s.iter().filter(|&&c| c == b'\n').count());
    while i < b.len() {
        let c = b[i];
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let (start, mut depth) = (i, 0);
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push_str(&newlines(&b[start..i.min(b.len())]));
        } else if (c == b'r' || c == b'b') && !ident_before && raw_string_at(&b[i..]).is_some() {
            let len = raw_string_at(&b[i..]).unwrap_or(1);
            out.push_str(&newlines(&b[i..i + len]));
            out.push_str("\"\"");
            i += len;
        } else if c == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push_str(&newlines(&b[start..i]));
            out.push_str("\"\"");
        } else if c == b'\'' && char_literal_at(&b[i..]).is_some() {
            i += char_literal_at(&b[i..]).unwrap_or(1);
            out.push_str("' '");
        } else {
            // Whole UTF-8 sequences: a multi-byte character is never one of the above.
            let len = src[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&src[i..i + len]);
            i += len;
        }
    }
    out
}

/// The length of a raw (byte) string literal starting here: `r"…"`, `r#"…"#`, `br"…"`.
fn raw_string_at(b: &[u8]) -> Option<usize> {
    let mut i = usize::from(b.first() == Some(&b'b'));
    if b.get(i) != Some(&b'r') {
        return None;
    }
    i += 1;
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    i += hashes;
    if b.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    let end: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let close = b[i..]
        .windows(end.len())
        .position(|w| w == end.as_slice())?;
    Some(i + close + end.len())
}

/// The length of a character literal starting here (`'a'`, `'\n'`, `'\u{1F600}'`), or
/// None for a lifetime (`'a`, `'static`).
fn char_literal_at(b: &[u8]) -> Option<usize> {
    if b.get(1) == Some(&b'\\') {
        let close = b[2..].iter().position(|&c| c == b'\'')?;
        return Some(2 + close + 1);
    }
    let s = std::str::from_utf8(&b[1..b.len().min(6)])
        .ok()
        .or_else(|| {
            // A cut through a multi-byte character: try shorter.
            (1..5)
                .rev()
                .find_map(|n| std::str::from_utf8(&b[1..b.len().min(1 + n)]).ok())
        })?;
    let ch = s.chars().next()?;
    let after = 1 + ch.len_utf8();
    (b.get(after) == Some(&b'\'')).then_some(after + 1)
}

/// `src` without its `#[cfg(test)]` items (a module, a function, a `use`), lines kept.
fn strip_tests(src: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find(ATTR) {
        out.push_str(&rest[..at]);
        let item = &rest[at + ATTR.len()..];
        let end = match (item.find(';'), item.find('{')) {
            (Some(semi), brace) if brace.is_none_or(|b| semi < b) => semi + 1,
            (_, Some(open)) => {
                let mut depth = 0;
                let mut end = item.len();
                for (i, c) in item[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            _ => item.len(),
        };
        out.push_str(&"\n".repeat(item[..end].matches('\n').count()));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules `text` (stripped) names through `crate::`, with their lines:
/// `crate::a::b`, `use crate::a;`, and each first segment of `use crate::{a, b::c}`.
fn references(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
    let mut from = 0;
    while let Some(found) = text[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        if text[..at].ends_with(is_ident) {
            continue; // `foocrate::`, not a path
        }
        let rest = &text[from..];
        let rest_trimmed = rest.trim_start();
        if let Some(group) = rest_trimmed.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && !c.is_whitespace() => {
                        item_start = false;
                        let name: String =
                            group[i..].chars().take_while(|&c| is_ident(c)).collect();
                        if !name.is_empty() {
                            let pos = from + (rest.len() - rest_trimmed.len()) + 1 + i;
                            out.push((name, line_of(pos)));
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                out.push((name, line_of(at)));
            }
        }
    }
    out
}

/// module -> module it imports -> where (the first place, `file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The top-level module graph of `files` (paths relative to `src/`, with their text).
fn graph(files: &[(String, String)]) -> Graph {
    let mut g = Graph::new();
    for (path, text) in files {
        let top = path
            .split('/')
            .next()
            .unwrap_or(path)
            .trim_end_matches(".rs");
        // The crate roots: `lib.rs` only declares modules, `main.rs` is the binary (its
        // `crate::` is not this library).
        if top == "lib" || top == "main" {
            continue;
        }
        let edges = g.entry(top.to_string()).or_default();
        for (to, line) in references(&strip_tests(&strip(text))) {
            if to != top {
                edges
                    .entry(to)
                    .or_insert_with(|| format!("src/{path}:{line}"));
            }
        }
    }
    g
}

/// Every layering rule `g` breaks, one sentence each.
fn violations(g: &Graph, layers: &[(&str, Layer)]) -> Vec<String> {
    let layer: BTreeMap<&str, Layer> = layers.iter().copied().collect();
    let mut out = Vec::new();
    let mut modules: BTreeSet<&str> = g.keys().map(String::as_str).collect();
    modules.extend(g.values().flat_map(|e| e.keys().map(String::as_str)));
    for m in &modules {
        if !layer.contains_key(m) {
            out.push(format!(
                "module `{m}` has no layer: add it to LAYERS in src/layers.rs"
            ));
        }
    }
    for (from, edges) in g {
        for (to, at) in edges {
            let (Some(&lf), Some(&lt)) = (layer.get(from.as_str()), layer.get(to.as_str())) else {
                continue;
            };
            if lf == FrontEnd && lt == FrontEnd {
                out.push(format!(
                    "front end `{from}` imports front end `{to}` ({at}): pass what they share through a lower module or as a fact"
                ));
            } else if lt > lf {
                out.push(format!(
                    "`{from}` ({lf:?}) imports `{to}` from a layer above ({lt:?}) at {at}"
                ));
            }
        }
    }
    for cycle in cycles(g) {
        let path: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} -> {} ({})", w[0], w[1], g[&w[0]][&w[1]]))
            .collect();
        out.push(format!("import cycle: {}", path.join(", ")));
    }
    out
}

/// One concrete cycle (first module repeated at the end) per strongly connected
/// component of more than one module.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = g.keys().collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in g.get(&n).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reaches[n].contains(*n) {
            continue;
        }
        // The component: those n reaches that reach n back.
        let comp: BTreeSet<String> = reaches[n]
            .iter()
            .filter(|m| reaches.get(m).is_some_and(|r| r.contains(*n)))
            .cloned()
            .collect();
        done.extend(comp.iter().cloned());
        // A shortest way back to n inside the component (breadth first).
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([(*n).clone()]);
        'search: while let Some(cur) = queue.pop_front() {
            for next in g[&cur].keys().filter(|m| comp.contains(*m)) {
                if next == *n {
                    let mut path = vec![(*n).clone(), cur.clone()];
                    let mut at = cur.clone();
                    while let Some(p) = prev.get(&at) {
                        path.push(p.clone());
                        at = p.clone();
                    }
                    path.reverse();
                    out.push(path);
                    break 'search;
                }
                if !prev.contains_key(next) && next != *n {
                    prev.insert(next.clone(), cur.clone());
                    queue.push_back(next.clone());
                }
            }
        }
    }
    out
}

fn read_tree(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if p.is_dir() {
            read_tree(&p, &rel, out);
        } else if name.ends_with(".rs") {
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn the_module_graph_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, "", &mut files);
    let g = graph(&files);
    assert!(
        g.len() > 25 && g["server"].len() > 10,
        "the graph was not read whole: {g:?}"
    );
    let wrong = violations(&g, LAYERS);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every module in the table exists (a removed module leaves no stale line).
    for (m, _) in LAYERS {
        assert!(
            g.contains_key(*m),
            "LAYERS names `{m}`, which is not a module in src/"
        );
    }
}

mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Graph {
        let owned: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        graph(&owned)
    }

    const FAKE: &[(&str, Layer)] = &[
        ("kit", Leaf),
        ("dom", Domain),
        ("a", FrontEnd),
        ("b", FrontEnd),
        ("top", Wiring),
    ];

    #[test]
    fn a_cycle_is_reported_with_its_edges() {
        let g = tree(&[
            ("dom.rs", "use crate::kit::X;\n"),
            ("kit.rs", "//! leaf\n\nfn f() { crate::dom::g() }\n"),
        ]);
        let v = violations(&g, FAKE);
        assert!(
            v.iter().any(|e| e.starts_with("import cycle:")
                && e.contains("dom -> kit (src/dom.rs:1)")
                && e.contains("kit -> dom (src/kit.rs:3)")),
            "{v:?}"
        );
        assert!(
            v.iter().any(|e| e.contains("`kit` (Leaf) imports `dom`")),
            "{v:?}"
        );
    }

    #[test]
    fn a_front_end_importing_another_is_reported() {
        let g = tree(&[("a/mod.rs", "use crate::{dom, b::Thing};\n")]);
        let v = violations(&g, FAKE);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("front end `a` imports front end `b` (src/a/mod.rs:1)"),
            "{v:?}"
        );
    }

    #[test]
    fn an_unplaced_module_fails() {
        let g = tree(&[("newmod.rs", "use crate::kit;\n")]);
        let v = violations(&g, FAKE);
        assert_eq!(
            v,
            ["module `newmod` has no layer: add it to LAYERS in src/layers.rs"]
        );
    }

    #[test]
    fn downward_and_same_layer_imports_pass() {
        let g = tree(&[
            ("top.rs", "use crate::a;\nuse crate::b::{self, C};\n"),
            ("a.rs", "fn f() -> crate::dom::D { crate::kit::k() }\n"),
        ]);
        assert_eq!(violations(&g, FAKE), Vec::<String>::new());
    }

    #[test]
    fn comments_strings_and_tests_are_not_imports() {
        let text = r##"
//! See [`crate::b`].
/* crate::b in a block comment */
const S: &str = "crate::b";
const R: &str = r#"crate::b "quoted" "#;
const C: char = '"';
fn f<'a>(x: &'a str) -> &'a str { let _ = "http://x/crate::b"; x }
#[cfg(test)]
mod tests {
    use crate::b::Thing;
    fn g() { if true { crate::b::h() } }
}
#[cfg(test)]
use crate::b::Other;
fn real() { crate::dom::d() }
"##;
        let g = tree(&[("a.rs", text)]);
        let edges: Vec<(&String, &String)> = g["a"].iter().collect();
        assert_eq!(
            edges,
            [(&"dom".to_string(), &"src/a.rs:15".to_string())],
            "{g:?}"
        );
    }

    #[test]
    fn nested_groups_name_each_first_segment() {
        let refs = references("use crate::{\n    a::{x, y},\n    b,\n    c::d::{e},\n};");
        let names: Vec<&str> = refs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(refs[1].1, 3);
    }
}
