//! The shape of the source tree, checked from the code itself: no two
//! files of `src/` import each other, directly or round a loop (issue 17).
//! A cycle means two files that cannot be read, tested or moved apart;
//! the fix is to move the shared item down to the file both can import.
//!
//! What counts as an import: every `crate::…` and `super::…` path in a
//! file outside its `#[cfg(test)]` module (in `use` lines, braces
//! expanded, and inline), resolved to the file that defines the longest
//! module prefix of it. `mod x;` declarations, and a module's paths into
//! its own submodules, are structure, not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/a/b.rs` and `src/a/b/mod.rs` → `["a", "b"]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments, string literals and its test
/// module (by this tree's convention the last item of a file).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else { return vec![tree] };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |q| format!("{prefix}{q}")))
        .collect()
}

/// Every `crate::`/`super::` path in `code`, as written.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` trees first (they hold the braces), then inline paths.
    let mut rest = code.to_owned();
    while let Some(i) = rest.find("use ") {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let end = rest[i..].find(';').map_or(rest.len(), |e| i + e);
        if before_ok {
            out.extend(expand(&rest[i + 4..end]));
            rest.replace_range(i..end, "");
        } else {
            rest.replace_range(i..i + 4, "");
        }
    }
    let bytes = rest.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(k) = rest[from..].find(start) {
            let i = from + k;
            from = i + start.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':')
            {
                continue;
            }
            let end = rest[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(rest.len(), |e| i + e);
            out.push(rest[i..end].to_owned());
        }
    }
    out
}

/// The file a path leads to: the longest module prefix that is a file.
fn target(path: &str, here: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    let mut segs = path.split("::").filter(|s| !s.is_empty());
    let mut at: Vec<String> = match segs.next()? {
        "crate" => Vec::new(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    let mut segs = segs.peekable();
    while segs.peek() == Some(&"super") {
        segs.next();
        at.pop();
    }
    let mut best = modules.get(&at).cloned();
    for s in segs {
        at.push(s.to_owned());
        match modules.get(&at) {
            Some(f) => best = Some(f.clone()),
            None => break,
        }
    }
    best
}

/// File → the files it imports.
fn imports(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().filter(|f| !f.ends_with("main.rs")).map(|f| (module_of(src, f), f.clone())).collect();
    let mut graph = BTreeMap::new();
    for f in files.iter().filter(|f| !f.ends_with("main.rs")) {
        let here = module_of(src, f);
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        // A module naming one of its own submodules is containment (as
        // `mod x;` is), not an import: only paths that leave it count.
        let to: BTreeSet<PathBuf> = paths_in(&code)
            .iter()
            .filter_map(|p| target(p, &here, &modules))
            .filter(|t| !module_of(src, t).starts_with(&here))
            .collect();
        graph.insert(f.clone(), to);
    }
    graph
}

/// The strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct T<'g> {
        g: &'g BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'g PathBuf, usize>,
        low: BTreeMap<&'g PathBuf, usize>,
        stack: Vec<&'g PathBuf>,
        on: BTreeSet<&'g PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    impl<'g> T<'g> {
        fn visit(&mut self, v: &'g PathBuf) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let Some((w, _)) = self.g.get_key_value(w) else { continue };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    c.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if c.len() > 1 {
                    c.sort();
                    self.out.push(c);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn the_checker_sees_paths_and_loops() {
    assert_eq!(
        expand("crate::a::{b, c::{d, e}, self}"),
        ["crate::a::b", "crate::a::c::d", "crate::a::c::e", "crate::a::self"]
    );
    let code = code_of("use super::{x, y::Z};\n// crate::gone\nfn f() { crate::q::r(); \"crate::s\"; }\n");
    assert_eq!(paths_in(&code), ["super::x", "super::y::Z", "crate::q::r"]);
    let p = |s: &str| PathBuf::from(s);
    let g: BTreeMap<PathBuf, BTreeSet<PathBuf>> = [
        (p("a"), [p("b")].into()),
        (p("b"), [p("c")].into()),
        (p("c"), [p("a")].into()),
        (p("d"), [p("a")].into()),
    ]
    .into();
    assert_eq!(cycles(&g), [vec![p("a"), p("b"), p("c")]]);
}

#[test]
fn no_import_cycles_between_source_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    assert!(graph.len() > 50, "only {} files read under {}", graph.len(), src.display());
    let found = cycles(&graph);
    let rel = |f: &PathBuf| f.strip_prefix(&src).unwrap().display().to_string();
    let mut text = Vec::new();
    for c in &found {
        text.push(c.iter().map(rel).collect::<Vec<_>>().join(", "));
        for a in c {
            for b in graph[a].iter().filter(|b| c.contains(b)) {
                text.push(format!("    {} -> {}", rel(a), rel(b)));
            }
        }
    }
    assert!(found.is_empty(), "import cycles in src/:\n  {}", text.join("\n  "));
}
