//! Policy, at request time: evaluation on a per-thread engine. Each tokio worker thread keeps one engine for the
//! bundle in force, made the first time the thread evaluates that bundle (keyed by its generation) and reused
//! afterwards: no compile and no clone per request. The engine is the bundle's bytecode VM when it has one (see
//! `bundle.rs`), else a clone of its warmed interpreter. Both reset their evaluation state (rule caches, the
//! execution timer) at the start of every evaluation; an engine whose evaluation failed is dropped all the same,
//! and the next request on that thread starts from a fresh one.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{decision_from_value, Bundle, Decision, EvalError};

/// The engine a thread keeps, and which bundle it came from.
struct Local {
    generation: u64,
    engine: Engine,
}

enum Engine {
    Vm(Box<regorus::rvm::RegoVM>),
    Interpreter(Box<regorus::Engine>),
}

impl Engine {
    fn for_bundle(bundle: &Bundle) -> Engine {
        match bundle.new_vm() {
            Some(vm) => Engine::Vm(Box::new(vm)),
            None => Engine::Interpreter(Box::new(bundle.engine().clone())),
        }
    }

    fn evaluate(&mut self, entrypoint: &str, input: regorus::Value) -> Result<Decision, EvalError> {
        match self {
            Engine::Vm(vm) => evaluate_vm(vm, input),
            Engine::Interpreter(engine) => evaluate_on(engine, entrypoint, input),
        }
    }
}

thread_local! {
    // One bundle at a time: after a reload, the first evaluation of the new bundle replaces (and drops) the old
    // engine. A thread that evaluates nothing after a reload keeps the old engine's memory until it does.
    static ENGINE: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Evaluates a bundle's entrypoint for one input document on this thread's engine for that bundle. Any error,
/// panic, undefined or malformed result is an `Err` (the caller denies).
pub fn evaluate(bundle: &Bundle, input: regorus::Value) -> Result<Decision, EvalError> {
    let mut input = Some(input);
    let cached = ENGINE.try_with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        Some(evaluate_cached(&mut slot, bundle, input.take()?))
    });
    if let Ok(Some(result)) = cached {
        return result;
    }
    // The thread is shutting down (its thread-locals are gone) or the engine is in use further up this stack.
    match input {
        Some(input) => Engine::for_bundle(bundle).evaluate(bundle.entrypoint(), input),
        None => Err(EvalError::Engine("the input was consumed by a failed evaluation".into())),
    }
}

fn evaluate_cached(slot: &mut Option<Local>, bundle: &Bundle, input: regorus::Value) -> Result<Decision, EvalError> {
    let mut local = match slot.take() {
        Some(local) if local.generation == bundle.generation() => local,
        _ => Local { generation: bundle.generation(), engine: Engine::for_bundle(bundle) },
    };
    let result = local.engine.evaluate(bundle.entrypoint(), input);
    if result.is_ok() {
        *slot = Some(local);
    }
    result
}

/// Evaluates `entrypoint` on `engine` for one input, catching panics, and reads the decision document.
pub(crate) fn evaluate_on(
    engine: &mut regorus::Engine,
    entrypoint: &str,
    input: regorus::Value,
) -> Result<Decision, EvalError> {
    engine.set_input(input);
    let result = catch_unwind(AssertUnwindSafe(|| engine.eval_rule(entrypoint.to_string())))
        .map_err(|_| EvalError::Panicked)?
        .map_err(|e| EvalError::Engine(e.to_string()))?;
    decision_from_value(result)
}

/// Runs the bytecode for one input, catching panics, and reads the decision document.
fn evaluate_vm(vm: &mut regorus::rvm::RegoVM, input: regorus::Value) -> Result<Decision, EvalError> {
    vm.set_input(input);
    let result = catch_unwind(AssertUnwindSafe(|| vm.execute()))
        .map_err(|_| EvalError::Panicked)?
        .map_err(|e| EvalError::Engine(e.to_string()))?;
    decision_from_value(result)
}
