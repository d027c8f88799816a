//! The thread that serves a simulated target on a wire (pty emulators), shared by the
//! STK500v1 and Bus Pirate emulators: a stop flag, the thread, and the target behind a mutex.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::sim::target::SimTarget;

/// A running emulator thread. Dropping it raises the stop flag and joins the thread.
pub struct Serving {
    target: Arc<Mutex<SimTarget>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Serving {
    /// Start thread `name` running `serve(target, stop)`; `serve` must return soon after
    /// `stop` is raised.
    pub fn spawn<F>(name: String, target: SimTarget, serve: F) -> std::io::Result<Serving>
    where
        F: FnOnce(Arc<Mutex<SimTarget>>, Arc<AtomicBool>) + Send + 'static,
    {
        let target = Arc::new(Mutex::new(target));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (target.clone(), stop.clone());
        let thread = std::thread::Builder::new().name(name).spawn(move || serve(t, s))?;
        Ok(Serving { target, stop, thread: Some(thread) })
    }

    /// The simulated target, for inspection between host sessions. Hold the guard briefly:
    /// the emulator thread locks it for every command.
    pub fn target(&self) -> MutexGuard<'_, SimTarget> {
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the thread still serves (false after an `unplug` fault fired).
    pub fn is_serving(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Raise the stop flag and wait for the thread.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.shutdown();
    }
}
