//! `cargo xtask build-worker`: the Worker's release bundle in worker/build, via worker-build.
//! The bench's Rust baseline (bench/rust-metered) is built the same way, into its own build/.
//!
//! wrangler runs this as the Worker's `[build] command` on every `wrangler dev` and
//! `wrangler deploy`, so it returns at once when the sources have not changed since the last
//! build (a fingerprint of their contents, not mtimes, which a checkout rewrites).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{
    cmd::{self, cargo_bin, cargo_tool, root},
    setup::{self, fnv1a, WasmToolchain},
};

/// A crate built for the runtime by worker-build.
struct WasmCrate {
    /// Its directory, from the workspace root; the bundle lands in its `build/`.
    dir: &'static str,
    /// What it is built from besides the workspace's Cargo.toml and Cargo.lock: manifests and
    /// source directories, from the workspace root.
    manifests: &'static [&'static str],
    sources: &'static [&'static str],
    /// Whether its glue gets [`with_promise_ticks`] and [`with_rpc_object`].
    edit_glue: bool,
}

/// Our Worker.
const WORKER: WasmCrate = WasmCrate {
    dir: "worker",
    manifests: &["worker/Cargo.toml", "protocol/Cargo.toml"],
    sources: &["worker/src", "protocol/src"],
    edit_glue: true,
};

/// The bench's Rust metering baseline.
const RUST_METERED: WasmCrate = WasmCrate {
    dir: "bench/rust-metered",
    manifests: &["bench/rust-metered/Cargo.toml"],
    sources: &["bench/rust-metered/src"],
    // The baseline stays what any workers-rs Worker is.
    edit_glue: false,
};

impl WasmCrate {
    fn out(&self) -> PathBuf {
        root().join(self.dir).join("build")
    }
}

/// Where the bundle lands; wrangler.toml's `main` points into it.
pub fn bundle_dir() -> PathBuf {
    WORKER.out()
}

pub fn worker(force: bool) -> Result<()> {
    build(&WORKER, force)
}

/// The bench's Rust metering baseline, built (when its sources changed) into
/// bench/rust-metered/build, which its wrangler.toml's `main` points into.
pub fn rust_metered() -> Result<()> {
    build(&RUST_METERED, false)
}

fn build(krate: &WasmCrate, force: bool) -> Result<()> {
    let out = krate.out();
    let stamp = out.join(".inputs-fingerprint");
    let fingerprint = inputs_fingerprint(krate)?.to_string();
    let built = out.join("worker").join("shim.mjs").exists();
    if !force && built && fs::read_to_string(&stamp).ok().as_deref() == Some(fingerprint.as_str()) {
        eprintln!("build-worker: {} up to date", krate.dir);
        return Ok(());
    }
    let started = Instant::now();
    let mut c = worker_build_command(krate, setup::wasm_toolchain()?)?;
    cmd::run(&mut c)?;
    let wasm = find_wasm(&out)
        .with_context(|| format!("worker-build left no .wasm in {}/build", krate.dir))?;
    let module = fs::read(&wasm)?;
    fs::write(
        &wasm,
        without_names(&module).context("the built wasm is not a wasm module")?,
    )?;
    if krate.edit_glue {
        let glue_path = out.join("index.js");
        let glue = fs::read_to_string(&glue_path)
            .with_context(|| format!("worker-build left no {}", glue_path.display()))?;
        let edited = with_promise_ticks(&glue)
            .and_then(|glue| with_rpc_object(&glue))
            .map_err(|e| anyhow!("{}: {e}", glue_path.display()))?;
        fs::write(&glue_path, edited)?;
    }
    fs::write(&stamp, fingerprint)?;
    eprintln!(
        "build-worker: {} built in {:.1} s{}",
        krate.dir,
        started.elapsed().as_secs_f64(),
        wasm_size(&out)
            .map(|s| format!("; {s}"))
            .unwrap_or_default()
    );
    Ok(())
}

fn worker_build_command(krate: &WasmCrate, toolchain: WasmToolchain) -> Result<Command> {
    let root = root();
    let node_modules = root.join("worker").join("node_modules");
    let mut c = Command::new(cargo_tool("worker-build"));
    // release tuned for size: see [profile.wasm-release] in the root Cargo.toml.
    c.args(["--profile", "wasm-release"])
        .current_dir(root.join(krate.dir));
    // Variables that `cargo xtask` inherited from the outer cargo and rustup would point the
    // inner build at the host toolchain.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
    ] {
        c.env_remove(var);
    }
    // binaryen's wasm-opt is a node script: on Windows only npm's .cmd wrapper runs it.
    let wasm_opt = if cfg!(windows) {
        node_modules.join(".bin").join("wasm-opt.cmd")
    } else {
        node_modules.join("binaryen").join("bin").join("wasm-opt")
    };
    c.env("CARGO_TARGET_DIR", root.join("target").join("wasm"))
        .env("WASM_BINDGEN_BIN", cargo_tool("wasm-bindgen"))
        .env("ESBUILD_BIN", esbuild_bin(&node_modules)?)
        .env("WASM_OPT_BIN", wasm_opt);
    if toolchain == WasmToolchain::Debian {
        let path = format!("/usr/bin:/usr/sbin:/bin:{}", cargo_bin().display());
        c.env("PATH", path)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_UNSTABLE_BUILD_STD", "std,panic_abort");
    }
    Ok(c)
}

/// esbuild's npm package for this machine (`@esbuild/darwin-arm64`, `@esbuild/win32-x64`...),
/// from Rust's names for the OS and architecture.
fn esbuild_package(os: &str, arch: &str) -> Option<String> {
    let os = match os {
        "macos" => "darwin",
        "windows" => "win32",
        "linux" | "freebsd" | "netbsd" | "openbsd" | "android" => os,
        _ => return None,
    };
    let arch = match arch {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "ia32",
        "arm" => "arm",
        "loongarch64" => "loong64",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64",
        _ => return None,
    };
    Some(format!("@esbuild/{os}-{arch}"))
}

/// The esbuild binary npm installed for this machine (wrangler's dependency). worker-build
/// would download one otherwise.
fn esbuild_bin(node_modules: &Path) -> Result<PathBuf> {
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    let Some(package) = esbuild_package(os, arch) else {
        bail!("esbuild publishes no binary for {os}-{arch}, which the Worker's build needs");
    };
    // Windows packages hold `esbuild.exe` at their root, the others `bin/esbuild`.
    let inside = if os == "windows" {
        PathBuf::from("esbuild.exe")
    } else {
        Path::new("bin").join("esbuild")
    };
    // Hoisted, or under wrangler when another package pins a different esbuild.
    let candidates = [
        node_modules.join(&package),
        node_modules
            .join("wrangler")
            .join("node_modules")
            .join(&package),
    ];
    candidates
        .iter()
        .map(|dir| dir.join(&inside))
        .find(|bin| bin.is_file())
        .with_context(|| {
            format!(
                "{} is missing: esbuild's binary for this machine ({package}) is not installed; \
                 run `cargo xtask setup` (its `npm ci` installs it)",
                candidates[0].join(&inside).display()
            )
        })
}

/// The wasm built in `dir`: its size, raw and gzipped, for the log.
fn wasm_size(dir: &Path) -> Option<String> {
    let (raw, gz) = bytes_of(dir)?;
    Some(format!(
        "wasm {} KB raw, {} KB gzipped",
        raw / 1024,
        gz / 1024
    ))
}

/// The built wasm's size in bytes: raw, and gzipped (`gzip -9`, as Cloudflare counts a
/// Worker's size compressed).
pub fn wasm_bytes() -> Option<(u64, u64)> {
    bytes_of(&bundle_dir())
}

fn bytes_of(dir: &Path) -> Option<(u64, u64)> {
    let wasm = find_wasm(dir)?;
    let raw = fs::metadata(&wasm).ok()?.len();
    let gz = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(&wasm)
        .output()
        .ok()
        .filter(|o| o.status.success())?
        .stdout
        .len() as u64;
    Some((raw, gz))
}

fn find_wasm(dir: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).ok()?.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "wasm") {
                return Some(p);
            }
        }
    }
    None
}

/// The most a gzipped Worker wasm may weigh: issue 15's goal, 300 KB (298.3 KB at 502b5f1).
/// Whatever adds code pays for it by removing some; the Free plan's own limit is 3 MB, but
/// every KB is also code an isolate's first request may compile.
pub const WASM_GZ_BUDGET: u64 = 300_000;

/// The most bytes one function of the Worker's wasm may have. The runtime compiles a wasm
/// function the first time it is called, all of it, and a big one slower per byte: up to
/// 9917c43 one function held a request's whole task (121 KB; 6.6 ms to compile, on every
/// isolate's first request). See `[package.metadata.wasm-pack]` in worker/Cargo.toml and
/// `runtime::apart`.
pub const MAX_FUNCTION_BYTES: usize = 16 * 1024;

/// Checks the built Worker's wasm against [`WASM_GZ_BUDGET`] and [`MAX_FUNCTION_BYTES`].
pub fn check_worker() -> Result<()> {
    let (index, size) =
        largest_function().context("the built wasm was not found, or is not a wasm module")?;
    if size > MAX_FUNCTION_BYTES {
        bail!(
            "the Worker's wasm has a function of {size} bytes (the {index}th defined), over the \
             {MAX_FUNCTION_BYTES} allowed: an isolate compiles it whole the first time it runs. \
             Split it: an async step through `runtime::apart`, a rarely taken branch into a \
             function of its own"
        );
    }
    let (_, gz) = bytes_of(&bundle_dir()).context("the built wasm was not found")?;
    if gz > WASM_GZ_BUDGET {
        bail!("the Worker's wasm is {gz} bytes gzipped, over the budget of {WASM_GZ_BUDGET}");
    }
    Ok(())
}

/// The largest function body in the built Worker's wasm: its index among the functions the
/// module defines, and its size in bytes.
pub fn largest_function() -> Option<(usize, usize)> {
    let module = fs::read(find_wasm(&bundle_dir())?).ok()?;
    function_sizes(&module)?
        .into_iter()
        .enumerate()
        .max_by_key(|&(_, size)| size)
}

/// An unsigned LEB128 number at `*at`, which moves past it.
fn leb(bytes: &[u8], at: &mut usize) -> Option<usize> {
    let mut value = 0usize;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// One section of a wasm module: its id, where it starts (its id's byte), its content.
struct Section {
    id: u8,
    start: usize,
    content: std::ops::Range<usize>,
}

/// `module`'s sections, in order; `None` when the bytes are not a well-formed module.
fn sections(module: &[u8]) -> Option<Vec<Section>> {
    if module.get(..4)? != b"\0asm" || module.len() < 8 {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 8;
    while at < module.len() {
        let start = at;
        let id = module[at];
        at += 1;
        let len = leb(module, &mut at)?;
        let end = at.checked_add(len).filter(|&e| e <= module.len())?;
        out.push(Section {
            id,
            start,
            content: at..end,
        });
        at = end;
    }
    Some(out)
}

/// `module` without its `name` custom section: the function names (worker-build keeps them,
/// whatever wasm-opt is told), 187 KB of a 1,160 KB module. A wasm trap's stack trace then
/// shows `wasm-function[N]`; the Worker's own errors are logged by message. `None` when the
/// bytes are not a well-formed module.
pub fn without_names(module: &[u8]) -> Option<Vec<u8>> {
    let mut out = module.get(..8)?.to_vec();
    for section in sections(module)? {
        let is_names = section.id == 0 && {
            let mut at = section.content.start;
            let name_len = leb(module, &mut at)?;
            module.get(at..at.checked_add(name_len)?)? == b"name"
        };
        if !is_names {
            out.extend_from_slice(&module[section.start..section.content.end]);
        }
    }
    Some(out)
}

/// `glue` (the bundle's JavaScript, as worker-build's esbuild writes it) with wasm-bindgen's
/// probe for `queueMicrotask` answering `undefined`: wasm-bindgen-futures then schedules its
/// task queue's ticks with `then` on a resolved promise, its own fallback, instead of
/// `queueMicrotask`. Both run the queue as a microtask, in the same order. workerd's
/// `queueMicrotask` wraps each callback in a new native function holding a global handle (to
/// report what it throws), about 2 µs of the runtime's work each time a Rust task wakes:
/// 12 µs of a JSON request's CPU with the limiter off, 32 µs with it on (perf, issue 15).
/// The queue's callback never throws (its Rust returns `Ok`; a trap aborts the request
/// either way). Refuses a glue without exactly one probe (a new wasm-bindgen may write it
/// otherwise): the build then fails rather than ship without the edit.
pub fn with_promise_ticks(glue: &str) -> Result<String, String> {
    const IMPORT: &str = "__wbg_queueMicrotask_";
    const FUNCTION: &str = "function(";
    let mut probes = Vec::new();
    for (at, _) in glue.match_indices(IMPORT) {
        let rest = &glue[at + IMPORT.len()..];
        let hash = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        let Some(function) = rest[hash..].strip_prefix(':') else {
            continue;
        };
        let Some(params) = function.strip_prefix(FUNCTION) else {
            continue;
        };
        let Some(close) = params.find(')') else {
            continue;
        };
        let param = &params[..close];
        let body = format!("{{return {param}.queueMicrotask}}");
        let is_name = !param.is_empty() && param.chars().all(is_name_char);
        if is_name && params[close + 1..].starts_with(&body) {
            let start = glue.len() - function.len();
            probes.push(start..start + FUNCTION.len() + close + 1 + body.len());
        }
    }
    match probes.as_slice() {
        [probe] => Ok(format!(
            "{}function(){{}}{}",
            &glue[..probe.start],
            &glue[probe.end..]
        )),
        _ => Err(format!(
            "expected one wasm-bindgen probe of `queueMicrotask` (`__wbg_queueMicrotask_<hash>:\
             function(t){{return t.queueMicrotask}}`), found {}",
            probes.len()
        )),
    }
}

/// The class the glue exports as the limiter's Durable Object: a `DurableObject` (from
/// `cloudflare:workers`) around wasm-bindgen's `UserLimiter`, so that the object takes
/// JavaScript RPC calls (`call(text)`), which the runtime refuses for a class that does not
/// extend `DurableObject`. Its `fetch`, `alarm` and `call` go to the wasm class, as exported
/// (behind workers-rs' wrapper, which re-creates it after a trap).
const RPC_OBJECT: &str =
    "import{DurableObject as __storycadDurableObject}from\"cloudflare:workers\";\
class __storycadUserLimiter extends __storycadDurableObject{constructor(t,e){super(t,e);\
this.core=new CORE(t,e)}fetch(r){return this.core.fetch(r)}alarm(){return this.core.alarm()}\
call(t){return this.core.call(t)}}";

/// `glue` exporting [`RPC_OBJECT`] as `UserLimiter` in place of wasm-bindgen's class (the round
/// trip through RPC costs the runtime less than a fetch: see `runtime::limiter`). Refuses a glue
/// without exactly one `<name> as UserLimiter` in its exports (another worker-build may write
/// them otherwise): the build then fails rather than ship an object without RPC.
pub fn with_rpc_object(glue: &str) -> Result<String, String> {
    const EXPORT: &str = " as UserLimiter";
    let found: Vec<_> = glue
        .match_indices(EXPORT)
        .filter_map(|(at, _)| {
            let head = &glue[..at];
            let start = head.rfind(|c: char| !is_name_char(c)).map_or(0, |i| i + 1);
            let name = &head[start..];
            let opens = matches!(head[..start].chars().next_back(), Some('{' | ','));
            let closes = matches!(glue[at + EXPORT.len()..].chars().next(), Some('}' | ','));
            (!name.is_empty() && opens && closes).then_some((start, at, name))
        })
        .collect();
    let [(start, at, name)] = found[..] else {
        return Err(format!(
            "expected one `<name> as UserLimiter` in the glue's exports, found {}",
            found.len()
        ));
    };
    Ok(format!(
        "{}__storycadUserLimiter{}\n{}\n",
        &glue[..start],
        &glue[at..],
        RPC_OBJECT.replace("CORE", name)
    ))
}

/// Whether `c` may be part of a JavaScript name as esbuild writes them.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// The size in bytes of each function body `module` defines, in order (none without a code
/// section); `None` when the bytes are not a well-formed module.
pub fn function_sizes(module: &[u8]) -> Option<Vec<usize>> {
    let Some(code) = sections(module)?.into_iter().find(|s| s.id == 10) else {
        return Some(Vec::new());
    };
    let mut at = code.content.start;
    let count = leb(module, &mut at)?;
    let mut sizes = Vec::with_capacity(count.min(code.content.len()));
    for _ in 0..count {
        let size = leb(module, &mut at)?;
        at = at.checked_add(size).filter(|&e| e <= code.content.end)?;
        sizes.push(size);
    }
    (at == code.content.end).then_some(sizes)
}

/// A fingerprint of everything a bundle is built from.
fn inputs_fingerprint(krate: &WasmCrate) -> Result<u64> {
    let root = root();
    let mut files = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    files.extend(krate.manifests.iter().map(|m| root.join(m)));
    for dir in krate.sources {
        collect_files(&root.join(dir), &mut files)?;
    }
    files.sort();
    let mut all = Vec::new();
    for f in &files {
        all.extend_from_slice(f.to_string_lossy().as_bytes());
        all.push(0);
        if let Ok(bytes) = fs::read(f) {
            all.extend_from_slice(&bytes);
        }
        all.push(0);
    }
    // How it is built counts too: the toolchain, and the build command's arguments.
    let toolchain = setup::wasm_toolchain()?;
    all.extend_from_slice(format!("{toolchain:?}").as_bytes());
    all.extend_from_slice(cmd::describe(&worker_build_command(krate, toolchain)?).as_bytes());
    // And what is done to its output (the name section dropped, the glue's edits).
    all.extend_from_slice(b"without-names");
    if krate.edit_glue {
        all.extend_from_slice(b"promise-ticks rpc-object");
    }
    Ok(fnv1a(&all))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_section_is_dropped_and_nothing_else() {
        // Header, a type section (one `() -> ()`), a custom "name" section, a custom "other".
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        let types = [1u8, 4, 1, 0x60, 0, 0];
        let names = [0u8, 7, 4, b'n', b'a', b'm', b'e', 1, 2];
        let other = [0u8, 6, 5, b'o', b't', b'h', b'e', b'r'];
        for section in [&types[..], &names, &other] {
            module.extend_from_slice(section);
        }
        let mut expected = b"\0asm\x01\0\0\0".to_vec();
        expected.extend_from_slice(&types);
        expected.extend_from_slice(&other);
        assert_eq!(without_names(&module), Some(expected.clone()));
        assert_eq!(
            without_names(&expected),
            Some(expected.clone()),
            "nothing to drop"
        );
        assert_eq!(without_names(b"not wasm"), None);
        assert_eq!(
            without_names(&module[..module.len() - 2]),
            None,
            "cut short"
        );
    }

    #[test]
    fn the_queue_microtask_probe_answers_undefined_and_nothing_else_changes() {
        let call = "__wbg_queueMicrotask_4a1a4d8dd332373b:function(t){queueMicrotask(t)}";
        let probe = "__wbg_queueMicrotask_1e8503a8a690f0a3:function(t){return t.queueMicrotask}";
        let glue = format!("var x={{a:1,{probe},{call},b:function(e){{return e.then}}}};");
        assert_eq!(
            with_promise_ticks(&glue).unwrap(),
            format!(
                "var x={{a:1,__wbg_queueMicrotask_1e8503a8a690f0a3:function(){{}},{call},\
                 b:function(e){{return e.then}}}};"
            )
        );
        // Another parameter name, as another minifier run may pick.
        assert_eq!(
            with_promise_ticks("{__wbg_queueMicrotask_ab:function($e){return $e.queueMicrotask}}")
                .unwrap(),
            "{__wbg_queueMicrotask_ab:function(){}}"
        );
        // No probe, two probes, or one of another shape: refused, so the build fails.
        for glue in [
            call.to_owned(),
            format!("{probe},{probe}"),
            "__wbg_queueMicrotask_1e:function(t){const r=t.queueMicrotask;return r}".to_owned(),
            "__wbg_queueMicrotask_1e:function(t){return u.queueMicrotask}".to_owned(),
            String::new(),
        ] {
            assert!(with_promise_ticks(&glue).is_err(), "{glue}");
        }
    }

    #[test]
    fn the_limiter_export_becomes_a_durable_object_around_the_wasm_class() {
        let glue = "var ve=new Proxy(W,M);export{me as R2Range,ve as UserLimiter,ye as default};";
        let edited = with_rpc_object(glue).unwrap();
        assert!(edited.starts_with(
            "var ve=new Proxy(W,M);export{me as R2Range,__storycadUserLimiter as UserLimiter,\
             ye as default};\n"
        ));
        assert!(edited.ends_with(&format!("{}\n", RPC_OBJECT.replace("CORE", "ve"))));
        assert!(edited.contains("this.core=new ve(t,e)"), "{edited}");
        // Last in the list, another name.
        assert!(with_rpc_object("export{$u as UserLimiter}")
            .unwrap()
            .contains("new $u(t,e)"));
        // Refused: none, two, not an export list's entry.
        for glue in [
            "export{ye as default}",
            "export{a as UserLimiter,b as UserLimiter}",
            "var x=a as UserLimiterX;",
            "export{ as UserLimiter}",
        ] {
            assert!(with_rpc_object(glue).is_err(), "{glue}");
        }
    }

    #[test]
    fn function_sizes_are_read_from_the_code_section() {
        let header = b"\0asm\x01\0\0\0".to_vec();
        // A type section, then a code section of two bodies: 2 bytes (no locals, `end`) and
        // 4 (no locals, `i32.const 1`, `drop`... `end`).
        let types = [1u8, 4, 1, 0x60, 0, 0];
        let code = [10u8, 9, 2, 2, 0, 0x0b, 4, 0, 0x41, 1, 0x0b];
        let mut module = header.clone();
        module.extend_from_slice(&types);
        module.extend_from_slice(&code);
        assert_eq!(function_sizes(&module), Some(vec![2, 4]));
        let mut no_code = header.clone();
        no_code.extend_from_slice(&types);
        assert_eq!(function_sizes(&no_code), Some(vec![]));
        // A body running past its section, or a count the bodies do not fill.
        let mut long = header.clone();
        long.extend_from_slice(&[10u8, 4, 1, 9, 0, 0x0b]);
        assert_eq!(function_sizes(&long), None);
        let mut short = header.clone();
        short.extend_from_slice(&[10u8, 4, 2, 2, 0, 0x0b]);
        assert_eq!(function_sizes(&short), None);
        let mut trailing = header;
        trailing.extend_from_slice(&[10u8, 5, 1, 2, 0, 0x0b, 0]);
        assert_eq!(function_sizes(&trailing), None);
        assert_eq!(function_sizes(b"\0asm"), None);
    }

    #[test]
    fn esbuild_package_follows_npm_names() {
        for (os, arch, package) in [
            ("linux", "x86_64", "@esbuild/linux-x64"),
            ("linux", "aarch64", "@esbuild/linux-arm64"),
            ("macos", "aarch64", "@esbuild/darwin-arm64"),
            ("macos", "x86_64", "@esbuild/darwin-x64"),
            ("windows", "x86_64", "@esbuild/win32-x64"),
            ("windows", "aarch64", "@esbuild/win32-arm64"),
        ] {
            assert_eq!(esbuild_package(os, arch).as_deref(), Some(package));
        }
        assert_eq!(esbuild_package("solaris", "x86_64"), None);
        assert_eq!(esbuild_package("linux", "mips"), None);
    }
}
