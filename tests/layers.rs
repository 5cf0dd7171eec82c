//! The layers depend one way: engine ← store ← service ← http ← app (the
//! crate root, `config`, `schedule` and `templates`). This test reads every source file
//! under `src/`, finds each path that names a module through `crate::` or
//! climbs to one through `super::`, and fails, naming the file and the
//! path, when a module refers to a layer above its own.
//!
//! The source is split into tokens by `proc-macro2`, which lexes Rust as
//! the compiler does, so comments, doc text and string literals never count
//! as references, and paths inside macro calls and attributes do.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// The layers, lowest first: a layer may refer to those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Engine,
    Store,
    Service,
    Http,
    App,
}

/// Upward edges that are known and scheduled to go, as (layer, module
/// referred to). Each one is removed by the change that ends it; the test
/// below fails while an exception is listed that no longer occurs, so a
/// fixed edge cannot come back unnoticed.
const KNOWN_EXCEPTIONS: &[(Layer, &str)] = &[];

/// The top-level module a crate-root name belongs to. `Config` is
/// `config::Config`, re-exported by `lib.rs`; other root items are
/// `lib.rs`'s own.
fn root_module(name: &str) -> &str {
    match name {
        "engine" | "store" | "service" | "http" | "config" | "schedule" | "templates" => name,
        "Config" => "config",
        _ => "lib",
    }
}

fn layer_of_module(module: &str) -> Layer {
    match module {
        "engine" => Layer::Engine,
        "store" => Layer::Store,
        "service" => Layer::Service,
        "http" => Layer::Http,
        _ => Layer::App,
    }
}

/// The module path of a file under `src/`, e.g. `store/postgres.rs` is
/// `["store", "postgres"]` and `store/mod.rs` is `["store"]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        path.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        path.pop();
    }
    path
}

/// The layer a file's module belongs to. A new top-level file must be
/// given a layer here before it can be built.
fn layer_of_file(module: &[String]) -> Layer {
    match module.first().map(String::as_str) {
        None | Some("config" | "schedule" | "templates") => Layer::App,
        Some(top @ ("engine" | "store" | "service" | "http")) => layer_of_module(top),
        Some(other) => panic!("src/{other}.rs belongs to no layer: add it to layer_of_file"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    layer: Layer,
    /// The top-level module referred to.
    module: String,
    /// The path as written.
    path: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}) refers to `{}`, in the {:?} layer ({})",
            self.file,
            self.layer,
            self.path,
            layer_of_module(&self.module),
            self.module
        )
    }
}

/// Every reference in `source` (the file `file`, relative to the crate
/// root, e.g. `src/store/postgres.rs`) to a layer above the file's own.
fn violations_in(file: &str, source: &str) -> Vec<Violation> {
    let relative = Path::new(file)
        .strip_prefix("src")
        .expect("a file under src/");
    let module = module_path(relative);
    let layer = layer_of_file(&module);
    let tokens = TokenStream::from_str(source)
        .unwrap_or_else(|error| panic!("{file} does not lex as Rust: {error}"));
    let mut references = Vec::new();
    walk(tokens, &module, &mut references);
    references
        .into_iter()
        .filter(|reference| layer_of_module(&reference.module) > layer)
        .map(|reference| Violation {
            file: file.to_owned(),
            layer,
            module: reference.module,
            path: reference.path,
        })
        .collect()
}

/// A path that names a module by where it sits in the crate.
struct Reference {
    /// The top-level module it resolves into (`lib` for the crate root).
    module: String,
    path: String,
}

fn is_path_separator(tokens: &[TokenTree], at: usize) -> bool {
    matches!(
        (tokens.get(at), tokens.get(at + 1)),
        (Some(TokenTree::Punct(first)), Some(TokenTree::Punct(second)))
            if first.as_char() == ':' && first.spacing() == Spacing::Joint && second.as_char() == ':'
    )
}

fn is_ident(token: Option<&TokenTree>, name: &str) -> bool {
    matches!(token, Some(TokenTree::Ident(ident)) if ident == name)
}

/// Collects the references in `tokens`, which sit in module `module`;
/// inline `mod name { … }` blocks extend the module path, so `super::`
/// inside them climbs from the right place.
fn walk(tokens: TokenStream, module: &[String], out: &mut Vec<Reference>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut at = 0;
    while at < tokens.len() {
        if is_ident(tokens.get(at), "mod") {
            if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body))) =
                (tokens.get(at + 1), tokens.get(at + 2))
            {
                if body.delimiter() == Delimiter::Brace {
                    let mut inner = module.to_vec();
                    inner.push(name.to_string());
                    walk(body.stream(), &inner, out);
                    at += 3;
                    continue;
                }
            }
        }
        // A path starts here unless it continues one (`a::super` is not
        // valid Rust, but `x::crate` would be no reference either).
        let starts_path = at < 2 || !is_path_separator(&tokens, at - 2);
        let is_crate = is_ident(tokens.get(at), "crate") && is_path_separator(&tokens, at + 1);
        let is_super = is_ident(tokens.get(at), "super") && is_path_separator(&tokens, at + 1);
        if starts_path && (is_crate || is_super) {
            at = resolve(&tokens, at, module, out);
            continue;
        }
        if let TokenTree::Group(group) = &tokens[at] {
            walk(group.stream(), module, out);
        }
        at += 1;
    }
}

/// Resolves the path starting at `tokens[start]` (`crate` or `super`),
/// records what it refers to, and returns the index after it.
fn resolve(
    tokens: &[TokenTree],
    start: usize,
    module: &[String],
    out: &mut Vec<Reference>,
) -> usize {
    let mut base: Vec<String> = Vec::new();
    let mut at = start;
    if is_ident(tokens.get(at), "crate") {
        at += 3;
    } else {
        base = module.to_vec();
        while is_ident(tokens.get(at), "super") && is_path_separator(tokens, at + 1) {
            base.pop();
            at += 3;
        }
    }
    let written = |end: usize| {
        tokens[start..end]
            .iter()
            .map(ToString::to_string)
            .collect::<String>()
    };
    let mut record = |first: Option<String>, path: String| {
        let module = match (base.first(), first) {
            (Some(top), _) => top.clone(),
            (None, Some(name)) => root_module(&name).to_owned(),
            (None, None) => "lib".to_owned(),
        };
        out.push(Reference { module, path });
    };
    match tokens.get(at) {
        Some(TokenTree::Ident(name)) => {
            record(Some(name.to_string()), written(at + 1));
            at + 1
        }
        // `crate::{a, b::c}`: each item is its own reference.
        Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => {
            let items: Vec<TokenTree> = group.stream().into_iter().collect();
            let mut item_start = true;
            for token in &items {
                match token {
                    TokenTree::Ident(name) if item_start => {
                        let name = name.to_string();
                        let path = format!("{}{{{name}…}}", written(at));
                        if name == "self" {
                            record(None, path);
                        } else {
                            record(Some(name), path);
                        }
                        item_start = false;
                    }
                    TokenTree::Punct(punct) if punct.as_char() == ',' => item_start = true,
                    _ => item_start = false,
                }
            }
            at + 1
        }
        // `super::*`: the whole module climbed to.
        _ => {
            record(None, written(at));
            at
        }
    }
}

/// Every violation under `src/`, in file order.
fn violations_under_src() -> Vec<Violation> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut pending = vec![root.join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() > 10, "found only {files:?} under src/");
    files
        .iter()
        .flat_map(|path| {
            let source = std::fs::read_to_string(path).expect("a readable source file");
            let relative = path.strip_prefix(root).expect("under the crate root");
            violations_in(&relative.to_string_lossy(), &source)
        })
        .collect()
}

fn is_known(violation: &Violation) -> bool {
    KNOWN_EXCEPTIONS
        .iter()
        .any(|(layer, module)| violation.layer == *layer && violation.module == *module)
}

#[test]
fn no_module_refers_to_a_layer_above_its_own() {
    let found: Vec<String> = violations_under_src()
        .iter()
        .filter(|violation| !is_known(violation))
        .map(ToString::to_string)
        .collect();
    assert!(
        found.is_empty(),
        "layers depend one way, engine <- store <- service <- http <- app:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_known_exception_still_occurs() {
    let found = violations_under_src();
    for (layer, module) in KNOWN_EXCEPTIONS {
        assert!(
            found
                .iter()
                .any(|violation| violation.layer == *layer && violation.module == *module),
            "{layer:?} no longer refers to {module}: remove the exception from KNOWN_EXCEPTIONS"
        );
    }
}

/// The paths each file refers to upward, as written.
fn upward(file: &str, source: &str) -> Vec<String> {
    violations_in(file, source)
        .into_iter()
        .map(|violation| violation.path)
        .collect()
}

#[test]
fn finds_upward_paths_in_every_form() {
    assert_eq!(
        upward(
            "src/store/postgres.rs",
            "use crate::service::{Booking, ServiceError};"
        ),
        ["crate::service"]
    );
    assert_eq!(
        upward(
            "src/service/postgres.rs",
            "use crate::{engine::Engine, http::App, store};"
        ),
        ["crate::{http…}"]
    );
    assert_eq!(
        upward(
            "src/service/local.rs",
            "fn f() -> super::super::http::App { todo!() }"
        ),
        ["super::super::http"]
    );
    assert_eq!(
        upward("src/engine/mod.rs", "fn f(_: &crate::Config) {}"),
        ["crate::Config"]
    );
    assert_eq!(
        upward("src/http/auth.rs", "use super::super::*;"),
        ["super::super::"]
    );
    assert_eq!(
        upward(
            "src/store/mod.rs",
            "#[utoipa::path(body = crate::http::openapi::Problem)] fn f() {}"
        ),
        ["crate::http"]
    );
}

#[test]
fn ignores_what_is_no_upward_reference() {
    // Comments, doc text and strings are no references.
    assert!(upward(
        "src/engine/model.rs",
        "/// See [`crate::http`].\n// crate::service\nconst S: &str = \"crate::http\";"
    )
    .is_empty());
    // `super::` in a test module climbs to the file's own module.
    assert!(upward(
        "src/store/mod.rs",
        "mod tests { use super::*; fn f() -> super::Journal { todo!() } }"
    )
    .is_empty());
    // Downward and sideways references are allowed.
    assert!(upward(
        "src/http/tokens.rs",
        "use crate::service::Booking; use crate::engine::Source; use super::dto::TokenDto;"
    )
    .is_empty());
    assert!(upward("src/lib.rs", "use crate::http::App; use config::Config;").is_empty());
    assert!(upward("src/engine/mod.rs", "pub(crate) fn f() {}").is_empty());
}
