//! One bed per test binary, one test per case: a libtest-compatible harness (`libtest-mimic`;
//! `harness = false` in Cargo.toml) that starts the stack once, on the first case selected, runs
//! each case as its own test (`cargo test --test ownership -- forged` runs one, `--list` starts
//! nothing), reports each failure on its own, and tears the stack down after the last case.
//! Cases run one at a time by default (they share pools and metrics), in the order they were
//! added, so a last case may check what all the others left; each makes its own temporary
//! namespace.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use libtest_mimic::{Arguments, Failed, Trial};

/// Adds each case function to `suite` as a test of the same name:
/// `cases!(Suite::new(start), first_case, second_case).run()`.
#[macro_export]
macro_rules! cases {
    ($suite:expr, $($case:ident),+ $(,)?) => {
        $suite$(.case(stringify!($case), |s| Box::pin($case(s))))+
    };
}

pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
type Setup<S> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<S>> + Send>> + Send + Sync>;
type Case<S> = Box<dyn Fn(&S) -> CaseFuture<'_> + Send + Sync>;

/// The cases of one test binary over one shared stack `S`.
pub struct Suite<S> {
    setup: Setup<S>,
    cases: Vec<(&'static str, Case<S>)>,
}

struct Shared<S> {
    rt: tokio::runtime::Runtime,
    setup: Setup<S>,
    /// Started on first use; a setup that failed fails every case with its error.
    stack: Mutex<Option<Result<Arc<S>, String>>>,
}

impl<S: Send + Sync + 'static> Suite<S> {
    pub fn new<F, Fut>(setup: F) -> Suite<S>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
    {
        Suite {
            setup: Box::new(move || Box::pin(setup())),
            cases: Vec::new(),
        }
    }

    /// Adds the case `name` (a test name: snake_case, unique in the binary).
    pub fn case<F>(mut self, name: &'static str, case: F) -> Self
    where
        F: Fn(&S) -> CaseFuture<'_> + Send + Sync + 'static,
    {
        self.cases.push((name, Box::new(case)));
        self
    }

    /// Runs the selected cases and exits with libtest's status.
    pub fn run(self) -> ! {
        let mut args = Arguments::from_args();
        // Cases share the stack's pools and metrics: one at a time unless asked otherwise.
        args.test_threads.get_or_insert(1);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let shared = Arc::new(Shared {
            rt,
            setup: self.setup,
            stack: Mutex::new(None),
        });
        let trials = self
            .cases
            .into_iter()
            .map(|(name, case)| {
                let shared = shared.clone();
                let case: Arc<Case<S>> = Arc::new(case);
                Trial::test(name, move || {
                    let stack = shared.stack()?;
                    shared
                        .rt
                        .block_on(case(&stack))
                        .map_err(|e| Failed::from(format!("{e:#}")))
                })
            })
            .collect();
        let conclusion = libtest_mimic::run(&args, trials);
        // Tear the stack down inside the runtime its processes and clients belong to.
        let Shared { rt, stack, .. } = match Arc::try_unwrap(shared) {
            Ok(s) => s,
            Err(_) => panic!("a case still holds the stack"),
        };
        let stack = stack.into_inner().unwrap_or_else(|p| p.into_inner());
        rt.block_on(async move { drop(stack) });
        drop(rt);
        conclusion.exit()
    }
}

impl<S: Send + Sync + 'static> Shared<S> {
    fn stack(&self) -> Result<Arc<S>, Failed> {
        let mut slot = self.stack.lock().unwrap_or_else(|p| p.into_inner());
        let started = slot.get_or_insert_with(|| {
            // A setup that panics fails every case once, like one that returns an error,
            // instead of being started again by each.
            let setup = std::panic::AssertUnwindSafe((self.setup)());
            match self.rt.block_on(futures::FutureExt::catch_unwind(setup)) {
                Ok(r) => r.map(Arc::new).map_err(|e| format!("{e:#}")),
                Err(panic) => Err(panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .map_or("setup panicked".into(), |m| format!("setup panicked: {m}"))),
            }
        });
        match started {
            Ok(s) => Ok(s.clone()),
            Err(e) => Err(format!("the stack did not start: {e}").into()),
        }
    }
}
