//! Stopping a process on SIGINT/SIGTERM in the presence of libfabric's shm provider.
//!
//! When libfabric loads, its shm provider installs handlers for SIGINT, SIGTERM and
//! a few more (to unlink its shared-memory files on an unclean exit). Each remembers
//! the action that was in place and, on the signal, restores it and re-raises. A
//! handler installed *after* libfabric loads that chains to the previous one (as
//! signal-hook does) therefore ends in the default action: the process dies on the
//! spot, with no chance to release its roles or stop its children. The answer here
//! does not depend on load order: the signals are blocked in every thread and taken
//! synchronously by one thread of their own, so no handler ever runs for them.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

fn stop_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Blocks SIGINT and SIGTERM and returns a flag raised when either arrives; a second
/// one exits the process.
///
/// Call it first thing in `main`'s thread, before any other thread starts: threads
/// inherit the mask, and a thread that does not block the signals could receive
/// them. Children started afterwards inherit the blocked mask through exec as well;
/// a nacre binary undoes that with [`unblock_stop_signals`] (or by calling this).
pub fn stop_on_signals() -> io::Result<Arc<AtomicBool>> {
    let set = stop_set();
    set.thread_block().map_err(io::Error::from)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("stop-signals".into())
        .spawn(move || {
            // The first signal asks for a clean stop; a second one, while that stop
            // hangs, ends the process at once (exit status 128 + signal, as the
            // default action would show). sigwait fails only for an invalid set.
            let mut stopping = false;
            while let Ok(sig) = set.wait() {
                if stopping {
                    eprintln!("{sig:?} again: exiting without a clean stop");
                    std::process::exit(128 + sig as i32);
                }
                flag.store(true, Ordering::Relaxed);
                stopping = true;
            }
        })?;
    Ok(stop)
}

/// Unblocks SIGINT and SIGTERM in the calling thread: for a process whose parent
/// blocked them (a parent using [`stop_on_signals`] passes its mask on through exec)
/// and which wants their default action.
pub fn unblock_stop_signals() -> io::Result<()> {
    stop_set().thread_unblock().map_err(io::Error::from)
}
