//! The module graph of a crate: which of its top-level modules name which others
//! (`crate::x`, `super::x` that climbs to the root, `$crate::x`), and its cycles.
//!
//! A lexical reading, not a compiler's: comments (doc links included), strings and
//! character literals are skipped, inline `mod name { .. }` blocks are followed so that
//! `super::` resolves as rustc resolves it. Items of the crate root (`lib.rs`, `main.rs`)
//! are not a module: an edge to the root, or from it, is not counted. Test code counts
//! like any other: a cycle through a test module is still a cycle to read through.
//!
//! `cargo xtask modgraph [SRC_DIR...]` prints the edges and cycles of each crate (the
//! workspace's library crates by default) and fails if any crate has a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges between the top-level modules of one crate: module → the modules it names,
/// each with one place that names it (`file:line`), for the report.
pub type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// Reads every `.rs` file under `src` and returns the top-level module graph.
pub fn graph(src: &Path) -> std::io::Result<Graph> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    files.sort();
    let top: BTreeSet<String> = top_level_modules(src, &files)?;
    let mut g = Graph::new();
    for m in &top {
        g.entry(m.clone()).or_default();
    }
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let module = module_path(src, file);
        let rel = file.strip_prefix(src).unwrap_or(file).display().to_string();
        for (target, line) in references(&text, &module) {
            let (Some(from), Some(to)) = (module.first(), target.first()) else {
                continue;
            };
            if from == to || !top.contains(to) {
                continue;
            }
            g.entry(from.clone()).or_default().entry(to.clone()).or_insert_with(|| format!("{rel}:{line}"));
        }
    }
    Ok(g)
}

/// The cycles of `g`: each strongly connected component of more than one module, as its
/// modules in order (Tarjan's algorithm; the graphs are tiny).
pub fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.reverse();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// A human-readable report of one crate: its edges, then its cycles (or "no cycles").
pub fn report(name: &str, g: &Graph) -> String {
    let mut s = format!("{name}:\n");
    for (from, to) in g {
        for (m, at) in to {
            s += &format!("  {from} -> {m}    ({at})\n");
        }
    }
    let c = cycles(g);
    if c.is_empty() {
        s += "  no cycles\n";
    }
    for scc in c {
        s += &format!("  CYCLE among: {}\n", scc.join(", "));
    }
    s
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The crate's top-level modules: `x.rs` or `x/mod.rs` beside the root, and the root's
/// inline `mod x { .. }`.
fn top_level_modules(src: &Path, files: &[PathBuf]) -> std::io::Result<BTreeSet<String>> {
    let mut top: BTreeSet<String> = files.iter().filter_map(|f| module_path(src, f).into_iter().next()).collect();
    for root in ["lib.rs", "main.rs"] {
        let p = src.join(root);
        if let Ok(text) = std::fs::read_to_string(&p) {
            let toks = tokens(&strip(&text));
            for w in toks.windows(3) {
                if w[0].text == "mod" && w[2].text == "{" && depth_zero(&toks, w) {
                    top.insert(w[1].text.clone());
                }
            }
        }
    }
    Ok(top)
}

fn depth_zero(toks: &[Token], w: &[Token]) -> bool {
    let at = w.as_ptr() as usize - toks.as_ptr() as usize;
    let at = at / std::mem::size_of::<Token>();
    let mut depth = 0i32;
    for t in &toks[..at] {
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            _ => {}
        }
    }
    depth == 0
}

/// The module path of a file: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`; the root
/// (`lib.rs`, `main.rs`, `bin/*.rs`) is `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return Vec::new();
    }
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return Vec::new();
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    line: usize,
}

/// `text` with comments, strings and char literals blanked (newlines kept, so that line
/// numbers hold).
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char, out: &mut String| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(b[i], &mut out);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || (next == Some('#') && !is_ident(b.get(i.wrapping_sub(1)).copied())))
            && !is_ident(b.get(i.wrapping_sub(1)).copied())
        {
            // Raw string r"..", r#".."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < b.len() {
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                blank(ch, &mut out);
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    blank(b[i], &mut out);
                    i += 1;
                }
                if i < b.len() {
                    blank(b[i], &mut out);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): a literal closes
            // within a few characters.
            let close = if next == Some('\\') {
                b[i + 2..].iter().take(10).position(|&x| x == '\'').map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    for &ch in &b[i..=end] {
                        blank(ch, &mut out);
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let b: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_alphanumeric() || c == '_' || c == '$' {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                out.push(Token { text: b[start..i].iter().collect(), line: n + 1 });
            } else if c == ':' && b.get(i + 1) == Some(&':') {
                out.push(Token { text: "::".into(), line: n + 1 });
                i += 2;
            } else if !c.is_whitespace() {
                out.push(Token { text: c.to_string(), line: n + 1 });
                i += 1;
            } else {
                i += 1;
            }
        }
    }
    out
}

/// Every module path `text` (the file of module `module`) names, resolved from the crate
/// root, with its line: `crate::a::..` is `[a, ..]`; `super::` climbs from the module
/// the code is in (inline modules followed); `use crate::{a, b::c}` names `a` and `b`.
fn references(text: &str, module: &[String]) -> Vec<(Vec<String>, usize)> {
    let toks = tokens(&strip(text));
    let mut out = Vec::new();
    // The inline modules open at this point, with the brace depth each opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text.as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if toks.get(i + 2).is_some_and(|t| t.text == "{") => {
                inline.push((toks[i + 1].text.clone(), depth));
                depth += 1;
                i += 3;
                continue;
            }
            _ => {}
        }
        let preceded_by_path = i > 0 && toks[i - 1].text == "::";
        let starts = matches!(t, "crate" | "$crate" | "super" | "self")
            && !preceded_by_path
            && toks.get(i + 1).is_some_and(|n| n.text == "::");
        if !starts {
            i += 1;
            continue;
        }
        let line = toks[i].line;
        let mut here: Vec<String> = module.iter().cloned().chain(inline.iter().map(|(m, _)| m.clone())).collect();
        let mut base: Vec<String> = match t {
            "crate" | "$crate" => Vec::new(),
            "self" => here.clone(),
            _ => {
                here.pop();
                here
            }
        };
        let mut j = i + 2;
        // Further `super::`s climb on.
        while t == "super"
            && toks.get(j).is_some_and(|x| x.text == "super")
            && toks.get(j + 1).is_some_and(|x| x.text == "::")
        {
            base.pop();
            j += 2;
        }
        match toks.get(j).map(|x| x.text.as_str()) {
            Some("{") => {
                // A use group: the first segment of each top-level item.
                let mut level = 0;
                let mut expect = true;
                j += 1;
                while let Some(x) = toks.get(j) {
                    match x.text.as_str() {
                        "{" => level += 1,
                        "}" if level == 0 => break,
                        "}" => level -= 1,
                        "," if level == 0 => expect = true,
                        s if expect && level == 0 => {
                            expect = false;
                            if s != "self" && s != "*" {
                                out.push((base.iter().cloned().chain([s.to_string()]).collect(), x.line));
                            } else if !base.is_empty() {
                                out.push((base.clone(), x.line));
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            Some(s) if s != "*" => out.push((base.iter().cloned().chain([s.to_string()]).collect(), line)),
            _ => {
                if !base.is_empty() {
                    out.push((base, line));
                }
            }
        }
        i = j;
    }
    out
}

/// The workspace's crates whose module graphs are checked by default (relative to the
/// workspace root).
pub const CRATES: &[&str] = &[
    "netdump-core/src",
    "drivers/pci/src",
    "drivers/e1000/src",
    "drivers/e1000e/src",
    "drivers/virtio-net/src",
    "drivers/vmxnet3/src",
    "netdumpd/src",
];

/// `cargo xtask modgraph`: prints each crate's graph; an error if any has a cycle.
pub fn run(root: &Path, dirs: &[PathBuf]) -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> =
        if dirs.is_empty() { CRATES.iter().map(|d| root.join(d)).collect() } else { dirs.to_vec() };
    let mut cyclic = Vec::new();
    for d in &dirs {
        let g = graph(d).map_err(|e| anyhow::anyhow!("read {}: {e}", d.display()))?;
        let name = d.strip_prefix(root).unwrap_or(d).display().to_string();
        print!("{}", report(&name, &g));
        if !cycles(&g).is_empty() {
            cyclic.push(name);
        }
    }
    if !cyclic.is_empty() {
        anyhow::bail!("module cycles in {}", cyclic.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str, module: &[&str]) -> Vec<Vec<String>> {
        let m: Vec<String> = module.iter().map(|s| s.to_string()).collect();
        references(text, &m).into_iter().map(|(p, _)| p).collect()
    }

    fn p(s: &str) -> Vec<String> {
        s.split("::").map(String::from).collect()
    }

    #[test]
    fn paths_are_resolved_from_the_root() {
        let text = r#"
            use crate::a::B;
            use crate::{c::D, e, self as x};
            use super::f::G;
            // use crate::comment::X;
            /// [`crate::doc`]
            const S: &str = "crate::string";
            fn h() { let _ = '"'; super::super::i::j(); crate::k(); }
            mod tests { use super::*; use super::l; }
        "#;
        let got = refs(text, &["m", "n"]);
        assert_eq!(got, vec![p("a"), p("c"), p("e"), p("m::f"), p("i"), p("k"), p("m::n"), p("m::n::l")]);
    }

    #[test]
    fn cycles_are_found() {
        let mut g = Graph::new();
        let mut edge = |a: &str, b: &str| {
            g.entry(a.into()).or_default().insert(b.into(), String::new());
            g.entry(b.into()).or_default();
        };
        edge("a", "b");
        edge("b", "c");
        edge("c", "a");
        edge("c", "d");
        assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
        g.get_mut("c").unwrap().remove("a");
        assert!(cycles(&g).is_empty());
    }

    /// The crates whose cycles issue 12 broke (netdump-core, the drivers, netdumpd) stay
    /// acyclic.
    #[test]
    fn the_crates_are_acyclic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace");
        for d in CRATES {
            let g = graph(&root.join(d)).expect("readable sources");
            assert!(cycles(&g).is_empty(), "{}", report(d, &g));
        }
    }
}
