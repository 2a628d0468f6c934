//! Generates the libfabric bindings from the headers of the *system* libfabric.
//!
//! Most of libfabric's API is `static inline` (fi_domain, fi_send, fi_cq_read...), so
//! bindgen also writes C wrappers for those, which we compile and link with `cc`.
//! A missing dependency stops the build with one line that names the package.
//!
//! Nothing links libfabric: its few exported functions are looked up when a process
//! first opens a fabric (src/dynamic.rs), so a process that never does (`nacre status`,
//! any program under the interception library that never touches a nacre path) does not
//! pay for loading it and the libraries it pulls in. Those are left out of the bindings
//! here, and so are the inline functions that call them (fi_allocinfo).

use std::env;
use std::panic;
use std::path::PathBuf;

const MIN_LIBFABRIC: &str = "1.17";

/// libfabric's exported functions (src/dynamic.rs provides the ones nacre calls) and
/// the inline ones that call them, which would need the library at link time.
const EXPORTED: &str = "fi_(getinfo|freeinfo|dupinfo|allocinfo|fabric|fabric2|open|strerror|\
                        version|tostr|tostr_r|getparams|freeparams|param_.*|log.*)";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");

    let lib = pkg_config::Config::new()
        .atleast_version(MIN_LIBFABRIC)
        .cargo_metadata(false)
        .probe("libfabric")
        .unwrap_or_else(|e| {
            fail(&format!(
                "libfabric >= {MIN_LIBFABRIC} was not found by pkg-config: install the Debian/Ubuntu \
                 package `libfabric-dev` (and `pkg-config`), e.g. `apt-get install libfabric-dev pkg-config` \
                 [pkg-config said: {}]",
                first_line(&e.to_string())
            ))
        });

    // Where the libfabric we compiled against lives: tried after the soname at run time.
    let dir = lib.link_paths.first().map(|p| p.display().to_string());
    println!(
        "cargo:rustc-env=NACRE_LIBFABRIC_DIR={}",
        dir.unwrap_or_default()
    );

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let wrappers = out.join("fabric_static_wrappers");
    let bindings = generate(&lib, &wrappers);
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs to OUT_DIR");

    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .include(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .warnings(false);
    for path in &lib.include_paths {
        build.include(path);
    }
    build.compile("nacre_fabric_static_wrappers");
}

/// Runs bindgen; turns its "libclang not found" panic into one clear line.
fn generate(lib: &pkg_config::Library, wrappers: &std::path::Path) -> bindgen::Bindings {
    let clang_args: Vec<String> = lib
        .include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();
    let builder = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(clang_args)
        .allowlist_function("fi_.*")
        .allowlist_type("fi_.*|fid.*")
        .allowlist_var("FI_.*")
        .blocklist_function(EXPORTED)
        .wrap_static_fns(true)
        .wrap_static_fns_path(wrappers)
        .parse_callbacks(Box::new(IntTypes))
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false);

    // bindgen panics (rather than returning an error) when libclang cannot be loaded.
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(panic::AssertUnwindSafe(|| builder.generate()));
    panic::set_hook(default_hook);
    match result {
        Ok(Ok(bindings)) => bindings,
        Ok(Err(e)) => fail(&format!(
            "bindgen could not parse the libfabric headers: {e}; is `libclang-dev` installed \
             (apt-get install libclang-dev)?"
        )),
        Err(panic) => fail(&format!(
            "bindgen could not load libclang: install the Debian/Ubuntu package `libclang-dev` \
             (apt-get install libclang-dev) [{}]",
            first_line(&panic_text(&panic))
        )),
    }
}

/// libfabric's macros mix `1U << n`, `1ULL << n` and plain numbers; give each family one type.
#[derive(Debug)]
struct IntTypes;

impl bindgen::callbacks::ParseCallbacks for IntTypes {
    fn int_macro(&self, name: &str, value: i64) -> Option<bindgen::callbacks::IntKind> {
        use bindgen::callbacks::IntKind;
        if name.starts_with("FI_E") && (0..1024).contains(&value) {
            return Some(IntKind::I32); // errno values, compared against negative returns
        }
        if name.ends_with("_VERSION") {
            return Some(IntKind::U32);
        }
        name.starts_with("FI_").then_some(IntKind::U64) // capability and flag bits are u64
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "unknown panic".to_string()
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1);
}
