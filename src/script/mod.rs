//! Admin scripts in Rhai: the rules YAML cannot say — recipient filters, per-recipient
//! template variables, template helpers, and per-message routing with failover.
//!
//! A job names script files under the project's `scripts/` folder ([`ScriptPaths`]);
//! each defines any of `filter(customer)`, `vars(customer)` and `route(message,
//! customer)`, and every function of a `helpers:` script becomes a template function.
//! [`Scripts::load`] compiles them once (at `crier validate` and at the start of a run,
//! with `file:line:col` errors), and the compiled [`Scripts`] — engine and ASTs — is
//! `Send + Sync` and shared by every thread of a run.
//!
//! The engine is sandboxed, never `Engine::new()`: `Engine::new_raw()` plus the standard
//! package only (no file, network or process access exists in Rhai itself), `import` only
//! of files under `scripts/` (resolved when the script compiles), `print`/`debug` to
//! tracing, and [`Limits`] on operations, call depth, string/array/map sizes and wall
//! clock. A script that hits a limit or fails fails *that* message (or that recipient's
//! filter) with a [`ScriptError`] naming the script, the function and the limit; the run
//! goes on. The values scripts see are read-only copies.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::packages::{Package, StandardPackage};
use rhai::{
    AST, ASTNode, CallFnOptions, Dynamic, Engine, EvalAltResult, Expr, FuncArgs, ImmutableString,
    Map, Module, ModuleResolver, Position, Scope, Shared, Stmt,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::recipients::Recipient;

/// The folder, relative to the project, that scripts live in and may import from.
pub const SCRIPTS_DIR: &str = "scripts";

/// `scripts:` of a job: which script file supplies each hook. Paths start with
/// `scripts/` and are relative to the project (the nearest folder above the job file
/// that has a `scripts/` folder).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptPaths {
    /// Script defining `filter(customer) -> bool`, run after `recipients.where`: `false`
    /// leaves the recipient out (not recorded; counted as `filtered` by `crier preview`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Script defining `vars(customer) -> map`: extra template values for each
    /// recipient, read as `vars.NAME` in templates.
    #[serde(default)]
    pub vars: Option<String>,
    /// Script defining `route(message, customer)`: returns a provider name, an array of
    /// provider names (a failover order: the next is tried when one rejects the message
    /// or runs out of retries) or `()` to skip the message (reason `routed_out`).
    #[serde(default)]
    pub route: Option<String>,
    /// Scripts whose every function is callable from this job's templates, e.g.
    /// `{{ money(customer.attrs.balance, "ZAR") }}`.
    #[serde(default)]
    pub helpers: Vec<String>,
}

impl ScriptPaths {
    pub fn is_empty(&self) -> bool {
        self.filter.is_none()
            && self.vars.is_none()
            && self.route.is_none()
            && self.helpers.is_empty()
    }
}

/// The hooks crier calls by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Filter,
    Vars,
    Route,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Filter => "filter",
            Hook::Vars => "vars",
            Hook::Route => "route",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Hook::Filter => "fn filter(customer)",
            Hook::Vars => "fn vars(customer)",
            Hook::Route => "fn route(message, customer)",
        }
    }

    fn arity(self) -> usize {
        match self {
            Hook::Route => 2,
            _ => 1,
        }
    }
}

/// What one script call may use. Hitting a limit fails that call with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rhai operations per call (a loop iteration, a function call, …).
    pub operations: u64,
    /// Nested function calls.
    pub call_levels: usize,
    /// Bytes in one string.
    pub string_size: usize,
    /// Items in one array.
    pub array_size: usize,
    /// Entries in one map.
    pub map_size: usize,
    /// Time one call may take.
    pub wall_clock: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            operations: 1_000_000,
            call_levels: 32,
            string_size: 64 * 1024,
            array_size: 10_000,
            map_size: 10_000,
            wall_clock: Duration::from_millis(250),
        }
    }
}

/// A script that does not compile or lacks a function its job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    pub col: usize,
    /// The job field that names the script (`scripts.route`).
    pub field: String,
    pub message: String,
}

/// Scripts that did not all compile: every problem, and what did compile (so validation
/// can go on checking templates and routes against it).
#[derive(Debug)]
pub struct LoadError {
    pub errors: Vec<CompileError>,
    pub partial: Box<Scripts>,
}

/// A script call that failed: names the script, the function and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{script}: {function}: {message}")]
pub struct ScriptError {
    /// `scripts/route.rhai`, with `:line:col` where the error has a place.
    pub script: String,
    pub function: String,
    pub message: String,
}

/// One compiled script file.
struct Compiled {
    /// The path as the job wrote it (`scripts/route.rhai`).
    name: String,
    ast: AST,
    /// Top-level statements (imports) must run before each call.
    eval_ast: bool,
}

/// Every script of one job, compiled, with the sandboxed engine that runs them.
pub struct Scripts {
    engine: Engine,
    limits: Limits,
    filter: Option<Arc<Compiled>>,
    vars: Option<Arc<Compiled>>,
    route: Option<Arc<Compiled>>,
    /// Helper name → its script; every function of a `helpers:` script.
    helpers: BTreeMap<String, Arc<Compiled>>,
    /// String literals `route` returns, with their place, for validation.
    route_literals: Vec<(String, usize, usize)>,
}

impl fmt::Debug for Scripts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scripts")
            .field("filter", &self.filter.as_ref().map(|c| &c.name))
            .field("vars", &self.vars.as_ref().map(|c| &c.name))
            .field("route", &self.route.as_ref().map(|c| &c.name))
            .field("helpers", &self.helpers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a `route` call decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Provider names in failover order (at least one).
    To(Vec<String>),
    /// `()`: skip the message.
    Out,
}

thread_local! {
    /// When the call running on this thread must stop (the wall-clock limit).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The token `on_progress` stops a call with when its time is up.
const WALL_CLOCK: &str = "wall_clock";

/// Builds the sandboxed engine; `scripts_dir` is the only place `import` may read.
fn engine(limits: Limits, scripts_dir: Option<PathBuf>) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
    engine.set_max_operations(limits.operations);
    engine.set_max_call_levels(limits.call_levels);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(limits.string_size);
    engine.set_max_array_size(limits.array_size);
    engine.set_max_map_size(limits.map_size);
    engine.set_max_modules(16);
    // Code compiled at run time would escape validation.
    engine.disable_symbol("eval");
    engine.on_print(|text| tracing::info!(target: "crier::script", "{text}"));
    engine.on_debug(|text, source, pos| {
        tracing::debug!(target: "crier::script", source = source.unwrap_or(""), line = pos.line().unwrap_or(0), "{text}")
    });
    engine.on_progress(|ops| {
        // Reading the clock on every operation would cost more than the operation.
        if ops % 256 != 0 {
            return None;
        }
        let late = DEADLINE.with(|d| d.get().is_some_and(|at| Instant::now() >= at));
        late.then(|| Dynamic::from(WALL_CLOCK))
    });
    match scripts_dir {
        Some(dir) => engine.set_module_resolver(ScriptsOnly { root: dir }),
        None => engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new()),
    };
    engine
}

/// Resolves `import "name"` to `scripts/name.rhai`, refusing anything outside `scripts/`.
struct ScriptsOnly {
    /// Canonical path of `scripts/`.
    root: PathBuf,
}

impl ModuleResolver for ScriptsOnly {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let refuse = |why: &str| -> Box<EvalAltResult> {
            EvalAltResult::ErrorModuleNotFound(format!("{path} ({why})"), pos).into()
        };
        let relative = Path::new(path.trim_start_matches("scripts/"));
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(refuse("imports are limited to files under scripts/"));
        }
        let mut file = self.root.join(relative);
        if file.extension().is_none() {
            file.set_extension("rhai");
        }
        let Ok(canonical) = file.canonicalize() else {
            return Err(refuse("no such file under scripts/"));
        };
        if !canonical.starts_with(&self.root) {
            return Err(refuse("imports are limited to files under scripts/"));
        }
        let source =
            std::fs::read_to_string(&canonical).map_err(|_| refuse("cannot read the file"))?;
        let mut ast = engine.compile(&source).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_string(),
                e.into(),
                pos,
            ))
        })?;
        ast.set_source(format!("{SCRIPTS_DIR}/{path}"));
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos)))?;
        Ok(module.into())
    }
}

/// The project folder of a job file: the nearest folder, from the job's own upwards,
/// that has a `scripts/` folder.
pub fn project_dir(job_file: &Path) -> Option<PathBuf> {
    let start = job_file.parent().unwrap_or(Path::new("."));
    let start = if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        start
    };
    let start = start.canonicalize().ok()?;
    start
        .ancestors()
        .find(|d| d.join(SCRIPTS_DIR).is_dir())
        .map(Path::to_path_buf)
}

/// `path` relative to the working folder when it is inside it (for messages).
pub fn shown(path: &Path) -> PathBuf {
    std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

impl Scripts {
    /// Compiles the scripts `paths` names for the job in `job_file`, collecting every
    /// problem. `None` paths compile to no scripts.
    pub fn load(
        paths: &ScriptPaths,
        job_file: &Path,
        limits: Limits,
    ) -> Result<Option<Scripts>, LoadError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let project = project_dir(job_file);
        let scripts_dir = project
            .as_ref()
            .and_then(|p| p.join(SCRIPTS_DIR).canonicalize().ok());
        let engine = engine(limits, scripts_dir.clone());
        let mut errors = Vec::new();
        let mut cache: BTreeMap<String, Arc<Compiled>> = BTreeMap::new();
        let mut compile = |field: &str, rel: &str, errors: &mut Vec<CompileError>| {
            if let Some(c) = cache.get(rel) {
                return Some(c.clone());
            }
            let c = compile_file(
                &engine,
                project.as_deref(),
                scripts_dir.as_deref(),
                field,
                rel,
            )
            .map_err(|e| errors.push(e))
            .ok()?;
            let c = Arc::new(c);
            cache.insert(rel.to_string(), c.clone());
            Some(c)
        };
        let mut hook = |hook: Hook, rel: &Option<String>, errors: &mut Vec<CompileError>| {
            let rel = rel.as_deref()?;
            let field = format!("scripts.{}", hook.name());
            let c = compile(&field, rel, errors)?;
            let found = c
                .ast
                .iter_functions()
                .any(|f| f.name == hook.name() && f.params.len() == hook.arity());
            if !found {
                errors.push(CompileError {
                    file: c.name.clone().into(),
                    line: 0,
                    col: 0,
                    field,
                    message: format!(
                        "`{}` defines no `{}` (the job's `scripts.{}` calls it)",
                        c.name,
                        hook.signature(),
                        hook.name()
                    ),
                });
                return None;
            }
            Some(c)
        };
        let filter = hook(Hook::Filter, &paths.filter, &mut errors);
        let vars = hook(Hook::Vars, &paths.vars, &mut errors);
        let route = hook(Hook::Route, &paths.route, &mut errors);
        let mut helpers = BTreeMap::new();
        for (i, rel) in paths.helpers.iter().enumerate() {
            let field = format!("scripts.helpers[{i}]");
            let Some(c) = compile(&field, rel, &mut errors) else {
                continue;
            };
            for f in c.ast.iter_functions() {
                if f.access == rhai::FnAccess::Private {
                    continue;
                }
                helpers.insert(f.name.to_string(), c.clone());
            }
        }
        let route_literals = route
            .as_ref()
            .map(|c| route_literals(&c.ast))
            .unwrap_or_default();
        let scripts = Scripts {
            engine,
            limits,
            filter,
            vars,
            route,
            helpers,
            route_literals,
        };
        if errors.is_empty() {
            Ok(Some(scripts))
        } else {
            Err(LoadError {
                errors,
                partial: Box::new(scripts),
            })
        }
    }

    /// Compiles one script from source (tests and benchmarks), as a job naming it for
    /// every hook and helper would; imports are refused.
    pub fn from_source(name: &str, source: &str, limits: Limits) -> Result<Scripts, CompileError> {
        let engine = engine(limits, None);
        let c = Arc::new(compile_source(&engine, name, "scripts", source)?);
        let has = |hook: Hook| {
            c.ast
                .iter_functions()
                .any(|f| f.name == hook.name() && f.params.len() == hook.arity())
        };
        let pick = |hook: Hook| has(hook).then(|| c.clone());
        let helpers = c
            .ast
            .iter_functions()
            .map(|f| (f.name.to_string(), c.clone()))
            .collect();
        Ok(Scripts {
            filter: pick(Hook::Filter),
            vars: pick(Hook::Vars),
            route: pick(Hook::Route),
            route_literals: if has(Hook::Route) {
                route_literals(&c.ast)
            } else {
                Vec::new()
            },
            helpers,
            engine,
            limits,
        })
    }

    pub fn has(&self, hook: Hook) -> bool {
        match hook {
            Hook::Filter => self.filter.is_some(),
            Hook::Vars => self.vars.is_some(),
            Hook::Route => self.route.is_some(),
        }
    }

    /// The route script's name (for messages).
    pub fn route_script(&self) -> Option<&str> {
        self.route.as_ref().map(|c| c.name.as_str())
    }

    /// Provider names `route` returns literally, with line and column.
    pub fn route_literals(&self) -> &[(String, usize, usize)] {
        &self.route_literals
    }

    /// The helper functions templates may call.
    pub fn helper_names(&self) -> impl Iterator<Item = &str> {
        self.helpers.keys().map(String::as_str)
    }

    /// `filter(customer)`: keep the recipient?
    pub fn filter(&self, customer: &Dynamic) -> Result<bool, ScriptError> {
        let Some(c) = &self.filter else {
            return Ok(true);
        };
        let out = self.call(c, "filter", (customer.clone(),))?;
        out.as_bool().map_err(|t| ScriptError {
            script: c.name.clone(),
            function: "filter".into(),
            message: format!("must return true or false, returned {t}"),
        })
    }

    /// `vars(customer)`: the recipient's template variables.
    pub fn vars(
        &self,
        customer: &Dynamic,
    ) -> Result<BTreeMap<String, serde_json::Value>, ScriptError> {
        let Some(c) = &self.vars else {
            return Ok(BTreeMap::new());
        };
        let out = self.call(c, "vars", (customer.clone(),))?;
        let fail = |message: String| ScriptError {
            script: c.name.clone(),
            function: "vars".into(),
            message,
        };
        if out.is_unit() {
            return Ok(BTreeMap::new());
        }
        let type_name = out.type_name();
        let map = out.try_cast::<Map>().ok_or_else(|| {
            fail(format!(
                "must return a map (`#{{ name: value }}`), returned {type_name}"
            ))
        })?;
        map.into_iter()
            .map(|(k, v)| {
                rhai::serde::from_dynamic::<serde_json::Value>(&v)
                    .map(|v| (k.to_string(), v))
                    .map_err(|e| fail(format!("`{k}`: {e}")))
            })
            .collect()
    }

    /// `route(message, customer)`.
    pub fn route(&self, message: Dynamic, customer: &Dynamic) -> Result<Route, ScriptError> {
        let Some(c) = &self.route else {
            return Ok(Route::To(Vec::new()));
        };
        let out = self.call(c, "route", (message, customer.clone()))?;
        let fail = |message: String| ScriptError {
            script: c.name.clone(),
            function: "route".into(),
            message,
        };
        if out.is_unit() {
            return Ok(Route::Out);
        }
        if out.is_string() {
            return Ok(Route::To(vec![out.to_string()]));
        }
        let type_name = out.type_name();
        let Some(items) = out.try_cast::<rhai::Array>() else {
            return Err(fail(format!(
                "must return a provider name, an array of them, or (); returned {type_name}"
            )));
        };
        if items.is_empty() {
            return Ok(Route::Out);
        }
        items
            .into_iter()
            .map(|v| {
                v.into_immutable_string()
                    .map(|s| s.to_string())
                    .map_err(|t| fail(format!("the array must hold provider names, not {t}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Route::To)
    }

    /// Calls helper `name` with template values.
    pub fn helper(&self, name: &str, args: Vec<Dynamic>) -> Result<Dynamic, ScriptError> {
        let Some(c) = self.helpers.get(name) else {
            return Err(ScriptError {
                script: "scripts".into(),
                function: name.into(),
                message: "no such helper".into(),
            });
        };
        self.call(c, name, args)
    }

    fn call(
        &self,
        c: &Compiled,
        function: &str,
        args: impl FuncArgs,
    ) -> Result<Dynamic, ScriptError> {
        let mut scope = Scope::new();
        let options = CallFnOptions::new()
            .eval_ast(c.eval_ast)
            .rewind_scope(false);
        let previous = DEADLINE.with(|d| d.replace(Some(Instant::now() + self.limits.wall_clock)));
        let out = self
            .engine
            .call_fn_with_options::<Dynamic>(options, &mut scope, &c.ast, function, args);
        DEADLINE.with(|d| d.set(previous));
        out.map_err(|e| self.explain(c, function, *e))
    }

    /// Turns a Rhai error into one a person can act on: the limit, or the error and place.
    fn explain(&self, c: &Compiled, function: &str, e: EvalAltResult) -> ScriptError {
        // The cause inside nested calls is what matters.
        let mut e = e;
        loop {
            match e {
                EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => e = *inner,
                other => {
                    e = other;
                    break;
                }
            }
        }
        let l = &self.limits;
        let message = match &e {
            EvalAltResult::ErrorTooManyOperations(_) => {
                format!("operation limit reached ({} operations)", l.operations)
            }
            EvalAltResult::ErrorStackOverflow(_) => {
                format!("call depth limit reached ({} levels)", l.call_levels)
            }
            EvalAltResult::ErrorDataTooLarge(what, _) => {
                let limit = match what.as_str() {
                    w if w.contains("string") || w.contains("String") => {
                        format!("{} bytes", l.string_size)
                    }
                    w if w.contains("rray") => format!("{} items", l.array_size),
                    w if w.contains("ap") => format!("{} entries", l.map_size),
                    _ => "the size limit".into(),
                };
                format!("size limit reached: {what} over {limit}")
            }
            EvalAltResult::ErrorTerminated(token, _) if token.to_string() == WALL_CLOCK => {
                format!("wall-clock limit reached ({} ms)", l.wall_clock.as_millis())
            }
            other => {
                let text = other.to_string();
                // Rhai appends " (line L, position C)"; the place goes in front instead.
                match text.rfind(" (line ") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                }
            }
        };
        let pos = e.position();
        let script = match (pos.line(), pos.position()) {
            (Some(line), Some(col)) => format!("{}:{line}:{col}", c.name),
            (Some(line), None) => format!("{}:{line}", c.name),
            _ => c.name.clone(),
        };
        ScriptError {
            script,
            function: function.to_string(),
            message,
        }
    }
}

fn compile_file(
    engine: &Engine,
    project: Option<&Path>,
    scripts_dir: Option<&Path>,
    field: &str,
    rel: &str,
) -> Result<Compiled, CompileError> {
    let fail = |message: String| CompileError {
        file: PathBuf::from(rel),
        line: 0,
        col: 0,
        field: field.to_string(),
        message,
    };
    let rel_path = Path::new(rel);
    let inside = rel_path.starts_with(SCRIPTS_DIR)
        && rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return Err(fail(format!(
            "`{rel}` is not under `{SCRIPTS_DIR}/` (script paths are relative to the project, e.g. `scripts/route.rhai`)"
        )));
    }
    let (Some(project), Some(_)) = (project, scripts_dir) else {
        return Err(fail(format!(
            "no `{SCRIPTS_DIR}/` folder next to the job file or above it for `{rel}`"
        )));
    };
    let file = project.join(rel_path);
    let source = std::fs::read_to_string(&file)
        .map_err(|e| fail(format!("cannot read `{}`: {e}", file.display())))?;
    compile_source(engine, rel, field, &source).map_err(|mut e| {
        e.file = shown(&file);
        e
    })
}

fn compile_source(
    engine: &Engine,
    name: &str,
    field: &str,
    source: &str,
) -> Result<Compiled, CompileError> {
    let mut ast = engine
        .compile_into_self_contained(&Scope::new(), source)
        .map_err(|e| {
            let text = e.to_string();
            let message = match text.rfind(" (line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let (line, col) = match (e.position().line(), e.position().position()) {
                (Some(l), Some(c)) => (l, c),
                // Imports resolved while compiling carry no place: find the import.
                _ => match &*e {
                    EvalAltResult::ErrorModuleNotFound(path, _) => {
                        let path = path.split(" (").next().unwrap_or(path);
                        locate(source, &format!("\"{path}\""))
                    }
                    EvalAltResult::ErrorInModule(path, ..) => {
                        locate(source, &format!("\"{path}\""))
                    }
                    _ => (0, 0),
                },
            };
            CompileError {
                file: PathBuf::from(name),
                line,
                col,
                field: field.to_string(),
                message,
            }
        })?;
    ast.set_source(name.to_string());
    let eval_ast = !ast.statements().is_empty();
    Ok(Compiled {
        name: name.to_string(),
        ast,
        eval_ast,
    })
}

/// 1-based line and column of the first `needle` in `source`, or (0, 0).
fn locate(source: &str, needle: &str) -> (usize, usize) {
    match source.find(needle) {
        Some(at) => {
            let before = &source[..at];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, col)
        }
        None => (0, 0),
    }
}

/// String literals that `route` returns: `return "x"`, a block ending in `"x"`, or an
/// array literal of names in either place.
fn route_literals(ast: &AST) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    let route =
        ast.clone_functions_only_filtered(|_, _, _, name, params| name == "route" && params == 2);
    route.walk(&mut |nodes: &[ASTNode]| {
        let value = match nodes.last() {
            Some(ASTNode::Stmt(Stmt::Return(Some(e), ..))) => Some(&**e),
            Some(ASTNode::Stmt(Stmt::Expr(e))) => Some(&**e),
            _ => None,
        };
        let mut push = |s: &str, pos: Position| {
            found.push((
                s.to_string(),
                pos.line().unwrap_or(0),
                pos.position().unwrap_or(0),
            ));
        };
        match value {
            Some(Expr::StringConstant(s, pos)) => push(s, *pos),
            Some(Expr::Array(items, _)) => {
                for item in items {
                    if let Expr::StringConstant(s, pos) = item {
                        push(s, *pos);
                    }
                }
            }
            // The optimizer folds an array of literals into one constant.
            Some(Expr::DynamicConstant(value, pos)) => {
                if let Some(items) = value.read_lock::<rhai::Array>() {
                    for item in items.iter() {
                        if let Ok(s) = item.as_immutable_string_ref() {
                            push(&s, *pos);
                        }
                    }
                } else if let Ok(s) = value.as_immutable_string_ref() {
                    push(&s, *pos);
                }
            }
            _ => {}
        }
        true
    });
    found
}

/// The recipient as scripts see it: every field (absent ones are `()`), `attrs` and
/// `services`, read-only.
pub fn customer(r: &Recipient) -> Dynamic {
    fn opt(v: &Option<String>) -> Dynamic {
        v.as_deref()
            .map_or(Dynamic::UNIT, |s| Dynamic::from(ImmutableString::from(s)))
    }
    fn s(v: &str) -> Dynamic {
        Dynamic::from(ImmutableString::from(v))
    }
    let mut m = Map::new();
    m.insert("kind".into(), s(r.kind.as_str()));
    m.insert("id".into(), Dynamic::from_int(r.id as rhai::INT));
    m.insert("login".into(), opt(&r.login));
    m.insert("status".into(), s(r.status.as_str()));
    m.insert("name".into(), s(&r.name));
    m.insert("email".into(), opt(&r.email));
    m.insert("billing_email".into(), opt(&r.billing_email));
    m.insert("phone".into(), opt(&r.phone));
    m.insert("phone_raw".into(), opt(&r.phone_raw));
    m.insert(
        "category".into(),
        r.category.map_or(Dynamic::UNIT, |c| s(c.as_str())),
    );
    m.insert("location".into(), opt(&r.location));
    m.insert(
        "billing_type".into(),
        r.billing_type.map_or(Dynamic::UNIT, |c| s(c.as_str())),
    );
    m.insert("partner".into(), opt(&r.partner));
    let tariffs: rhai::Array = r
        .tariffs
        .iter()
        .map(|t| {
            let mut tm = Map::new();
            tm.insert(
                "service".into(),
                t.service.map_or(Dynamic::UNIT, |x| s(x.as_str())),
            );
            tm.insert("plan".into(), s(&t.plan));
            Dynamic::from_map(tm)
        })
        .collect();
    let services: rhai::Array = r
        .tariffs
        .iter()
        .filter_map(|t| t.service.map(|x| s(x.as_str())))
        .collect();
    m.insert("tariffs".into(), Dynamic::from_array(tariffs));
    m.insert("services".into(), Dynamic::from_array(services));
    m.insert("timezone".into(), opt(&r.timezone));
    let attrs: Map = r
        .attrs
        .iter()
        .map(|(k, v)| (k.as_str().into(), s(v)))
        .collect();
    m.insert("attrs".into(), Dynamic::from_map(attrs));
    // Shared: every call (and every script function it passes `customer` to) gets the
    // same value instead of a deep copy of the map; read-only, so no call can change
    // what the next one sees.
    Dynamic::from_map(m)
        .into_read_only()
        .into_shared()
        .into_read_only()
}

/// A rendered message as `route` sees it.
pub struct MessageView<'a> {
    pub channel: &'a str,
    /// The job's own provider for the channel.
    pub provider: &'a str,
    pub address: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub encoding: Option<&'a str>,
    pub parts: usize,
}

/// The message map: `channel`, `provider` (the job's own), `address`, `country` (ISO code of a phone number, or
/// `()`), `calling_code`, `subject`, `body`, `encoding`, `parts`.
pub fn message(m: &MessageView) -> Dynamic {
    let s = |v: &str| Dynamic::from(ImmutableString::from(v));
    let mut map = Map::new();
    map.insert("channel".into(), s(m.channel));
    map.insert("provider".into(), s(m.provider));
    map.insert("address".into(), s(m.address));
    let (country, code) = country_of(m.address);
    map.insert(
        "country".into(),
        country.map_or(Dynamic::UNIT, Dynamic::from),
    );
    map.insert(
        "calling_code".into(),
        code.map_or(Dynamic::UNIT, |c| Dynamic::from_int(c as rhai::INT)),
    );
    map.insert("subject".into(), m.subject.map_or(Dynamic::UNIT, s));
    map.insert("body".into(), s(m.body));
    map.insert("encoding".into(), m.encoding.map_or(Dynamic::UNIT, s));
    map.insert("parts".into(), Dynamic::from_int(m.parts as rhai::INT));
    Dynamic::from_map(map).into_read_only()
}

/// A number's region code and calling code, where known.
type Country = (Option<ImmutableString>, Option<u16>);

/// The country of an E.164 number: the main region of its calling code (`+27…` → `ZA`).
/// Calling codes are 1 to 3 digits, so the first three digits decide; answers are
/// remembered per thread by them.
fn country_of(address: &str) -> Country {
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::HashMap<u16, Country>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    let Some(digits) = address.strip_prefix('+') else {
        return (None, None);
    };
    let Some(key) = digits.get(..3).and_then(|d| d.parse::<u16>().ok()) else {
        return lookup_country(digits);
    };
    SEEN.with(|seen| {
        if let Some(found) = seen.borrow().get(&key) {
            return found.clone();
        }
        let found = lookup_country(digits);
        seen.borrow_mut().insert(key, found.clone());
        found
    })
}

fn lookup_country(digits: &str) -> Country {
    for len in 1..=3 {
        let Some(code) = digits.get(..len).and_then(|d| d.parse::<u16>().ok()) else {
            break;
        };
        if let Some(regions) = phonenumber::metadata::DATABASE.by_code(&code)
            && let Some(first) = regions.first()
        {
            let main = regions
                .iter()
                .find(|m| m.is_main_country_for_code())
                .unwrap_or(first);
            return (Some(main.id().into()), Some(code));
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests;
