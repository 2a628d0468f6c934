//! libfabric's exported functions, looked up the first time a process uses them.
//!
//! Debian's libfabric pulls in libpsm_infinipath, libpsm2, libibverbs, librdmacm and
//! libefa, and their constructors take about 0.2 s before `main` (libinfinipath
//! calibrates a clock by sleeping). Linked, every nacre process paid that, and so did
//! every program run under the interception library, even one that never touches a
//! nacre path. Here the library is opened (`dlopen`, local scope, so its symbols never
//! mix with an application's own libfabric) by whoever first calls [`load`] or one of
//! the functions below: the soname first (the loader's search path, LD_LIBRARY_PATH
//! included), then the directory pkg-config named at build time.
//!
//! Everything else of libfabric's API is `static inline` and goes through the ops tables
//! of the objects these functions return, so it needs no symbol of the library.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use crate::{fi_fabric_attr, fi_info, fid_fabric, NACRE_FI_VERSION};

/// The soname nacre loads.
pub const SONAME: &str = "libfabric.so.1";

/// The functions nacre calls, resolved from one loaded library that stays loaded.
struct Api {
    getinfo: unsafe extern "C" fn(
        u32,
        *const c_char,
        *const c_char,
        u64,
        *const fi_info,
        *mut *mut fi_info,
    ) -> c_int,
    freeinfo: unsafe extern "C" fn(*mut fi_info),
    dupinfo: unsafe extern "C" fn(*const fi_info) -> *mut fi_info,
    fabric: unsafe extern "C" fn(*mut fi_fabric_attr, *mut *mut fid_fabric, *mut c_void) -> c_int,
    strerror: unsafe extern "C" fn(c_int) -> *const c_char,
    version: unsafe extern "C" fn() -> u32,
    /// Where it was found, for messages.
    path: String,
    /// Keeps the pointers above valid: never unloaded.
    _library: Library,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// Loads libfabric (once per process) and checks its version; the error says what was
/// tried and why it failed.
pub fn load() -> Result<(), &'static str> {
    api().map(|_| ())
}

/// Where the loaded libfabric was found (None before [`load`] or if it failed).
pub fn loaded_from() -> Option<&'static str> {
    API.get()?.as_ref().ok().map(|api| api.path.as_str())
}

fn api() -> Result<&'static Api, &'static str> {
    API.get_or_init(open).as_ref().map_err(String::as_str)
}

/// The API, for a call that can only come after a successful [`load`] (it has an object
/// of the library in hand) or that has no way to report an error.
fn loaded() -> &'static Api {
    api().unwrap_or_else(|e| panic!("{e}"))
}

fn candidates() -> Vec<String> {
    let mut paths = vec![SONAME.to_string()];
    let dir = env!("NACRE_LIBFABRIC_DIR");
    if !dir.is_empty() {
        paths.push(format!("{dir}/{SONAME}"));
    }
    paths
}

fn open() -> Result<Api, String> {
    let mut tried = Vec::new();
    for path in candidates() {
        // SAFETY: loading libfabric runs its constructors and its dependencies', which
        // only initialise their own state.
        match unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) } {
            Ok(library) => return resolve(library, path),
            Err(e) => tried.push(e.to_string()),
        }
    }
    Err(format!(
        "libfabric could not be loaded ({}): install the Debian/Ubuntu package `libfabric1` \
         (apt-get install libfabric1), or name its directory in LD_LIBRARY_PATH",
        tried.join("; ")
    ))
}

fn resolve(library: Library, path: String) -> Result<Api, String> {
    // SAFETY: each symbol is looked up under its C name and given the signature of its
    // declaration in libfabric's headers (the ones bindgen read for the types).
    let api = unsafe {
        Api {
            getinfo: *symbol(&library, &path, c"fi_getinfo")?,
            freeinfo: *symbol(&library, &path, c"fi_freeinfo")?,
            dupinfo: *symbol(&library, &path, c"fi_dupinfo")?,
            fabric: *symbol(&library, &path, c"fi_fabric")?,
            strerror: *symbol(&library, &path, c"fi_strerror")?,
            version: *symbol(&library, &path, c"fi_version")?,
            path,
            _library: library,
        }
    };
    // SAFETY: fi_version takes no arguments and returns a constant.
    let version = unsafe { (api.version)() };
    if version < NACRE_FI_VERSION {
        return Err(format!(
            "libfabric {}.{} ({}) is older than the 1.17 nacre needs",
            version >> 16,
            version & 0xffff,
            api.path
        ));
    }
    Ok(api)
}

/// # Safety
/// `T` is the function pointer type of `name`'s C declaration.
unsafe fn symbol<'l, T>(
    library: &'l Library,
    path: &str,
    name: &CStr,
) -> Result<libloading::os::unix::Symbol<T>, String> {
    // SAFETY: the caller's promise about T.
    unsafe { library.get(name.to_bytes_with_nul()) }
        .map_err(|e| format!("{path} lacks {}: {e}", name.to_string_lossy()))
}

/// `fi_getinfo`.
///
/// # Safety
/// As for `fi_getinfo`.
pub unsafe fn fi_getinfo(
    version: u32,
    node: *const c_char,
    service: *const c_char,
    flags: u64,
    hints: *const fi_info,
    info: *mut *mut fi_info,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { (loaded().getinfo)(version, node, service, flags, hints, info) }
}

/// `fi_freeinfo`.
///
/// # Safety
/// As for `fi_freeinfo`.
pub unsafe fn fi_freeinfo(info: *mut fi_info) {
    // SAFETY: the caller's promise.
    unsafe { (loaded().freeinfo)(info) }
}

/// `fi_dupinfo`.
///
/// # Safety
/// As for `fi_dupinfo`.
pub unsafe fn fi_dupinfo(info: *const fi_info) -> *mut fi_info {
    // SAFETY: the caller's promise.
    unsafe { (loaded().dupinfo)(info) }
}

/// `fi_allocinfo`: libfabric's inline `fi_dupinfo(NULL)`.
///
/// # Safety
/// As for `fi_allocinfo`: the result is freed with [`fi_freeinfo`].
pub unsafe fn fi_allocinfo() -> *mut fi_info {
    // SAFETY: fi_dupinfo(NULL) allocates a zeroed fi_info with its attributes.
    unsafe { fi_dupinfo(std::ptr::null()) }
}

/// `fi_fabric`.
///
/// # Safety
/// As for `fi_fabric`.
pub unsafe fn fi_fabric(
    attr: *mut fi_fabric_attr,
    fabric: *mut *mut fid_fabric,
    context: *mut c_void,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { (loaded().fabric)(attr, fabric, context) }
}

/// `fi_strerror`; a fixed text when libfabric could not be loaded, so that formatting
/// an error never panics.
///
/// # Safety
/// As for `fi_strerror` (safe for any value).
pub unsafe fn fi_strerror(errnum: c_int) -> *const c_char {
    match api() {
        // SAFETY: fi_strerror returns a static string for any value.
        Ok(api) => unsafe { (api.strerror)(errnum) },
        Err(_) => c"libfabric is not loaded".as_ptr(),
    }
}

/// `fi_version`: the loaded library's version (loading it if needed).
///
/// # Safety
/// None beyond the call; unsafe as the rest of the bindings are. Panics when libfabric
/// cannot be loaded.
pub unsafe fn fi_version() -> u32 {
    // SAFETY: fi_version takes no arguments.
    unsafe { (loaded().version)() }
}
