//! Loading a spec: layers merged by figment, errors that name file and key.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::Spec;

/// Where the non-file layers come from.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--set key.path=value` flags, in order (later wins).
    pub sets: Vec<String>,
    /// Read `MPO_SECTION__KEY` variables from this list instead of the
    /// process environment (tests); `None` reads the process environment.
    pub env: Option<Vec<(String, String)>>,
    /// `--results DIR`: overrides `experiment.results_dir`, and errors name
    /// the flag (not `--set`, which the user did not write).
    pub results_dir: Option<String>,
}

/// A parsed, validated spec and the figment it came from (for provenance).
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    pub path: PathBuf,
    pub spec: Spec,
    pub figment: Figment,
}

/// A user error in a spec: what, where, and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub messages: Vec<String>,
    pub hint: Option<String>,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { messages: vec![message.into()], hint: None }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Most messages shown of one error; the rest are counted.
const MAX_MESSAGES: usize = 8;

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.messages.iter().take(MAX_MESSAGES).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            // A safety net: every value is already clipped where it is
            // quoted, but a message must stay readable whatever it holds.
            write!(f, "{}", clip_to(m, 4 * CLIP_CHARS))?;
        }
        if self.messages.len() > MAX_MESSAGES {
            write!(f, "\n… and {} more errors", self.messages.len() - MAX_MESSAGES)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Most characters of a user's value quoted in an error message.
pub const CLIP_CHARS: usize = 200;

/// `text` as quoted in an error: at most [`CLIP_CHARS`] characters, then `…`
/// and the full length (#22: errors once echoed 100 kB values whole).
pub fn clip(text: &str) -> String {
    clip_to(text, CLIP_CHARS)
}

fn clip_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} characters)", &text[..cut], text.chars().count()),
    }
}

/// A figment provider with a human name, for `--set` flags and sweep
/// overrides, so errors say where a value came from.
pub(crate) struct NamedDict {
    pub name: String,
    pub dict: Dict,
}

impl Provider for NamedDict {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Puts `value` at the dotted `path` inside `dict`.
pub(crate) fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = dict;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::from(Dict::new()));
        if entry.as_dict().is_none() {
            *entry = Value::from(Dict::new());
        }
        cur = match entry {
            Value::Dict(_, d) => d,
            _ => unreachable!("just made a dict"),
        };
    }
}

/// Parses a `--set` value as TOML (`5`, `0.1`, `true`, `"x"`, `[1, 2]`),
/// falling back to a bare string (`--set planner.teacher=rule`).
pub(crate) fn parse_set_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => match t.remove("v") {
            Some(v) => toml_to_figment(&v),
            None => Value::from(raw.to_string()),
        },
        Err(_) => Value::from(raw.to_string()),
    }
}

pub(crate) fn toml_to_figment(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::from(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::from(*b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::from(a.iter().map(toml_to_figment).collect::<Vec<_>>()),
        toml::Value::Table(t) => {
            let mut d = Dict::new();
            for (k, v) in t {
                d.insert(k.clone(), toml_to_figment(v));
            }
            Value::from(d)
        }
    }
}

/// Reads a TOML file, with a syntax error shown as file:line:col and a caret.
fn read_toml(path: &Path) -> Result<toml::Table, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError::new(format!("cannot read spec `{}`: {e}", path.display()))
    })?;
    toml::from_str::<toml::Table>(&text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| line_col(&text, s.start))
            .unwrap_or((0, 0));
        SpecError::new(format!(
            "invalid TOML in `{}` at line {line}, column {col}:\n{}",
            path.display(),
            e.to_string().trim_end().lines().map(clip).collect::<Vec<_>>().join("\n")
        ))
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The chain of files: the spec, then the base it extends, and so on. Returned
/// base-first.
fn extends_chain(path: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let mut chain = vec![path.to_path_buf()];
    let mut cur = path.to_path_buf();
    // The `extends` line that named `cur`, for errors in a base file.
    let mut named_by: Option<(String, PathBuf)> = None;
    loop {
        let table = read_toml(&cur).map_err(|mut e| {
            if let Some((ext, from)) = &named_by {
                let first = format!("`extends = \"{}\"` in `{}`: ", clip(ext), from.display());
                if let Some(m) = e.messages.first_mut() {
                    m.insert_str(0, &first);
                }
            }
            e
        })?;
        let Some(ext) = table.get("extends") else { break };
        let Some(ext) = ext.as_str() else {
            return Err(SpecError::new(format!(
                "`extends` in `{}` must be a string (a path relative to that file), found {}",
                cur.display(),
                ext.type_str()
            )));
        };
        let base = cur.parent().unwrap_or(Path::new(".")).join(ext);
        if !base.is_file() {
            return Err(SpecError::new(format!(
                "`extends = \"{}\"` in `{}`: file `{}` {}",
                clip(ext),
                cur.display(),
                clip(&base.display().to_string()),
                if base.exists() { "is not a file" } else { "does not exist" }
            ))
            .with_hint("`extends` is resolved relative to the file that names it"));
        }
        if chain.iter().any(|p| same_file(p, &base)) {
            return Err(SpecError::new(format!(
                "`extends` in `{}` forms a cycle through `{}`",
                cur.display(),
                base.display()
            )));
        }
        chain.push(base.clone());
        named_by = Some((ext.to_string(), cur.clone()));
        cur = base;
    }
    chain.reverse();
    Ok(chain)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Builds the figment of all layers below sweep overrides.
pub fn figment_for(path: &Path, opts: &LoadOptions) -> Result<Figment, SpecError> {
    let mut fig = Figment::new();
    for file in extends_chain(path)? {
        fig = fig.merge(Toml::file_exact(&file));
    }
    fig = match &opts.env {
        None => fig.merge(mpo_env()),
        Some(vars) => {
            let mut dict = Dict::new();
            for (k, v) in vars {
                if let Some(path) = env_key_path(k) {
                    insert_path(&mut dict, &path, parse_set_value(v));
                }
            }
            fig.merge(NamedDict { name: "MPO_ environment variables".into(), dict })
        }
    };
    let mut dict = Dict::new();
    for set in &opts.sets {
        let Some((key, value)) = set.split_once('=') else {
            return Err(SpecError::new(format!(
                "`--set {}`: expected `key.path=value`, e.g. `--set mpo.m=3`",
                clip(set)
            )));
        };
        insert_path(&mut dict, key.trim(), parse_set_value(value.trim()));
    }
    if !dict.is_empty() {
        fig = fig.merge(NamedDict { name: "--set flags".into(), dict });
    }
    if let Some(dir) = &opts.results_dir {
        let mut dict = Dict::new();
        insert_path(&mut dict, "experiment.results_dir", Value::from(dir.clone()));
        fig = fig.merge(NamedDict { name: "the `--results` flag".into(), dict });
    }
    Ok(fig)
}

/// `MPO_MPO__M` → `mpo.m`; variables without `__` are not spec keys (so an
/// API key named `MPO_KEY` is never read as one).
pub(crate) fn env_key_path(var: &str) -> Option<String> {
    let rest = var.strip_prefix("MPO_")?;
    if !rest.contains("__") {
        return None;
    }
    Some(rest.split("__").map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>().join("."))
}

fn mpo_env() -> Env {
    Env::prefixed("MPO_").filter(|k| k.as_str().contains("__")).split("__")
}

/// Loads, merges and validates the spec at `path`.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedSpec, SpecError> {
    let figment = figment_for(path, opts)?;
    extract(path, figment)
}

/// Deserialises and validates a merged figment.
pub fn extract(path: &Path, figment: Figment) -> Result<LoadedSpec, SpecError> {
    let spec: Spec = figment.extract().map_err(|e| render_figment_error(path, &figment, e))?;
    super::validate::validate(&spec, &|key| source_of(&figment, path, key))?;
    Ok(LoadedSpec { path: path.to_path_buf(), spec, figment })
}

/// Says where the value at `key` came from: a file path, `--set flags`, …
pub fn source_of(figment: &Figment, spec_path: &Path, key: &str) -> String {
    // `eval.agents[0]` → `eval.agents`: figment knows keys, not list items.
    let in_list = key.contains('[');
    let key: String = key.split('.').map(|p| p.split('[').next().unwrap_or(p)).collect::<Vec<_>>().join(".");
    if let Some(md) = figment.find_metadata(&key) {
        return describe_metadata(md);
    }
    // A key inside a list item (`report.table[0].name`): the list's layer.
    if in_list {
        let mut parent = key.as_str();
        while let Some((p, _)) = parent.rsplit_once('.') {
            if let Some(md) = figment.find_metadata(p) {
                return describe_metadata(md);
            }
            parent = p;
        }
    }
    format!("`{}` (default)", spec_path.display())
}

fn describe_metadata(md: &Metadata) -> String {
    match &md.source {
        Some(figment::Source::File(p)) => format!("`{}`", relative(p).display()),
        _ => md.name.to_string(),
    }
}

fn relative(p: &Path) -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(r) = p.strip_prefix(&cwd) {
            return r.to_path_buf();
        }
    }
    p.to_path_buf()
}

/// The key under `key` that holds the value an error found, when serde lost
/// the path: errors inside an internally tagged enum (`[envs.NAME]`, whose
/// `kind` picks the variant) point at the enum's table, not at the key. The
/// deepest value equal to the one found wins (a wrong type is rarely equal to
/// a neighbour's value).
fn deeper_key(figment: &Figment, key: &str, actual: &figment::error::Actual) -> Option<String> {
    fn walk(prefix: &str, dict: &Dict, actual: &figment::error::Actual, depth: usize, best: &mut Option<(usize, String)>) {
        for (k, v) in dict {
            let path = format!("{prefix}.{k}");
            // As printed: `NaN` is not equal to itself, but reads the same.
            if v.to_actual().to_string() == actual.to_string() && best.as_ref().is_none_or(|(d, _)| depth > *d) {
                *best = Some((depth, path.clone()));
            }
            if let (Value::Dict(_, inner), true) = (v, depth < 8) {
                walk(&path, inner, actual, depth + 1, best);
            }
        }
    }
    if key.is_empty() {
        return None;
    }
    let Ok(Value::Dict(_, dict)) = figment.find_value(key) else { return None };
    let mut best = None;
    walk(key, &dict, actual, 0, &mut best);
    best.map(|(_, p)| p)
}

fn render_figment_error(path: &Path, figment: &Figment, err: figment::Error) -> SpecError {
    use figment::error::Kind;
    let mut messages = Vec::new();
    let mut hint = None;
    let file = format!("`{}`", relative(path).display());
    for e in err {
        let raw = e.path.join(".");
        let raw = match &e.kind {
            Kind::InvalidType(actual, _) | Kind::InvalidValue(actual, _) => {
                deeper_key(figment, &raw, actual).unwrap_or(raw)
            }
            _ => raw,
        };
        let key = clip(&raw);
        // The layer that holds the offending value. A *missing* key is
        // blamed on the spec file, where it belongs: the layer that happens
        // to hold its table (say `--results`, which sets one key of
        // `[experiment]`) is not where the user left it out (#22).
        let whence = match (&e.kind, &e.metadata) {
            (Kind::MissingField(_), _) | (_, None) => file.clone(),
            (_, Some(md)) => describe_metadata(md),
        };
        let msg = match &e.kind {
            Kind::UnknownField(field, expected) => {
                let field = clip(field);
                let full = if key.is_empty() || key == field || key.ends_with(&format!(".{field}")) {
                    key.clone()
                } else {
                    format!("{key}.{field}")
                };
                let full = if full.is_empty() { field.clone() } else { full };
                if let Some(best) = did_you_mean(&field, expected) {
                    hint = Some(format!("did you mean `{best}`?"));
                }
                format!(
                    "unknown key `{full}` in {whence}; allowed here: {}",
                    list(expected)
                )
            }
            Kind::MissingField(field) => {
                let full = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
                format!("missing key `{full}` in {whence}")
            }
            Kind::UnknownVariant(v, expected) => {
                if let Some(best) = did_you_mean(v, expected) {
                    hint = Some(format!("did you mean `{best}`?"));
                }
                format!("`{key}` = \"{}\" in {whence}: must be one of {}", clip(v), list(expected))
            }
            Kind::InvalidType(actual, expected) => {
                format!(
                    "`{key}` in {whence} has the wrong type: found {}, expected {}",
                    clip(&actual.to_string()),
                    clip(expected)
                )
            }
            Kind::InvalidValue(actual, expected) => {
                format!(
                    "`{key}` in {whence} has an invalid value: found {}, expected {}",
                    clip(&actual.to_string()),
                    clip(expected)
                )
            }
            other => {
                let other = clip(&other.to_string());
                if key.is_empty() {
                    format!("{other} in {whence}")
                } else {
                    format!("`{key}` in {whence}: {other}")
                }
            }
        };
        messages.push(msg);
    }
    SpecError { messages, hint }
}

fn list(items: &[&str]) -> String {
    items.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

/// The closest allowed name, if it is close enough to be a typo.
pub fn did_you_mean<'a>(given: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::jaro_winkler(given, a), *a))
        .filter(|(s, _)| *s > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys_need_a_section() {
        assert_eq!(env_key_path("MPO_MPO__M").as_deref(), Some("mpo.m"));
        assert_eq!(
            env_key_path("MPO_MPO__SAMPLE_TEMPERATURE").as_deref(),
            Some("mpo.sample_temperature")
        );
        assert_eq!(env_key_path("MPO_API_KEY"), None);
        assert_eq!(env_key_path("OTHER__X"), None);
    }

    #[test]
    fn set_values_parse_as_toml_or_string() {
        assert_eq!(parse_set_value("5").to_i128(), Some(5));
        assert_eq!(parse_set_value("rule").as_str(), Some("rule"));
        assert_eq!(parse_set_value("\"x y\"").as_str(), Some("x y"));
        assert!(parse_set_value("[1, 2]").as_array().is_some());
    }

    #[test]
    fn typos_get_suggestions() {
        assert_eq!(did_you_mean("temperature", &["m", "n", "beta"]), None);
        assert_eq!(did_you_mean("mm", &["m", "n", "beta"]), Some("m"));
        assert_eq!(did_you_mean("betta", &["m", "n", "beta"]), Some("beta"));
    }
}
