//! SIGTERM, SIGINT and SIGHUP as flags the agent reads.
//!
//! `main` installs them before it reads the config or the model, so that no SIGTERM or SIGINT
//! finds the default action (which would end the process without flushing what was captured).
//! The first stops the input; in `run`, a later one ends the wait for the broker early.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The signals received so far.
#[derive(Clone, Debug)]
pub struct Signals {
    stop: Arc<AtomicBool>,
    /// SIGTERM and SIGINT received.
    received: Arc<AtomicUsize>,
    /// SIGHUP received and not yet taken.
    reload: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers; with `reload`, SIGHUP asks for a reload instead of ending the
    /// process.
    pub fn install(reload: bool) -> io::Result<Signals> {
        let signals = Signals::unhandled();
        for signal in [SIGTERM, SIGINT] {
            let (stop, received) = (signals.stop.clone(), signals.received.clone());
            // SAFETY: the handler only stores to and adds to atomics, which is
            // async-signal-safe; it neither allocates nor locks.
            unsafe {
                signal_hook::low_level::register(signal, move || {
                    stop.store(true, Ordering::SeqCst);
                    received.fetch_add(1, Ordering::SeqCst);
                })?;
            }
        }
        if reload {
            signal_hook::flag::register(SIGHUP, signals.reload.clone())?;
        }
        Ok(signals)
    }

    /// Flags no handler sets: for tests and for callers that stop the agent themselves.
    pub fn unhandled() -> Signals {
        Signals {
            stop: Arc::new(AtomicBool::new(false)),
            received: Arc::new(AtomicUsize::new(0)),
            reload: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set by the first SIGTERM or SIGINT; the agent also sets it to stop its capture threads.
    pub fn stop_flag(&self) -> &Arc<AtomicBool> {
        &self.stop
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether a reload was asked for since the last call.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::Relaxed)
    }

    /// An interrupt that fires on the next SIGTERM or SIGINT from now on.
    pub fn next_interrupt(&self) -> Interrupt {
        Interrupt {
            received: self.received.clone(),
            before: self.received.load(Ordering::SeqCst),
        }
    }

    /// An interrupt that has fired once any SIGTERM or SIGINT was received, before or after.
    pub fn any_interrupt(&self) -> Interrupt {
        Interrupt {
            received: self.received.clone(),
            before: 0,
        }
    }
}

/// A SIGTERM or SIGINT after a given moment (see [`Signals::next_interrupt`]).
#[derive(Clone, Debug)]
pub struct Interrupt {
    received: Arc<AtomicUsize>,
    before: usize,
}

impl Interrupt {
    pub fn happened(&self) -> bool {
        self.received.load(Ordering::SeqCst) > self.before
    }

    /// An interrupt that never fires.
    pub fn never() -> Interrupt {
        Interrupt {
            received: Arc::new(AtomicUsize::new(0)),
            before: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_fires_only_on_signals_after_it_was_taken() {
        let signals = Signals::unhandled();
        signals.received.fetch_add(1, Ordering::SeqCst); // the signal that stopped the input
        let interrupt = signals.next_interrupt();
        assert!(!interrupt.happened());
        signals.received.fetch_add(1, Ordering::SeqCst);
        assert!(interrupt.happened());
        assert!(!Interrupt::never().happened());
    }
}
