//! Per-phase CPU accounting for benchmarks (cargo feature `phase-timing`, off by default).
//!
//! With the feature, the proxy's hooks measure the thread CPU time
//! (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: user + system time of the calling thread, so a
//! preempted thread is not charged for the time it did not run) of their synchronous phases
//! and of a few awaited steps (each poll measured on the thread that runs it), and /metrics
//! shows the totals as `dcr_gateway_phase_cpu_seconds_total{phase}` and
//! `dcr_gateway_phase_calls_total{phase}`. `bench/run.sh` divides them by the requests served
//! to print where each microsecond goes. Without the feature every function here is an
//! inlined no-op: [`span`] returns a zero-sized value without `Drop`, [`timed`] returns the
//! future it was given, [`register`] does nothing.
//!
//! Times are exclusive: a measurement that runs inside another one (validation inside the
//! body-read step, say) is subtracted from the outer one, so the phases add up to the
//! gateway's own CPU time and never count a nanosecond twice. What no phase covers —
//! Pingora's parsing and I/O, the upstream connection, the kernel's side of the sockets, the
//! runtime — is the process's CPU time minus their sum.
//!
//! A measurement costs two clock reads (a system call each: the thread clocks have no vDSO
//! fast path); `dcr_gateway_phase_timer_overhead_seconds` is the cost of one read measured at
//! registration, so a report can say how much of the phase-timing build's extra CPU is the
//! timers themselves.

use std::sync::atomic::{AtomicU64, Ordering};

/// The phases measured, in the order a request meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// request_filter: snapshot, request view (`core::target`), signals (client IP, GeoIP,
    /// UA, JA3/JA4), request id, route classification, host checks.
    RequestView,
    /// request_filter: the ACL evaluation and its match counters.
    Acl,
    /// request_filter: the rest of it (discovery flags, answer rewriter, usage observation).
    RequestFilter,
    /// The `dcr` phase outside the steps below: head admission (method, switch, token, pin),
    /// body plan, the refusals it writes, token lease, client registry hand-off.
    DcrAdmission,
    /// The rate-limit check (local backend: synchronous; Redis: the polls of the round trip).
    RateLimit,
    /// Reading the registration body (the polls of the bounded read).
    BodyRead,
    /// `gate::admit_body`: validation, normalization and re-serialization of the registration.
    Validation,
    /// Answers the gateway writes itself (403, 429, 400, ...): building and writing them.
    Refusal,
    /// upstream_request_filter: the request the IdP receives (`forward::rewrite`).
    UpstreamRequest,
    /// upstream_response_filter + response_filter + response_body_filter.
    ResponseHooks,
    /// logging: metrics and the audit line.
    Logging,
}

/// Every phase, in [`Phase::index`] order.
pub const PHASES: [Phase; 11] = [
    Phase::RequestView,
    Phase::Acl,
    Phase::RequestFilter,
    Phase::DcrAdmission,
    Phase::RateLimit,
    Phase::BodyRead,
    Phase::Validation,
    Phase::Refusal,
    Phase::UpstreamRequest,
    Phase::ResponseHooks,
    Phase::Logging,
];
const N: usize = PHASES.len();

impl Phase {
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::RequestView => "request_view",
            Phase::Acl => "acl",
            Phase::RequestFilter => "request_filter",
            Phase::DcrAdmission => "dcr_admission",
            Phase::RateLimit => "rate_limit",
            Phase::BodyRead => "body_read",
            Phase::Validation => "validation",
            Phase::Refusal => "refusal",
            Phase::UpstreamRequest => "upstream_request_filter",
            Phase::ResponseHooks => "response_hooks",
            Phase::Logging => "logging",
        }
    }
}

/// CPU nanoseconds and calls per phase. Each thread writes only its own accumulator (no
/// contention between workers); a scrape sums them.
#[derive(Default)]
pub struct Accumulator {
    nanos: [AtomicU64; N],
    calls: [AtomicU64; N],
}

/// A copy of accumulated totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub nanos: [u64; N],
    pub calls: [u64; N],
}

impl Accumulator {
    /// One finished measurement of `nanos` exclusive CPU time.
    pub fn add(&self, phase: Phase, nanos: u64) {
        let i = phase.index();
        self.nanos[i].fetch_add(nanos, Ordering::Relaxed);
        self.calls[i].fetch_add(1, Ordering::Relaxed);
    }

    /// More CPU time for a call of `phase` already counted (a phase measured in two pieces).
    pub fn add_time(&self, phase: Phase, nanos: u64) {
        self.nanos[phase.index()].fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for i in 0..N {
            t.nanos[i] = self.nanos[i].load(Ordering::Relaxed);
            t.calls[i] = self.calls[i].load(Ordering::Relaxed);
        }
        t
    }
}

impl Totals {
    pub fn merge(&mut self, other: &Totals) {
        for i in 0..N {
            self.nanos[i] += other.nanos[i];
            self.calls[i] += other.calls[i];
        }
    }

    pub fn seconds(&self, phase: Phase) -> f64 {
        self.nanos[phase.index()] as f64 / 1e9
    }

    pub fn calls(&self, phase: Phase) -> u64 {
        self.calls[phase.index()]
    }
}

/// Where a measurement started: the thread's CPU clock, and the CPU time of the measurements
/// already closed on this thread (to subtract those that close inside this one).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    cpu: u64,
    nested: u64,
}

impl Mark {
    pub fn new(cpu: u64, nested: u64) -> Mark {
        Mark { cpu, nested }
    }
}

/// Close a measurement that started at `mark`, at clock `now`, when the closed measurements
/// of this thread total `nested_now`: its exclusive time (its inclusive time less that of the
/// measurements closed inside it), and the new total of closed measurements (its inclusive
/// time added to the total at its start, so that an enclosing measurement subtracts it once).
/// A clock that went backwards (it does not, per thread) or an inner time larger than the
/// outer one gives 0, never wraps.
pub fn exclusive(mark: Mark, now: u64, nested_now: u64) -> (u64, u64) {
    let inclusive = now.saturating_sub(mark.cpu);
    let inner = nested_now.saturating_sub(mark.nested);
    (inclusive.saturating_sub(inner), mark.nested.saturating_add(inclusive))
}

/// [`exclusive`], recorded in `acc` as one call of `phase`; returns the new nested total.
pub fn close(acc: &Accumulator, phase: Phase, mark: Mark, now: u64, nested_now: u64) -> u64 {
    let (own, nested) = exclusive(mark, now, nested_now);
    acc.add(phase, own);
    nested
}

/// [`close`] for the second piece of a call already counted: time only.
pub fn close_more(acc: &Accumulator, phase: Phase, mark: Mark, now: u64, nested_now: u64) -> u64 {
    let (own, nested) = exclusive(mark, now, nested_now);
    acc.add_time(phase, own);
    nested
}

#[cfg(feature = "phase-timing")]
mod imp {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, Once};
    use std::task::{Context, Poll};

    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use prometheus::{CounterVec, Gauge, IntCounterVec, Opts};

    use super::{close, close_more, exclusive, Accumulator, Mark, Phase, Totals, PHASES};
    use crate::telemetry::Metrics;

    /// Every thread's accumulator (threads that ended keep theirs: the totals only grow).
    static SLOTS: Mutex<Vec<Arc<Accumulator>>> = Mutex::new(Vec::new());

    thread_local! {
        static LOCAL: Arc<Accumulator> = {
            let a = Arc::new(Accumulator::default());
            SLOTS.lock().unwrap_or_else(|e| e.into_inner()).push(a.clone());
            a
        };
        /// CPU time of the measurements closed on this thread so far.
        static NESTED: Cell<u64> = const { Cell::new(0) };
    }

    /// This thread's CPU time in nanoseconds (user + system).
    pub fn thread_cpu_nanos() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given; CLOCK_THREAD_CPUTIME_ID is
        // supported by every Linux since 2.6.12.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
    }

    fn mark() -> Mark {
        Mark::new(thread_cpu_nanos(), NESTED.with(Cell::get))
    }

    fn finish(phase: Phase, m: Mark, counted: bool) {
        let now = thread_cpu_nanos();
        let _ = LOCAL.try_with(|acc| {
            let closing = if counted { close } else { close_more };
            NESTED.with(|n| n.set(closing(acc, phase, m, now, n.get())));
        });
    }

    /// A synchronous measurement, recorded when dropped. Must not be held across an `.await`
    /// that may suspend (use [`timed`] there).
    pub struct Span {
        phase: Phase,
        mark: Mark,
        /// Counted as a call (a [`span_more`] piece is not).
        counted: bool,
    }

    impl Drop for Span {
        fn drop(&mut self) {
            finish(self.phase, self.mark, self.counted);
        }
    }

    impl Span {
        /// End the measurement here (as dropping it does).
        #[inline]
        pub fn stop(self) {}
    }

    #[inline]
    pub fn span(phase: Phase) -> Span {
        Span { phase, mark: mark(), counted: true }
    }

    /// The second piece of a phase whose call [`span`] counted already (time only).
    #[inline]
    pub fn span_more(phase: Phase) -> Span {
        Span { phase, mark: mark(), counted: false }
    }

    /// A future whose polls are measured (each on the thread that runs it, so a task that moves
    /// between workers or waits is charged only for the CPU it used), counted once when it
    /// completes.
    pub struct Timed<F> {
        phase: Phase,
        inner: F,
        nanos: u64,
    }

    impl<F: Future> Future for Timed<F> {
        type Output = F::Output;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            // SAFETY: `inner` is structurally pinned: it is never moved out of `self`, and
            // `Timed` has no `Drop` impl; it is `Unpin` only when `F` is.
            let this = unsafe { self.get_unchecked_mut() };
            let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
            let m = mark();
            let r = inner.poll(cx);
            let now = thread_cpu_nanos();
            NESTED.with(|n| {
                let (own, nested) = exclusive(m, now, n.get());
                this.nanos += own;
                n.set(nested);
            });
            if r.is_ready() {
                let _ = LOCAL.try_with(|acc| acc.add(this.phase, this.nanos));
            }
            r
        }
    }

    #[inline]
    pub fn timed<F: Future>(phase: Phase, f: F) -> Timed<F> {
        Timed { phase, inner: f, nanos: 0 }
    }

    /// This thread's totals.
    pub fn thread_totals() -> Totals {
        LOCAL.try_with(|a| a.totals()).unwrap_or_default()
    }

    /// The totals of every thread.
    pub fn totals() -> Totals {
        let mut t = Totals::default();
        for a in SLOTS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            t.merge(&a.totals());
        }
        t
    }

    /// Adds the phase series to `metrics` (once per process; the first caller's registry).
    pub fn register(metrics: &Metrics) {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| metrics.register_collector(Box::new(PhaseCollector::new())));
    }

    /// The mean cost of one clock read, measured over 2,000 reads.
    fn timer_overhead_seconds() -> f64 {
        let t0 = std::time::Instant::now();
        let mut sink = 0u64;
        for _ in 0..2000 {
            sink = sink.wrapping_add(thread_cpu_nanos());
        }
        std::hint::black_box(sink);
        t0.elapsed().as_secs_f64() / 2000.0
    }

    struct PhaseCollector {
        seconds: CounterVec,
        calls: IntCounterVec,
        overhead: Gauge,
        lock: Mutex<()>,
    }

    impl PhaseCollector {
        fn new() -> PhaseCollector {
            let seconds = CounterVec::new(
                Opts::new(
                    "dcr_gateway_phase_cpu_seconds_total",
                    "Thread CPU time in each phase of request handling, exclusive of nested phases (debug build feature phase-timing).",
                ),
                &["phase"],
            )
            .expect("static metric definition");
            let calls = IntCounterVec::new(
                Opts::new(
                    "dcr_gateway_phase_calls_total",
                    "Measurements behind dcr_gateway_phase_cpu_seconds_total, by phase (debug build feature phase-timing).",
                ),
                &["phase"],
            )
            .expect("static metric definition");
            let overhead = Gauge::new(
                "dcr_gateway_phase_timer_overhead_seconds",
                "Cost of one thread CPU clock read (two per measurement), measured at start (debug build feature phase-timing).",
            )
            .expect("static metric definition");
            overhead.set(timer_overhead_seconds());
            for p in PHASES {
                seconds.with_label_values(&[p.as_str()]);
                calls.with_label_values(&[p.as_str()]);
            }
            PhaseCollector { seconds, calls, overhead, lock: Mutex::new(()) }
        }
    }

    impl Collector for PhaseCollector {
        fn desc(&self) -> Vec<&Desc> {
            let mut d = self.seconds.desc();
            d.extend(self.calls.desc());
            d.extend(self.overhead.desc());
            d
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let t = totals();
            for p in PHASES {
                let s = self.seconds.with_label_values(&[p.as_str()]);
                s.reset();
                s.inc_by(t.seconds(p));
                let c = self.calls.with_label_values(&[p.as_str()]);
                c.reset();
                c.inc_by(t.calls(p));
            }
            let mut out = self.seconds.collect();
            out.extend(self.calls.collect());
            out.extend(self.overhead.collect());
            out
        }
    }
}

#[cfg(not(feature = "phase-timing"))]
mod imp {
    use super::{Phase, Totals};
    use crate::telemetry::Metrics;

    /// Nothing: the feature is off.
    pub struct Span;

    impl Span {
        #[inline(always)]
        pub fn stop(self) {}
    }

    #[inline(always)]
    pub fn span(_: Phase) -> Span {
        Span
    }

    #[inline(always)]
    pub fn span_more(_: Phase) -> Span {
        Span
    }

    #[inline(always)]
    pub fn timed<F>(_: Phase, f: F) -> F {
        f
    }

    #[inline(always)]
    pub fn register(_: &Metrics) {}

    pub fn totals() -> Totals {
        Totals::default()
    }

    pub fn thread_totals() -> Totals {
        Totals::default()
    }
}

pub use imp::{register, span, span_more, thread_totals, timed, totals, Span};

/// True when this binary was built with the `phase-timing` feature.
pub const ENABLED: bool = cfg!(feature = "phase-timing");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_in_index_order() {
        for (i, p) in PHASES.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
        let mut names: Vec<_> = PHASES.iter().map(|p| p.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PHASES.len());
    }

    #[test]
    fn a_measurement_records_its_time_and_one_call() {
        let acc = Accumulator::default();
        let nested = close(&acc, Phase::Acl, Mark::new(1_000, 0), 1_250, 0);
        assert_eq!(nested, 250);
        let t = acc.totals();
        assert_eq!(t.nanos[Phase::Acl.index()], 250);
        assert_eq!(t.calls(Phase::Acl), 1);
        assert_eq!(t.calls(Phase::Logging), 0);
        close(&acc, Phase::Acl, Mark::new(2_000, nested), 2_100, nested);
        assert_eq!(acc.totals().nanos[Phase::Acl.index()], 350);
        assert_eq!(acc.totals().calls(Phase::Acl), 2);
        assert!((acc.totals().seconds(Phase::Acl) - 350e-9).abs() < 1e-15);
    }

    #[test]
    fn nested_time_is_subtracted_once_from_the_enclosing_measurement() {
        // outer [0, 1000) encloses inner [200, 500), which encloses innermost [300, 350).
        let acc = Accumulator::default();
        let outer = Mark::new(0, 0);
        let inner = Mark::new(200, 0);
        let innermost = Mark::new(300, 0);
        let n = close(&acc, Phase::Validation, innermost, 350, 0);
        assert_eq!(n, 50);
        let n = close(&acc, Phase::BodyRead, inner, 500, n);
        assert_eq!(n, 300, "the inner measurement's inclusive time");
        let n = close(&acc, Phase::DcrAdmission, outer, 1_000, n);
        assert_eq!(n, 1_000);
        let t = acc.totals();
        assert_eq!(t.nanos[Phase::Validation.index()], 50);
        assert_eq!(t.nanos[Phase::BodyRead.index()], 250);
        assert_eq!(t.nanos[Phase::DcrAdmission.index()], 700);
        assert_eq!(t.nanos.iter().sum::<u64>(), 1_000, "the phases add up to the outer time, no double count");
    }

    #[test]
    fn sequential_measurements_do_not_subtract_each_other() {
        let acc = Accumulator::default();
        let mut n = 0;
        n = close(&acc, Phase::RequestView, Mark::new(0, n), 100, n);
        n = close(&acc, Phase::Acl, Mark::new(100, n), 130, n);
        let outer_start = Mark::new(0, 0);
        close(&acc, Phase::RequestFilter, outer_start, 200, n);
        let t = acc.totals();
        assert_eq!(t.nanos[Phase::RequestView.index()], 100);
        assert_eq!(t.nanos[Phase::Acl.index()], 30);
        assert_eq!(t.nanos[Phase::RequestFilter.index()], 70);
    }

    #[test]
    fn a_clock_that_goes_backwards_records_zero() {
        let acc = Accumulator::default();
        let n = close(&acc, Phase::Logging, Mark::new(500, 10), 400, 10);
        assert_eq!(acc.totals().nanos[Phase::Logging.index()], 0);
        assert_eq!(acc.totals().calls(Phase::Logging), 1);
        assert_eq!(n, 10);
        // Inner time larger than the outer time (cannot happen per thread): 0, no wrap.
        close(&acc, Phase::Logging, Mark::new(0, 0), 100, 500);
        assert_eq!(acc.totals().nanos[Phase::Logging.index()], 0);
    }

    #[test]
    fn totals_merge_per_phase() {
        let a = Accumulator::default();
        let b = Accumulator::default();
        a.add(Phase::Acl, 5);
        b.add(Phase::Acl, 7);
        b.add(Phase::Refusal, 11);
        let mut t = a.totals();
        t.merge(&b.totals());
        assert_eq!(t.nanos[Phase::Acl.index()], 12);
        assert_eq!(t.calls(Phase::Acl), 2);
        assert_eq!(t.calls(Phase::Refusal), 1);
    }

    #[test]
    fn accumulators_on_many_threads_lose_nothing() {
        let acc = std::sync::Arc::new(Accumulator::default());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let acc = acc.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        acc.add(Phase::ResponseHooks, 3);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(acc.totals().calls(Phase::ResponseHooks), 40_000);
        assert_eq!(acc.totals().nanos[Phase::ResponseHooks.index()], 120_000);
    }

    #[cfg(not(feature = "phase-timing"))]
    #[test]
    fn without_the_feature_nothing_is_measured() {
        const { assert!(!ENABLED) };
        assert_eq!(std::mem::size_of::<Span>(), 0);
        {
            let _s = span(Phase::Acl);
        }
        assert_eq!(totals(), Totals::default());
    }

    /// Spin until the kernel's own per-thread accounting (getrusage, independent of the clock
    /// under test) says `ms` of CPU went by: wall time would not do on a loaded machine, where
    /// the thread runs only part of the time.
    #[cfg(feature = "phase-timing")]
    fn spin(ms: u64) {
        fn rusage_micros() -> u64 {
            // SAFETY: getrusage fills the struct it is given; all-zero is a valid rusage.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
            let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
            us(ru.ru_utime) + us(ru.ru_stime)
        }
        let t = rusage_micros();
        let mut x = 0u64;
        while rusage_micros() - t < ms * 1000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[cfg(feature = "phase-timing")]
    #[test]
    fn the_thread_clock_measures_this_threads_work_and_spans_record_it() {
        const { assert!(ENABLED) };
        let before = thread_totals();
        {
            let _outer = span(Phase::UpstreamRequest);
            spin(20);
            {
                let _inner = span(Phase::Validation);
                spin(20);
            }
        }
        // A sleeping thread uses no CPU.
        {
            let _s = span(Phase::Logging);
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        let after = thread_totals();
        let d = |p: Phase| after.nanos[p.index()] - before.nanos[p.index()];
        // This thread's accumulator: other tests run on other threads.
        assert!(d(Phase::Validation) >= 15_000_000, "{}", d(Phase::Validation));
        assert!(d(Phase::UpstreamRequest) >= 15_000_000, "{}", d(Phase::UpstreamRequest));
        assert!(
            d(Phase::UpstreamRequest) < 35_000_000,
            "the inner span is not counted twice: {}",
            d(Phase::UpstreamRequest)
        );
        assert!(d(Phase::Logging) < 5_000_000, "sleep is not CPU: {}", d(Phase::Logging));
    }

    #[cfg(feature = "phase-timing")]
    #[test]
    fn a_timed_future_is_charged_for_its_polls_only() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let before = thread_totals();
        rt.block_on(timed(Phase::RateLimit, async {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }));
        // Work in two polls, with a span nested in the second: both polls charged, the span
        // subtracted.
        rt.block_on(timed(Phase::BodyRead, async {
            spin(10);
            tokio::task::yield_now().await;
            spin(10);
            let _s = span(Phase::Refusal);
            spin(10);
        }));
        let after = thread_totals();
        let d = |p: Phase| after.nanos[p.index()] - before.nanos[p.index()];
        let calls = |p: Phase| after.calls(p) - before.calls(p);
        assert_eq!(calls(Phase::RateLimit), 1, "counted once, at completion");
        assert!(d(Phase::RateLimit) < 5_000_000, "waiting is not CPU: {}", d(Phase::RateLimit));
        assert_eq!(calls(Phase::BodyRead), 1);
        assert!(d(Phase::BodyRead) >= 15_000_000, "both polls: {}", d(Phase::BodyRead));
        assert!(d(Phase::BodyRead) < 28_000_000, "the nested span is not charged twice: {}", d(Phase::BodyRead));
        assert!(d(Phase::Refusal) >= 7_500_000, "{}", d(Phase::Refusal));
    }
}
