//! Promises settled from the core's runtime.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use napi::bindgen_prelude::{Object, ToNapiValue};
use napi::{Env, JsDeferred};

type Resolver<T> = Box<dyn FnOnce(Env) -> napi::Result<T> + Send>;

/// A deferred that is always settled: dropping it unsettled rejects it, so
/// no promise (and no reference on the event loop) is ever left behind.
struct Settle<T: ToNapiValue + 'static> {
    deferred: Option<JsDeferred<T, Resolver<T>>>,
}

impl<T: ToNapiValue + Send + 'static> Settle<T> {
    fn settle(mut self, out: napi::Result<T>) {
        if let Some(deferred) = self.deferred.take() {
            match out {
                Ok(value) => deferred.resolve(Box::new(move |_env| Ok(value))),
                Err(e) => deferred.reject(e),
            }
        }
    }
}

impl<T: ToNapiValue + 'static> Drop for Settle<T> {
    fn drop(&mut self) {
        if let Some(deferred) = self.deferred.take() {
            deferred.reject(crate::coded(
                "EXO_STOPPED",
                "the operation was abandoned (the I/O runtime stopped)",
            ));
        }
    }
}

/// A promise for what `fut` yields, `fut` running on the core's runtime. A
/// panic in `fut` rejects the promise.
pub(crate) fn promise<'env, T, F>(env: &'env Env, fut: F) -> napi::Result<Object<'env>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = napi::Result<T>> + Send + 'static,
{
    let runtime = crate::runtime()?;
    let (deferred, promise) = env.create_deferred::<T, Resolver<T>>()?;
    let settle = Settle {
        deferred: Some(deferred),
    };
    runtime.spawn(async move {
        let out = match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(out) => out,
            Err(panic) => Err(crate::coded(
                "EXO_USAGE",
                &format!("internal error: {}", panic_text(&*panic)),
            )),
        };
        settle.settle(out);
    });
    Ok(promise)
}

use exoservice::error::panic_text;
